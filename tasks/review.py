"""Review (policy §11): write the post-incident review report.

Side effects: the report archived as evidence and published as a Prefect markdown artifact keyed
per incident (not in dry runs), a timeline entry.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from irp.models import Incident, Stage
from tasks.registry import ActionArgs, ActionContext, action
from tasks.stage import RunContext, StageResult, run_stage


class ReportArgs(ActionArgs):
    root_cause: str = Field("To be established in the review meeting.", description="Identified causes (§11).")
    what_worked: str = Field("", description="What went well.")
    what_did_not: str = Field("", description="What went badly or late.")


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def report_markdown(incident: Incident, args: ReportArgs, evidence: list[Any]) -> str:
    """The review report of an incident as markdown."""
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
    lines += ["", "## Summary", "", incident.summary or "_No summary recorded._", "",
              "## Root cause", "", args.root_cause, ""]
    if args.what_worked:
        lines += ["## What worked", "", args.what_worked, ""]
    if args.what_did_not:
        lines += ["## What did not", "", args.what_did_not, ""]
    lines += ["## Stages", "", "| Stage | Status | Started | Ended |", "|---|---|---|---|"]
    for s in incident.stages:
        label = f"{s.stage.value} ({s.phase})" if s.phase else s.stage.value
        lines.append(f"| {label} | {s.status.value} | {s.started_at:%H:%M:%S} | {s.ended_at:%H:%M:%S} |")
    lines += ["", "## Timeline", "", "| Time (UTC) | Kind | Event |", "|---|---|---|"]
    for e in incident.timeline:
        lines.append(f"| {e.at:%Y-%m-%d %H:%M:%S} | {e.kind} | {_cell(e.message)} |")
    lines += ["", "## Actions", ""]
    if incident.actions:
        lines += ["| Id | Action | Owner | Due | Status |", "|---|---|---|---|---|"]
        for a in incident.actions:
            due = f"{a.due_at:%Y-%m-%d %H:%M}" if a.due_at else "—"
            lines.append(f"| {a.id} | {_cell(a.title)} | {_cell(a.owner)} | {due} | {a.status} |")
    else:
        lines.append("_None assigned._")
    lines += ["", "## Evidence", "", "| Item | SHA-256 | Size |", "|---|---|---|"]
    for item in evidence:
        lines.append(f"| {item.name} | `{item.sha256[:16]}…` | {item.size} |")
    return "\n".join(lines) + "\n"


@action("review")
def write_report(args: ReportArgs, ctx: ActionContext) -> dict[str, Any]:
    """Write the post-incident review report: archived, and shown as a Prefect artifact."""
    incident = ctx.incident
    markdown = report_markdown(incident, args, ctx.store.manifest(incident.id))
    item = ctx.archive("review/report.md", markdown.encode(), content_type="text/markdown; charset=utf-8",
                       source_system="irp")
    key = f"review-{incident.id.lower()}"
    if not ctx.dry_run:
        create_markdown_artifact(key=key, markdown=markdown, description=f"Post-incident review of {incident.id}")
    ctx.record("post-incident review report written", kind="review", evidence=item.name)
    return {"evidence": item.name, "artifact_key": None if ctx.dry_run else key}


@task(name="review", cache_policy=NO_CACHE)
def review(incident: Incident, run: RunContext) -> StageResult:
    """Run the playbook's review steps."""
    return run_stage(Stage.review, incident, run)
