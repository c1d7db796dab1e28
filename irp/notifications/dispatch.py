"""Dispatch: the one path every message takes, recipients from the configuration, both archived (§7, §12).

`dispatch` is called from a run (tasks/notify.py), from the deadline watch (flows/deadlines.py) or
from `irp incidents notify`: recipients are looked up in the configuration by audience and key (a
Client id, an authority), never taken from alert data; the rendered message and each delivery
result are archived in the evidence store; a notification past its deadline goes only with the
reasons for the delay (GDPR Art. 33(1)). A message to a Client goes only when the incident's Client is
confirmed (`client_hold`): one named by alert data alone is held, an unknown one is never mailed;
both are left to the caller to report to the internal recipients.
"""

from __future__ import annotations

import re
import secrets as _secrets
from datetime import datetime
from typing import Any

from irp.evidence import CollectedBy, EvidenceStore
from irp.models import Delivery, Incident, NotificationRecord, Obligation, utcnow
from irp.notifications.channels import Message, deliver
from irp.notifications.facts import letter_facts
from irp.notifications.letters import CONTACTS, Rendered, render
from irp.notifications.obligations import deadlines, late_reasons
from irp.settings import Settings

__all__ = ["client_hold", "delivery_status", "dispatch", "outside_context", "recipients_for"]


def recipients_for(settings: Settings, audience: str, key: str) -> tuple[list[str], str]:
    """The configured recipients of `audience`/`key` and the setting they come from."""
    if audience == "internal":
        return list(settings.notify_internal), "IRP_NOTIFY_INTERNAL"
    if audience == "client":
        return list(settings.notify_clients.get(key, [])), "IRP_NOTIFY_CLIENTS"
    if audience == "authority":
        return list(settings.notify_authorities.get(key, [])), "IRP_NOTIFY_AUTHORITIES"
    found = settings.notify_data_subjects.get(key) or settings.notify_data_subjects.get("*", [])
    return list(found), "IRP_NOTIFY_DATA_SUBJECTS"


def client_hold(incident: Incident, settings: Settings, audience: str, key: str,
                obligation: Obligation | None = None) -> tuple[str, str]:
    """Why a message to Client `key` must not go: ("unknown_client" | "unconfirmed_client", reason), or ("", "")."""
    if audience not in ("client", "data_subjects") or key in ("", "*"):
        return "", ""
    if key not in settings.notify_clients and not (audience == "data_subjects" and key in settings.notify_data_subjects):
        return "unknown_client", (f"no recipient configured for {audience} {key!r} (IRP_NOTIFY_CLIENTS): not a "
                                  "configured Client, never mailed; reported to the internal recipients")
    if incident.client_confirmed(key):
        return "", ""
    send = f"irp incidents notify {incident.id} {obligation.id}" if obligation else "irp incidents notify"
    return "unconfirmed_client", (f"held: awaiting confirmation of the affected Clients ({key!r} was named by alert "
                                  f"data); confirm with: irp incidents confirm-clients {incident.id} --clients {key} "
                                  f"--by NAME, then send with: {send}")


def outside_context(incident: Incident, phase: str) -> dict[str, Any]:
    """The template variables of a message sent outside a run (deadline watch, `irp incidents notify`)."""
    playbook = incident.playbook
    return {
        "incident": incident.model_dump(mode="json"),
        "alert": {},
        "steps": {},
        "playbook": {"name": playbook.name if playbook else "", "version": playbook.version if playbook else "",
                     "incident_type": incident.type.value},
        "stage": "notify",
        "phase": phase,
        "dry_run": False,
    }


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:60] or "x"


def delivery_status(deliveries: list[Delivery]) -> str:
    """sent, partial, failed or not_sent: what the deliveries of one message add up to."""
    states = {d.status for d in deliveries}
    if states <= {"sent"} and states:
        return "sent"
    if "sent" in states:
        return "partial"
    if states & {"failed", "refused"}:
        return "failed"
    return "not_sent"


