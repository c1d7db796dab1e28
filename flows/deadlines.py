"""The deadline watch: a scheduled flow (prefect.yaml, every 5 minutes) over the incidents' regulatory clocks,
and its daily summary (prefect.yaml, every morning) of what no playbook took.

What they send and when is irp/deadlines.py: reminders before a deadline, escalations when it is
near or missed (policy §14, GDPR Art. 33(1)); the unrouted alerts and the triages waiting for a type.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from irp.deadlines import DailySummary, WatchReport, check_deadlines, daily_summary
from irp.evidence import open_store
from irp.settings import get_settings

__all__ = ["summarise_unrouted", "watch_deadlines"]


@flow(name="deadline-watch", description="Reminders and escalations before and after the regulatory deadlines.")
def watch_deadlines() -> WatchReport:
    """Check every incident's notification deadlines; remind and escalate as IRP_REMINDER_LEAD_HOURS says."""
    logger = get_run_logger()
    settings = get_settings()
    report = check_deadlines(open_store(settings.evidence_url), settings)
    for notice in report.notices:
        logger.info("%s %s %s: %s (%s)", notice.incident_id, notice.obligation, notice.kind, notice.status,
                    notice.notification)
    for problem in report.problems:
        logger.warning("%s", problem)
    logger.info("%d incidents with obligations, %d open deadlines, %d notices, %d triages waiting for a type",
                report.incidents, report.open_deadlines, len(report.notices), len(report.triage_pending))
    return report


@flow(name="daily-summary", description="What no playbook took: unrouted alerts of the last 24 h, triages waiting.")
def summarise_unrouted() -> DailySummary:
    """Tell the internal recipients the last 24 hours' unrouted alerts and the triage incidents without a type."""
    logger = get_run_logger()
    settings = get_settings()
    summary = daily_summary(open_store(settings.evidence_url), settings)
    for problem in summary.problems:
        logger.warning("%s", problem)
    logger.info("%d unrouted alerts in 24 h, %d triages waiting; told: %s", len(summary.unrouted),
                len(summary.triage_pending), ", ".join(f"{d.recipient} {d.status}" for d in summary.deliveries) or "nobody")
    return summary
