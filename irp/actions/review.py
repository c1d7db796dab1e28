"""review.* actions (policy §11): the post-incident review report and the response metrics.

The report itself is assembled by irp/reports/review.py (summary, timeline and chart, metrics
against their targets, what worked and what did not, corrective actions with owners).

Side effects (not in dry runs): review/report.md, review/report.html, review/timeline.svg and
review/metrics.json archived as evidence (review/final-*.* once the review's outcome is recorded);
Prefect artifacts: markdown `review-<id>`, table
`metrics-<id>`, and the aggregates over every incident of the store by type and severity as
markdown `incident-metrics` and table `incident-metrics-table`; a timeline entry.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from irp.actions.registry import ActionArgs, ActionContext, action
from irp.errors import EvidenceError
from irp.history import load_incidents
from irp.models import Incident, utcnow
from irp.reports.charts import timeline_svg
from irp.reports.kpis import aggregate, aggregate_markdown, aggregate_rows, measure_cell, measure_incident, metrics_rows
from irp.reports.review import ReviewNotes, compose, render_review_html, report_markdown

log = logging.getLogger(__name__)


class ReportArgs(ReviewNotes, ActionArgs):
    """review.write_report's arguments: the review's notes."""


def _publish_aggregates(ctx: ActionContext, incident: Incident) -> None:
    """Aggregated metrics over every incident of the store (this one as it is now) as Prefect artifacts."""
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


@action
def write_report(args: ReportArgs, ctx: ActionContext) -> dict[str, Any]:
    """Write the post-incident review (markdown, HTML with a timeline chart) and publish the metrics."""
    incident = ctx.incident
    now = utcnow()
    evidence = ctx.store.manifest(incident.id)
    at = "review/final-" if incident.review else "review/"  # the draft, then the report with the recorded outcome
    markdown = report_markdown(incident, args, evidence, now=now)
    metrics = measure_incident(incident, now=now)
    chart = timeline_svg(incident)
    item = ctx.archive(f"{at}report.md", markdown.encode(), content_type="text/markdown; charset=utf-8",
                       source_system="irp")
    ctx.archive(f"{at}timeline.svg", chart.encode(), content_type="image/svg+xml", source_system="irp")
    html = render_review_html(compose(incident, args, evidence, now=now), chart)
    page = ctx.archive(f"{at}report.html", html.encode(), content_type="text/html; charset=utf-8",
                       source_system="irp")
    ctx.archive_json(f"{at}metrics.json", metrics.model_dump(mode="json"), source_system="irp")
    key = f"review-{incident.id.lower()}"
    published = not ctx.dry_run and bool(ctx.flow_run_id)  # artifacts belong to a flow run (none in playbook tests)
    if published:
        create_markdown_artifact(key=key, markdown=markdown, description=f"Post-incident review of {incident.id}")
        create_table_artifact(key=f"metrics-{incident.id.lower()}", table=metrics_rows(metrics),
                              description=f"Response metrics of {incident.id} against the {incident.severity.value} "
                                          "targets")
        _publish_aggregates(ctx, incident)
    ctx.record("post-incident review report written", kind="review", evidence=item.name, html=page.name)
    return {
        "evidence": item.name,
        "html": page.name,
        "artifact_key": key if published else None,
        "metrics": {name: measure_cell(m) for name, m in metrics.measures.items()},
    }
