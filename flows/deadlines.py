"""The deadline watch: a scheduled flow (prefect.yaml, every 5 minutes) over the incidents' regulatory clocks.

What it sends and when is irp/deadlines.py: reminders before a deadline, escalations when it is
near or missed (policy §14, GDPR Art. 33(1)).
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from irp.deadlines import WatchReport, check_deadlines
from irp.evidence import open_store
from irp.settings import get_settings

__all__ = ["watch_deadlines"]


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
    logger.info("%d incidents with obligations, %d open deadlines, %d notices", report.incidents,
                report.open_deadlines, len(report.notices))
    return report
