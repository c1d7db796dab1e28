"""The deadline watch's work: reminders and escalations over the incidents' regulatory clocks.

flows/deadlines.py runs `check_deadlines` as a scheduled flow (prefect.yaml, every 5 minutes).

For every open obligation of every incident in the evidence store (irp/notifications/obligations.py):
a reminder to the internal recipients IRP_REMINDER_LEAD_HOURS before the deadline (24 h, 6 h, 1 h),
an escalation to security@ and dpo@ (§14) when it is IRP_ESCALATION_LEAD_HOURS away, and another when
it is missed, saying that the notification must now go with the reasons for the delay (Art. 33(1)).
Each message is archived with its delivery result; each reminder and escalation is a timeline event
of the incident, so none is sent twice. An escalation that could not be delivered is tried again
at the next watch; a watch that starts late sends only the tightest reminder due.

The response's own clocks too, for every incident still open: one reminder per measure past its due
time (irp/lifecycle.py), and one escalation when the stage the incident waits at (contain, restore)
is past its §5 target for the incident's severity (IRP_RESPONSE_TARGETS_MINUTES, from detection).
Side effects: messages to the internal recipients, evidence items, timeline events.

Once a day, `daily_summary` tells the internal recipients what no playbook took: the alerts of the last
24 hours no route matched (read from the intake's journal) and the triage incidents still waiting for a
type (irp/triage.py); nothing is sent on a day without either.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from irp.errors import EvidenceError, IrpError
from irp.evidence import EvidenceStore
from irp.lifecycle import format_due, needs, open_measures
from irp.models import Delivery, Incident, Stage, TimelineEntry, utcnow
from irp.notifications import dispatch, outside_context, render
from irp.notifications.channels import Message, deliver
from irp.notifications.obligations import Deadline, deadlines, notices_sent
from irp.reports.kpis import format_duration, targets
from irp.settings import Settings
from irp.triage import TRIAGE_RECORD, pending_triages

__all__ = ["DailySummary", "Notice", "WatchReport", "check_deadlines", "daily_summary", "describe", "remaining_text",
           "unrouted_since"]


class Notice(BaseModel):
    """One reminder or escalation the watch sent (or tried to)."""

    incident_id: str
    obligation: str
    kind: str = Field(..., description="reminder, near, missed; overdue_measures or stage_late.")
    key: str
    status: str
    notification: str


class WatchReport(BaseModel):
    """What one watch did."""

    at: datetime
    incidents: int = 0
    open_deadlines: int = 0
    notices: list[Notice] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    triage_pending: list[str] = Field(default_factory=list, description="Triage incidents waiting for a type.")


def remaining_text(delta: timedelta) -> str:
    """`delta` as people read a deadline: 'in 5.0 h', '3.2 h late', 'in 12.5 days'."""
    hours = abs(delta.total_seconds()) / 3600
    amount = f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"
    return f"in {amount}" if delta.total_seconds() >= 0 else f"{amount} late"


def describe(deadline: Deadline) -> str:
    """One line per deadline, for messages and the CLI."""
    o = deadline.obligation
    return (f"{o.id}: {o.kind} to {o.audience} {o.recipient} by {deadline.due_at:%Y-%m-%d %H:%M} UTC "
            f"({remaining_text(deadline.remaining)}; {o.basis})")


def _next_notice(deadline: Deadline, settings: Settings, sent: set[str]) -> tuple[str, str, list[str]] | None:
    """(kind, key, keys covered) of the notice due now for an open deadline, or None."""
    left = deadline.remaining.total_seconds()
    leads = sorted(settings.reminder_lead_hours)
    passed = [f"{lead:g}h" for lead in leads if left <= lead * 3600]
    if left <= 0:
        kind, key = "missed", "missed"
        covered = [*passed, "near", "missed"]
    elif left <= settings.escalation_lead_hours * 3600:
        kind, key = "near", "near"
        covered = [*passed, "near"]
    elif passed:
        kind, key = "reminder", passed[0]  # the tightest lead reached; the wider ones are covered by it
        covered = passed
    else:
        return None
    return None if key in sent else (kind, key, covered)


def check_deadlines(store: EvidenceStore, settings: Settings, now: datetime | None = None) -> WatchReport:
    """Send the reminders and escalations due at `now` for every incident of `store`."""
    now = now or utcnow()
    report = WatchReport(at=now)
    for incident_id in store.incident_ids():
        try:
            incident = store.load_incident(incident_id)
        except EvidenceError as exc:  # no record yet: a triage waiting for its type is not a problem
            if any(item.name == TRIAGE_RECORD for item in store.manifest(incident_id)):
                report.triage_pending.append(incident_id)
            else:
                report.problems.append(f"{incident_id}: cannot read the incident: {exc}")
            continue
        except (IrpError, ValueError) as exc:
            report.problems.append(f"{incident_id}: cannot read the incident: {exc}")
            continue
        if incident.dry_run:
            continue
        if not incident.status.ended:
            for notice in _response_notices(store, settings, incident, now, report.problems):
                report.notices.append(notice)
        if not incident.obligations:
            continue
        report.incidents += 1
        current = deadlines(incident, now)
        open_ones = [d for d in current if d.is_open]
        report.open_deadlines += len(open_ones)
        for deadline in open_ones:
            due = _next_notice(deadline, settings, notices_sent(incident, deadline.obligation.id))
            if due is None:
                continue
            try:
                report.notices.append(_notify(store, settings, incident, deadline, open_ones, due, now))
            except IrpError as exc:
                report.problems.append(f"{incident_id} {deadline.obligation.id}: {exc}")
    return report


def _response_notices(store: EvidenceStore, settings: Settings, incident: Incident, now: datetime,
                      problems: list[str]) -> list[Notice]:
    """Remind of overdue measures (once each) and escalate the stage the incident waits at past its §5 target."""
    sent = {k for e in incident.timeline if e.kind in ("reminder", "escalation") for k in e.data.get("keys") or []}
    due: list[tuple[str, list[str], dict[str, Any]]] = []
    overdue = [m for m in open_measures(incident) if m.due_at and m.due_at < now and f"measure:{m.id}" not in sent]
    if overdue:
        due.append(("overdue_measures", [f"measure:{m.id}" for m in overdue], {"measures": [
            f"{m.id} ({m.stage.value}, {m.owner}, {format_due(m, now)}): {m.title}" for m in overdue]}))
    waiting = incident.waiting
    metric = {Stage.contain: "contain", Stage.restore: "restore"}.get(waiting.stage) if waiting else None
    if metric and f"stage:{waiting.stage.value}" not in sent:
        target = targets()[incident.severity][metric]
        if (now - incident.detected_at).total_seconds() > target:
            due.append(("stage_late", [f"stage:{waiting.stage.value}"], {
                "stage": waiting.stage.value, "target": format_duration(target) + " after detection",
                "waits": "; ".join(needs(incident, waiting.stage, now)) or "a decision"}))
    notices = []
    for kind, keys, details in due:
        escalation = {"kind": kind, "obligation": None, "due_at": None, "remaining": "", "reason": "",
                      "deadlines": [], **details}
        try:
            record = dispatch(store, incident, settings, template="internal_escalation", language="fr",
                              audience="internal", recipient="", phase="reminder" if kind == "overdue_measures"
                              else "escalation", context=outside_context(incident, "reminder"), now=now,
                              extra={"escalation": escalation})
        except IrpError as exc:
            problems.append(f"{incident.id} {kind}: {exc}")
            continue
        delivered = record.status != "failed"
        store.append_event(incident.id, TimelineEntry(
            at=now, kind="reminder" if kind == "overdue_measures" else "escalation", actor="deadline-watch",
            message=f"{'reminder: measures overdue' if kind == 'overdue_measures' else 'escalation: stage late'} "
                    f"({', '.join(keys)}): {record.status}" + (f" — {record.reason}" if record.reason else ""),
            data={"keys": keys if delivered else [], "notification": record.id, "status": record.status}))
        notices.append(Notice(incident_id=incident.id, obligation="", kind=kind, key=",".join(keys),
                              status=record.status, notification=record.id))
    return notices


def _notify(store: EvidenceStore, settings: Settings, incident: Incident, deadline: Deadline,
            open_ones: list[Deadline], due: tuple[str, str, list[str]], now: datetime) -> Notice:
    kind, key, covered = due
    obligation = deadline.obligation
    escalation: dict[str, Any] = {
        "kind": kind,
        "obligation": obligation.model_dump(mode="json"),
        "due_at": deadline.due_at.isoformat(),
        "remaining": remaining_text(deadline.remaining),
        "reason": deadline.last_attempt,
        "deadlines": [describe(d) for d in open_ones],
    }
    record = dispatch(store, incident, settings, template="internal_escalation", language="fr", audience="internal",
                      recipient="", phase="reminder" if kind == "reminder" else "escalation",
                      context=outside_context(incident, "reminder"), now=now, extra={"escalation": escalation})
    delivered = record.status != "failed"  # a failed escalation is tried again at the next watch
    label = {"reminder": f"reminder ({key} before)", "near": "escalation: deadline near",
             "missed": "escalation: deadline missed"}[kind]
    store.append_event(incident.id, TimelineEntry(
        at=now, kind="reminder" if kind == "reminder" else "escalation", stage=None, actor="deadline-watch",
        message=f"{label} for {obligation.id} ({obligation.basis}), due {deadline.due_at:%Y-%m-%d %H:%M} UTC: "
                f"{record.status}" + (f" — {record.reason}" if record.reason else ""),
        data={"obligation": obligation.id, "keys": covered if delivered else [], "notification": record.id,
              "status": record.status, "evidence": record.evidence},
    ))
    return Notice(incident_id=incident.id, obligation=obligation.id, kind=kind, key=key, status=record.status,
                  notification=record.id)


class DailySummary(BaseModel):
    """What the daily summary found and whom it told."""

    at: datetime
    unrouted: list[dict[str, Any]] = Field(default_factory=list)
    triage_pending: list[dict[str, Any]] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    deliveries: list[Delivery] = Field(default_factory=list)


def unrouted_since(journal: str, since: datetime, limit: int = 200) -> list[dict[str, Any]]:
    """The alerts no route matched seen since `since`, most recent first, read from the intake's journal (a SQLite
    file, opened read-only beside the intake, or its PostgreSQL database); [] when there is no journal yet."""
    query = ("SELECT source, fingerprint, title, count, first_seen, last_seen FROM unrouted WHERE last_seen >= {p} "
             "ORDER BY last_seen DESC LIMIT {p}")
    if journal.split("://", 1)[0].split("+", 1)[0] in ("postgresql", "postgres"):
        import psycopg

        with psycopg.connect(journal) as conn:
            rows = conn.execute(query.format(p="%s"), (since.timestamp(), limit)).fetchall()
    else:
        path = Path(journal.removeprefix("sqlite://"))
        if not path.exists():
            return []
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            rows = conn.execute(query.format(p="?"), (since.timestamp(), limit)).fetchall()
        finally:
            conn.close()
    return [{"source": r[0], "fingerprint": r[1], "title": r[2], "count": r[3],
             "first_seen": datetime.fromtimestamp(r[4]).astimezone().isoformat(),
             "last_seen": datetime.fromtimestamp(r[5]).astimezone().isoformat()} for r in rows]


def daily_summary(store: EvidenceStore, settings: Settings, now: datetime | None = None) -> DailySummary:
    """Tell the internal recipients the last 24 hours' unrouted alerts and the triages waiting for a type."""
    now = now or utcnow()
    summary = DailySummary(at=now)
    try:
        summary.unrouted = unrouted_since(settings.intake_journal, now - timedelta(hours=24))
    except Exception as exc:  # a journal that cannot be read is reported, the rest still goes out
        summary.problems.append(f"intake journal {settings.intake_journal}: cannot read the unrouted alerts: {exc}")
    summary.triage_pending = pending_triages(store)
    if not (summary.unrouted or summary.triage_pending or summary.problems):
        return summary
    rendered = render(settings.playbooks_dir / "templates", "daily_summary", "fr", {
        "summary": summary.model_dump(mode="json"), "incident": {"id": ""}})
    message = Message(rendered.subject, rendered.text, rendered.html, reference=f"daily summary {now:%Y-%m-%d}")
    summary.deliveries = deliver(message, list(settings.notify_internal), settings)
    return summary
