"""The post-incident review (policy §11) as markdown and as a self-contained HTML page with its timeline chart.

One place assembles it: the review stage (tasks/review.py) archives it, `irp incidents export`
(irp/history.py) generates it when no review was archived.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from markupsafe import Markup
from pydantic import BaseModel, ConfigDict, Field

from irp.models import Incident, Stage, utcnow
from irp.reports.charts import timeline_svg
from irp.reports.html import render_page
from irp.reports.kpis import IncidentMetrics, format_duration, measure_incident

__all__ = ["ReviewNotes", "compose", "observed", "render_review_html", "report_html", "report_markdown"]


class ReviewNotes(BaseModel):
    """What people write into the review; the rest comes from the incident's record."""

    model_config = ConfigDict(extra="forbid")

    root_cause: str = Field("To be established in the review meeting.", description="Identified causes (§11).")
    what_worked: str = Field("", description="What went well.")
    what_did_not: str = Field("", description="What went badly or late.")


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _actions_table(actions: list[Any], *, with_stage: bool) -> list[str]:
    """Markdown rows of tracked actions (the stage column for response measures), or a line saying none."""
    if not actions:
        return ["_None assigned._"]
    stage, rule, word = ("Stage | ", "---|", "Measure") if with_stage else ("", "", "Action")
    lines = [f"| Id | {stage}{word} | Owner | Due (UTC) | Status |", f"|---|{rule}---|---|---|---|"]
    for a in actions:
        due = f"{a.due_at:%Y-%m-%d %H:%M}" if a.due_at else "—"
        column = f"{a.stage.value} | " if with_stage else ""
        lines.append(f"| {a.id} | {column}{_cell(a.title)} | {_cell(a.owner)} | {due} | {a.status} |")
    return lines


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


def recorded_notes(incident: Incident, args: ReviewNotes) -> ReviewNotes:
    """The review's outcome once people recorded it (irp incidents review, the Resume form), else the playbook's notes."""
    review = incident.review
    if review is None:
        return args
    return ReviewNotes(root_cause=review.causes, what_worked=review.worked or args.what_worked,
                       what_did_not=review.did_not_work or args.what_did_not)


def compose(incident: Incident, args: ReviewNotes, evidence: list[Any], *,
            now: datetime | None = None) -> dict[str, Any]:
    """Everything the review shows, for the markdown and the HTML."""
    args = recorded_notes(incident, args)
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


def report_markdown(incident: Incident, args: ReviewNotes, evidence: list[Any], *,
                    now: datetime | None = None) -> str:
    """The review report of an incident as markdown."""
    review = compose(incident, args, evidence, now=now)
    pd = incident.personal_data
    draft = "" if incident.review else " (draft: the review meeting has not recorded its outcome yet)"
    lines = [
        f"# Post-incident review — {incident.id}{draft}",
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
    lines += ["", "## Root cause", "", review["root_cause"], ""]
    for title, items in (("What worked", review["worked"]), ("What did not", review["did_not"])):
        lines += [f"## {title}", ""]
        lines += [f"- {_cell(item)}" for item in items] or ["_Nothing recorded._"]
        lines.append("")
    lines += ["## Corrective actions", "", *_actions_table(review["corrective"], with_stage=False)]
    lines += ["", "## Response measures", "", *_actions_table(review["measures"], with_stage=True)]
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


def report_html(incident: Incident, args: ReviewNotes, evidence: list[Any], *, now: datetime | None = None) -> str:
    """The review report as a self-contained HTML page with the timeline chart inline."""
    return render_review_html(compose(incident, args, evidence, now=now), timeline_svg(incident))


def render_review_html(context: dict[str, Any], chart_svg: str) -> str:
    """The review page; `context` is what `compose` returns."""
    return render_page("review.html.j2", **context, chart=Markup(chart_svg))