def dispatch(
    store: EvidenceStore,
    incident: Incident,
    settings: Settings,
    *,
    template: str,
    language: str,
    audience: str,
    recipient: str,
    phase: str,
    context: dict[str, Any],
    obligation: Obligation | None = None,
    late_reason: str = "",
    dry_run: bool = False,
    collected_by: CollectedBy | None = None,
    now: datetime | None = None,
    extra: dict[str, Any] | None = None,
    archived: list[Any] | None = None,
    reviewed_by: str = "",
    edits: dict[str, str] | None = None,
) -> NotificationRecord:
    """Render, check the deadline, send to the configured recipients, archive; the record says what happened.

    A message to an audience IRP_NOTIFY_REVIEW lists goes only with `reviewed_by` (irp/notifications/review.py):
    without it, it is rendered, archived and held for its reviewers. `edits` replace the free-text parts
    (nature, measures, recommendations) of the templates that offer them.
    The evidence items written (message, delivery record) are appended to `archived` when given.
    """
    now = now or utcnow()
    due, late, late_reason = _lateness(incident, obligation, late_reason, now)
    variables = {
        **context,
        "recipient": recipient,
        "obligation": obligation.model_dump(mode="json") if obligation else None,
        "notification": {"phase": phase, "late": late, "late_reason": late_reason,
                         "due_at": due.isoformat() if due else None, "sent_at": now.isoformat()},
        "contacts": CONTACTS,
        "facts": letter_facts(incident, language=language, phase=phase, audience=audience, recipient=recipient,
                              steps=context.get("steps"), default_role=settings.gdpr_role,
                              for_client=settings.gdpr_notify_for_client, now=now, edits=edits),
        **(extra or {}),
    }
    rendered = render(settings.playbooks_dir / "templates", template, language, variables)
    record_id = f"N-{now:%Y%m%d%H%M%S}-{_secrets.token_hex(3).upper()}"
    addresses, setting = recipients_for(settings, audience, recipient)
    hold, held_because = _hold(incident, settings, audience, recipient, obligation, reviewed_by)
    if late and not late_reason:
        deliveries: list[Delivery] = []
        status = "failed"
        reason = (f"late by {_hours(now - due)}: not sent without the reasons for the delay (GDPR Art. 33(1)); "
                  f"record them with: irp incidents deadlines {incident.id} --obligation {obligation.id} "
                  f"--late-reason TEXT, then: irp incidents notify {incident.id} {obligation.id}")
    else:
        deliveries, status, reason = _outcome(incident, settings, rendered, record_id, audience, recipient,
                                              addresses, setting, hold, held_because, dry_run)
    folder = f"notifications/{_safe(phase)}"
    stem = f"{template}.{language}"  # a second message under the same name gets a numbered name (store)
    item = store.put(incident.id, f"{folder}/{stem}.md", f"Subject: {rendered.subject}\n\n{rendered.text}".encode(),
                     content_type="text/markdown; charset=utf-8", collected_by=collected_by, source_system="irp")
    record = NotificationRecord(
        id=record_id, at=now, phase=phase, audience=audience, recipient=recipient, template=template,
        language=language, subject=rendered.subject, obligation=obligation.id if obligation else None,
        status=status, reason=reason, hold=hold, late_reason=late_reason if late else "", deliveries=deliveries,
        evidence=item.name, reviewed_by=reviewed_by, edits=dict(edits or {}),
    )
    delivery = store.put_json(incident.id, f"{folder}/{stem}.delivery.json", record.model_dump(mode="json"),
                              collected_by=collected_by, source_system="irp")
    if archived is not None:
        archived.extend([item, delivery])
    return record


def _lateness(incident: Incident, obligation: Obligation | None, late_reason: str,
              now: datetime) -> tuple[datetime | None, bool, str]:
    """The obligation's deadline, whether `now` is past it, and the reasons for the delay (given, else recorded)."""
    due = None
    if obligation is not None:
        due = next((d.due_at for d in deadlines(incident, now) if d.obligation.id == obligation.id), obligation.due_at)
        late_reason = late_reason.strip() or "; ".join(late_reasons(incident, obligation.id))
    return due, due is not None and now > due, late_reason


def _hold(incident: Incident, settings: Settings, audience: str, recipient: str, obligation: Obligation | None,
          reviewed_by: str) -> tuple[str, str]:
    """Why the message is held: `client_hold`'s reasons, else review (IRP_NOTIFY_REVIEW) until reviewed; or ("", "")."""
    hold, held_because = client_hold(incident, settings, audience, recipient, obligation)
    if not hold and not reviewed_by and settings.notify_review.get(audience):
        show = f"{incident.id} {obligation.id}" if obligation else incident.id
        hold, held_because = "review", (
            f"held for review by {', '.join(settings.notify_review[audience])} (IRP_NOTIFY_REVIEW): read it with "
            f"irp notifications review {show}; send it with irp notifications approve {show} --by NAME")
    return hold, held_because


def _outcome(incident: Incident, settings: Settings, rendered: Rendered, record_id: str, audience: str, recipient: str,
             addresses: list[str], setting: str, hold: str, held_because: str,
             dry_run: bool) -> tuple[list[Delivery], str, str]:
    """The deliveries, status and reason of a message not refused as late: dry run, held, unaddressed or sent."""
    reason = ""
    if dry_run:
        deliveries, status = [], "dry_run"
        reason = "dry run: rendered, not sent" + (f"; {held_because}" if hold else "")
    elif hold:
        deliveries = [Delivery(channel="none", recipient=recipient, status="not_sent", detail=held_because)]
        status, reason = ("held" if hold in ("unconfirmed_client", "review") else "not_sent"), held_because
    elif not addresses:
        deliveries = [Delivery(channel="none", recipient=recipient or audience, status="not_sent",
                               detail=f"not sent: no recipient configured for {audience} {recipient!r} ({setting})")]
        status, reason = "not_sent", deliveries[0].detail
    else:
        message = Message(rendered.subject, rendered.text, rendered.html, reference=f"{incident.id} {record_id}")
        deliveries = deliver(message, addresses, settings)
        status = delivery_status(deliveries)
        if status != "sent":
            reason = "; ".join(f"{d.recipient}: {d.status} {d.detail}".strip() for d in deliveries
                               if d.status != "sent")
    return deliveries, status, reason


def _hours(delta: Any) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"
