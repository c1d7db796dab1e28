"""Review (policy §11): write the post-incident review and publish the incident's response metrics.

The review holds the summary, the timeline (table and SVG chart), the response metrics against
their targets, the root cause, what worked and what did not (as the playbook says, plus what the
run shows: deadlines, failed steps, escalations, rejections), and the corrective actions with
owners and due dates (tracked until closed: `irp actions list`, `irp actions close`).

Side effects (not in dry runs): review/report.md, review/report.html, review/timeline.svg and
review/metrics.json archived as evidence; Prefect artifacts: markdown `review-<id>`, table
`metrics-<id>`, and the aggregates over every incident of the store by type and severity as
markdown `incident-metrics` and table `incident-metrics-table`; a timeline entry.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from irp.charts import timeline_svg
from irp.engine.records import RunContext, StageResult
from irp.engine.stages import run_stage
from irp.errors import EvidenceError
from irp.metrics import (
    IncidentMetrics,
    aggregate,
    aggregate_markdown,
    aggregate_rows,
    format_duration,
    measure_cell,
    measure_incident,
    metrics_rows,
)
from irp.models import Incident, Stage, utcnow
from irp.reports import render_review_html
from tasks.registry import ActionArgs, ActionContext, action

log = logging.getLogger(__name__)


class ReportArgs(ActionArgs):
    root_cause: str = Field("To be established in the review meeting.", description="Identified causes (§11).")
    what_worked: str = Field("", description="What went well.")
    what_did_not: str = Field("", description="What went badly or late.")


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def observed(incident: Incident, metrics: IncidentMetrics) -> tuple[list[str], list[str]]:
    """What the record shows went well and what did not: deadlines, steps, escalations, decisions."""
    worked: list[str] = []
    did_not: list[str] = []
    for name, m in metrics.measures.items():
        if m.state == "met":
            worked.append(f"{name} within its target: {format_duration(m.seconds)} "
                          f"(target {format_duration(m.target_seconds)})")
        elif m.state == "missed":
            took = format_duration(m.seconds) if m.seconds is not None else "not reached"
            did_not.append(f"{name} missed its target of {format_duration(m.target_seconds)}: {took}")
    steps = [e for e in incident.timeline if e.kind == "step"]
    done = [e for e in steps if e.message.endswith(("completed", "completed (dry run)"))]
    if done:
        worked.append(f"{len(done)} of {len(steps)} steps completed")
    for e in steps:
        if " failed (" in e.message:
            did_not.append(e.message)
        elif " skipped: " in e.message and "condition is false" not in e.message:
            did_not.append(e.message)
    for e in incident.timeline:
        if e.kind in ("escalation", "stop"):
            did_not.append(e.message)
        elif e.kind == "approval" and " approved by " in e.message:
            worked.append(e.message)
    return worked, did_not


def compose(incident: Incident, args: ReportArgs, evidence: list[Any], *,
            now: datetime | None = None) -> dict[str, Any]:
    """Everything the review shows, for the markdown and the HTML."""
    metrics = measure_incident(incident, now=now)
    worked, did_not = observed(incident, metrics)
    return {
        "incident": incident,
        "metrics": metrics,
        "root_cause": args.root_cause,
        "worked": ([args.what_worked] if args.what_worked else []) + worked,
        "did_not": ([args.what_did_not] if args.what_did_not else []) + did_not,
        "corrective": [a for a in incident.actions if a.stage == Stage.review],
        "measures": [a for a in incident.actions if a.stage != Stage.review],
        "evidence": evidence,
        "generated_at": now or utcnow(),
    }


def report_markdown(incident: Incident, args: ReportArgs, evidence: list[Any], *,
                    now: datetime | None = None) -> str:
    """The review report of an incident as markdown."""
    review = compose(incident, args, evidence, now=now)
    pd = incident.personal_data
    lines = [
        f"# Post-incident review — {incident.id}",
        "",
        f"**{_cell(incident.title)}**",
        "",
        "| | |",
        "|---|---|",
        f"| Type | {incident.type.label} (`{incident.type.value}`) |",
        f"| Severity | {incident.severity.value} — {_cell(incident.severity_reason or incident.severity.description)} |",
        f"| Detected | {incident.detected_at:%Y-%m-%d %H:%M:%S} UTC |",
        f"| Aware | {incident.aware_at:%Y-%m-%d %H:%M:%S} UTC |",
        f"| Clients | {_cell(', '.join(incident.affected_clients) or 'none known')} |",
        f"| Systems | {_cell(', '.join(incident.affected_systems) or 'none known')} |",
        f"| Personal data | {'yes: ' + _cell(', '.join(pd.categories) or 'categories unknown') if pd.involved else 'no'} |",
        f"| Escalated | {'yes' if incident.escalated else 'no'} |",
    ]
    if incident.playbook:
        lines.append(f"| Playbook | {_cell(incident.playbook.name)} v{incident.playbook.version} "
                     f"(sha256 `{incident.playbook.sha256[:12]}…`) |")
    lines += ["", "## Summary", "", incident.summary or "_No summary recorded._", ""]
    lines += ["## Response metrics", "", "| Measure | Duration | Target | Deadline |", "|---|---|---|---|"]
    for name, m in review["metrics"].measures.items():
        lines.append(f"| {name} | {format_duration(m.seconds)} | {format_duration(m.target_seconds)} | {m.state} |")
    lines += ["", "## Root cause", "", args.root_cause, ""]
    for title, items in (("What worked", review["worked"]), ("What did not", review["did_not"])):
        lines += [f"## {title}", ""]
        lines += [f"- {_cell(item)}" for item in items] or ["_Nothing recorded._"]
        lines.append("")
    lines += ["## Corrective actions", ""]
    if review["corrective"]:
        lines += ["| Id | Action | Owner | Due (UTC) | Status |", "|---|---|---|---|---|"]
        for a in review["corrective"]:
            due = f"{a.due_at:%Y-%m-%d %H:%M}" if a.due_at else "—"
            lines.append(f"| {a.id} | {_cell(a.title)} | {_cell(a.owner)} | {due} | {a.status} |")
    else:
        lines.append("_None assigned._")
    lines += ["", "## Response measures", ""]
    if review["measures"]:
        lines += ["| Id | Stage | Measure | Owner | Due (UTC) | Status |", "|---|---|---|---|---|---|"]
        for a in review["measures"]:
            due = f"{a.due_at:%Y-%m-%d %H:%M}" if a.due_at else "—"
            lines.append(f"| {a.id} | {a.stage.value} | {_cell(a.title)} | {_cell(a.owner)} | {due} | {a.status} |")
    else:
        lines.append("_None assigned._")
    lines += ["", "## Stages", "", "| Stage | Status | Started | Ended |", "|---|---|---|---|"]
    for s in incident.stages:
        label = f"{s.stage.value} ({s.phase})" if s.phase else s.stage.value
        lines.append(f"| {label} | {s.status.value} | {s.started_at:%H:%M:%S} | {s.ended_at:%H:%M:%S} |")
    lines += ["", "## Timeline", "", "| Time (UTC) | Kind | Event |", "|---|---|---|"]
    for e in incident.timeline:
        lines.append(f"| {e.at:%Y-%m-%d %H:%M:%S} | {e.kind} | {_cell(e.message)} |")
    lines += ["", "## Evidence", "", "| Item | SHA-256 | Size |", "|---|---|---|"]
    for item in evidence:
        lines.append(f"| {item.name} | `{item.sha256[:16]}…` | {item.size} |")
    return "\n".join(lines) + "\n"


def report_html(incident: Incident, args: ReportArgs, evidence: list[Any], *, now: datetime | None = None) -> str:
    """The review report as a self-contained HTML page with the timeline chart inline."""
    return render_review_html(compose(incident, args, evidence, now=now), timeline_svg(incident))


def _publish_aggregates(ctx: ActionContext, incident: Incident) -> None:
    """Aggregated metrics over every incident of the store (this one as it is now) as Prefect artifacts."""
    from irp.history import load_incidents

    try:
        incidents, _ = load_incidents(ctx.store)
    except EvidenceError as exc:
        log.warning("aggregate metrics not published: %s", exc)
        return
    incidents = [i for i in incidents if i.id != incident.id] + [incident]
    aggregates = aggregate(measure_incident(i) for i in incidents)
    create_markdown_artifact(
        key="incident-metrics", description="Response metrics by type and severity (irp incidents metrics)",
        markdown="# Response metrics by type and severity\n\n" + aggregate_markdown(aggregates))
    create_table_artifact(key="incident-metrics-table", table=aggregate_rows(aggregates),
                          description="MTTA, MTTC, MTTR, MTTN and deadlines met, by type and severity")


@action("review")
def write_report(args: ReportArgs, ctx: ActionContext) -> dict[str, Any]:
    """Write the post-incident review (markdown, HTML with a timeline chart) and publish the metrics."""
    incident = ctx.incident
    now = utcnow()
    evidence = ctx.store.manifest(incident.id)
    markdown = report_markdown(incident, args, evidence, now=now)
    metrics = measure_incident(incident, now=now)
    chart = timeline_svg(incident)
    item = ctx.archive("review/report.md", markdown.encode(), content_type="text/markdown; charset=utf-8",
                       source_system="irp")
    ctx.archive("review/timeline.svg", chart.encode(), content_type="image/svg+xml", source_system="irp")
    html = render_review_html(compose(incident, args, evidence, now=now), chart)
    page = ctx.archive("review/report.html", html.encode(), content_type="text/html; charset=utf-8",
                       source_system="irp")
    ctx.archive_json("review/metrics.json", metrics.model_dump(mode="json"), source_system="irp")
    key = f"review-{incident.id.lower()}"
    if not ctx.dry_run:
        create_markdown_artifact(key=key, markdown=markdown, description=f"Post-incident review of {incident.id}")
        create_table_artifact(key=f"metrics-{incident.id.lower()}", table=metrics_rows(metrics),
                              description=f"Response metrics of {incident.id} against the {incident.severity.value} "
                                          "targets")
        _publish_aggregates(ctx, incident)
    ctx.record("post-incident review report written", kind="review", evidence=item.name, html=page.name)
    return {
        "evidence": item.name,
        "html": page.name,
        "artifact_key": None if ctx.dry_run else key,
        "metrics": {name: measure_cell(m) for name, m in metrics.measures.items()},
    }


@task(name="review", cache_policy=NO_CACHE)
def review(incident: Incident, run: RunContext) -> StageResult:
    """Run the playbook's review steps."""
    return run_stage(Stage.review, incident, run)
