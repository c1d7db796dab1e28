"""The review gate (GDPR Art. 33, NIS2 Art. 23, policy §7): an external message leaves once its reviewer approves.

A message to an audience IRP_NOTIFY_REVIEW lists is rendered and archived, then held (`hold: review`).
Its reviewer reads it (`irp notifications review`, or the Resume form of its review run), then
approves — with the free-text parts rewritten if need be — and the message goes, rendered from the
facts as they are then; or postpones with a reason (recorded; the deadline watch keeps reminding,
and a message sent after its deadline still needs the reasons for the delay, Art. 33(1)).
Every approval and postponement is a timeline event, an audit entry and an evidence item.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from irp import audit
from irp.errors import IrpError
from irp.evidence import EvidenceStore
from irp.models import Incident, NotificationRecord, Obligation, TimelineEntry, utcnow
from irp.notifications.dispatch import dispatch, outside_context
from irp.notifications.obligations import deadlines, notifications_of
from irp.settings import Settings

__all__ = ["EDITABLE", "approve", "held_for_review", "postpone", "review_text"]

EDITABLE = ("nature", "measures", "recommendations")  # the free-text parts a reviewer may rewrite


def held_for_review(incident: Incident, obligation_id: str) -> NotificationRecord:
    """The message of `obligation_id` that waits for its review; IrpError saying what is there instead."""
    obligation = _obligation(incident, obligation_id)
    records = [n for n in notifications_of(incident) if n.obligation == obligation.id]
    if any(n.status in ("sent", "partial") for n in records):
        raise IrpError(f"the {obligation.id} notification of {incident.id} was already sent; nothing waits for review")
    held = [n for n in records if n.hold == "review"]
    if not held:
        raise IrpError(f"no {obligation.id} notification of {incident.id} waits for review"
                       + (f" (its latest: {records[-1].status} — {records[-1].reason})" if records else
                          " (none was rendered yet)"))
    return held[-1]


def review_text(store: EvidenceStore, incident: Incident, record: NotificationRecord, now: datetime | None = None) -> str:
    """What the reviewer reads: the deadline, the facts the message rests on, then the message as rendered."""
    now = now or utcnow()
    deadline = next((d for d in deadlines(incident, now) if d.obligation.id == record.obligation), None)
    pd = incident.personal_data
    with store.open(incident.id, record.evidence) as handle:
        message = handle.read().decode("utf-8", errors="replace")
    lines = [f"{record.obligation} — {record.audience} {record.recipient} — {record.phase} ({record.template}.{record.language})"]
    if deadline:
        lines.append(f"deadline   {deadline.due_at:%Y-%m-%d %H:%M} UTC ({deadline.status}; {deadline.obligation.basis})")
    lines += [
        f"facts      {incident.type.label}, severity {incident.severity.value}; personal data: "
        + (f"{', '.join(pd.categories) or 'categories unknown'}, ~{pd.approx_people or '?'} people, "
           f"~{pd.approx_records or '?'} records" if pd.involved else "none known"),
        f"           detected {incident.detected_at:%Y-%m-%d %H:%M} UTC, aware {incident.aware_at:%Y-%m-%d %H:%M} UTC; "
        f"measures: {sum(a.status == 'closed' for a in incident.actions)} closed of {len(incident.actions)}",
        f"editable   {', '.join(EDITABLE)} (--edit PART=TEXT)",
        "",
        message,
    ]
    return "\n".join(lines)


def approve(store: EvidenceStore, incident: Incident, settings: Settings, obligation_id: str, *, by: str,
            edits: dict[str, str] | None = None, late_reason: str = "", now: datetime | None = None) -> NotificationRecord:
    """Send the held message of `obligation_id`, approved by `by` (with `edits`); the record of what was sent."""
    held = held_for_review(incident, obligation_id)
    who = _who(by)
    unknown = sorted(set(edits or {}) - set(EDITABLE))
    if unknown:
        raise IrpError(f"cannot edit {', '.join(unknown)}; editable parts: {', '.join(EDITABLE)}")
    obligation = _obligation(incident, obligation_id)
    now = now or utcnow()
    record = dispatch(store, incident, settings, template=held.template, language=held.language,
                      audience=held.audience, recipient=held.recipient, phase=held.phase,
                      context=outside_context(incident, held.phase), obligation=obligation, late_reason=late_reason,
                      now=now, reviewed_by=who, edits={k: v.strip() for k, v in (edits or {}).items() if v.strip()})
    _record(store, incident, now, who, "notification_approved",
            f"{obligation.id} notification approved by {who} and {record.status}"
            + (f" (edited: {', '.join(record.edits)})" if record.edits else "")
            + (f" — {record.reason}" if record.reason else ""),
            {"record": record.model_dump(mode="json"), "obligation_id": obligation.id, "reviewed": held.id},
            kind="notification")
    return record


def postpone(store: EvidenceStore, incident: Incident, obligation_id: str, *, by: str, reason: str,
             now: datetime | None = None, decision_id: str = "") -> NotificationRecord:
    """Keep the held message of `obligation_id` back, with the reviewer's reason (the deadline keeps running).

    `decision_id` (a form replayed when its run resumes) makes a second recording of the same decision a no-op.
    """
    held = held_for_review(incident, obligation_id)
    if decision_id and any(e.data.get("decision_id") == decision_id for e in incident.timeline):
        return held
    if not reason.strip():
        raise IrpError("say why the notification is postponed (--reason); it is kept with the incident (Art. 33(5))")
    who = _who(by)
    _record(store, incident, now or utcnow(), who, "notification_postponed",
            f"{obligation_id} notification postponed by {who}: {' '.join(reason.split())}",
            {"obligation": obligation_id, "reason": reason.strip(), "held": held.id, "decision_id": decision_id},
            kind="notification_postponed")
    return held


def _record(store: EvidenceStore, incident: Incident, now: datetime, who: str, act: Literal[
        "notification_approved", "notification_postponed"], message: str, data: dict, *, kind: str) -> None:
    entry = TimelineEntry(at=now, kind=kind, actor=who, message=message, data=data)
    store.append_event(incident.id, entry)
    store.put_json(incident.id, f"notifications/review/{now:%Y%m%dT%H%M%S}-{act}.json", entry.model_dump(mode="json"),
                   source_system="irp")
    audit.record(store, incident.id, act, actor=who, details={"message": message[:500]})


def _who(by: str) -> str:
    who = " ".join(by.split())
    if not who:
        raise IrpError("say who reviews (--by NAME): the approval is recorded with the reviewer's name")
    return who


def _obligation(incident: Incident, obligation_id: str) -> Obligation:
    found = next((o for o in incident.obligations if o.id == obligation_id), None)
    if found is None:
        known = ", ".join(o.id for o in incident.obligations) or "none"
        raise IrpError(f"incident {incident.id} has no obligation {obligation_id!r}; valid: {known}")
    return found
