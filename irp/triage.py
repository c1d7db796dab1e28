"""Triage: an alert no route matches but whose source marks it severe (IRP_TRIAGE_SEVERITIES) is not left
in a list nobody reads (policy §4, §14).

flows/triage.py runs it. `open_triage` archives the alert and a triage record under the incident id the
intake gave, and tells the internal recipients at once; a responder chooses the incident type on the
run's Resume form (`TriageDecision`); `record_decision` archives the choice and audits it; the chosen
type's flow then runs on the same incident id, so the alert, the message and the response share one
folder, one timeline and one audit chain. Until a type is chosen the folder has no incident record:
`pending_triages` lists those for the deadline watch's daily summary.
Side effects: evidence items, messages to IRP_NOTIFY_INTERNAL, audit entries.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from prefect.input import RunInput
from pydantic import BaseModel, Field

from irp import audit
from irp.evidence import EvidenceStore
from irp.models import Alert, Delivery, IncidentType, NotificationRecord, Severity, utcnow
from irp.notifications.channels import Message, deliver
from irp.notifications.dispatch import delivery_status
from irp.notifications.letters import render
from irp.settings import Settings

__all__ = ["NOT_AN_INCIDENT", "TRIAGE_RECORD", "TriageChoice", "TriageDecision", "TriageOpened", "escalate_timeout",
           "open_triage", "pending_triages", "record_decision"]

TRIAGE_RECORD = "triage/triage.json"
DECISION_RECORD = "triage/decision.json"
NOT_AN_INCIDENT = "not_an_incident"


# The form's dropdown: the ten incident types of §2, and "not an incident" (one enum: the Prefect UI renders
# a union with a one-value Literal badly).
TriageChoice = StrEnum("TriageChoice", {**{t.value: t.value for t in IncidentType}, NOT_AN_INCIDENT: NOT_AN_INCIDENT})


class TriageDecision(RunInput):
    """The Resume form of a triage run: what kind of incident the alert is, and who says so."""

    incident_type: TriageChoice = Field(
        title="Incident type", description="Policy §2: the playbook to run on this alert; not_an_incident closes "
                                           "the triage (the alert stays listed as unrouted).",
        json_schema_extra={"position": 0})
    responder: str = Field(min_length=1, max_length=200, title="Your name",
                           description="Who decides (recorded in the evidence and the audit log).",
                           json_schema_extra={"position": 1})
    reason: str = Field(min_length=1, max_length=2000, title="Reason", description="Why this type.",
                        json_schema_extra={"position": 2})
    severity: Severity | None = Field(None, title="Severity", description="Leave empty to let the playbook "
                                      "classify (§5); set it to override.", json_schema_extra={"position": 3})


class TriageOpened(BaseModel):
    """What opening the triage did."""

    incident_id: str
    severity: Severity | None
    notification: NotificationRecord


def open_triage(store: EvidenceStore, settings: Settings, alert: Alert, incident_id: str,
                severity: Severity | None, flow_run_id: str = "") -> TriageOpened:
    """Archive the alert and the triage record, tell the internal recipients (never raises on delivery)."""
    store.put(incident_id, f"alerts/{alert.fingerprint}.json",
              json.dumps(alert.raw if alert.raw is not None else alert.model_dump(mode="json"), indent=2,
                         ensure_ascii=False, default=str).encode(),
              content_type="application/json", source_system=alert.source.value,
              source_time=alert.observed_at.isoformat())
    record = {"incident_id": incident_id, "opened_at": utcnow().isoformat(), "source": alert.source.value,
              "fingerprint": alert.fingerprint, "title": alert.title, "severity": severity.value if severity else None,
              "labels": alert.labels, "flow_run_id": flow_run_id}
    store.put_json(incident_id, TRIAGE_RECORD, record, source_system="irp")
    audit.record(store, incident_id, "triaged", actor="irp-intake", strict=False,
                 details={"event": "opened", "source": alert.source.value, "title": alert.title[:200],
                          "severity": record["severity"], "flow_run_id": flow_run_id})
    notification = _tell_internal(store, settings, incident_id, "triage_alert",
                                  {"triage": record, "alert": alert.model_dump(mode="json")})
    return TriageOpened(incident_id=incident_id, severity=severity, notification=notification)


def record_decision(store: EvidenceStore, incident_id: str, decision: TriageDecision | None,
                    started_run: str = "") -> dict[str, Any]:
    """Archive and audit what the responder chose (None: nobody chose in time)."""
    chosen = decision.model_dump(mode="json", include={"incident_type", "responder", "reason", "severity"}) \
        if decision else {"incident_type": None, "responder": "", "reason": "nobody chose a type in time"}
    record = {**chosen, "at": utcnow().isoformat(), "flow_run_id": started_run}
    store.put_json(incident_id, DECISION_RECORD, record, source_system="prefect-ui")
    audit.record(store, incident_id, "triaged", actor=chosen["responder"] or "irp", strict=False,
                 details={"event": "decided" if decision else "timed_out", **record})
    return record


def escalate_timeout(store: EvidenceStore, settings: Settings, incident_id: str, hours: float) -> NotificationRecord:
    """Tell the internal recipients that nobody chose a type within IRP_TRIAGE_TIMEOUT_HOURS."""
    with store.open(incident_id, TRIAGE_RECORD) as handle:
        record = json.loads(handle.read())
    return _tell_internal(store, settings, incident_id, "triage_alert",
                          {"triage": record, "alert": {"title": record["title"]}, "timed_out_hours": hours})


def pending_triages(store: EvidenceStore) -> list[dict[str, Any]]:
    """Triage records of incidents whose type nobody chose yet (no incident record, no decision)."""
    pending = []
    for incident_id in store.incident_ids():
        names = {item.name for item in store.manifest(incident_id)}
        if TRIAGE_RECORD in names and DECISION_RECORD not in names and "incident.json" not in names:
            with store.open(incident_id, TRIAGE_RECORD) as handle:
                pending.append(json.loads(handle.read()))
    return pending


def _tell_internal(store: EvidenceStore, settings: Settings, incident_id: str, template: str,
                   context: dict[str, Any]) -> NotificationRecord:
    """Render `template` (French, §14), send it to IRP_NOTIFY_INTERNAL, archive the message and its deliveries."""
    now = utcnow()
    rendered = render(settings.playbooks_dir / "templates", template, "fr",
                      {**context, "incident": {"id": incident_id}, "sent_at": now.isoformat()})
    record_id = f"N-{now:%Y%m%d%H%M%S}-{incident_id[-6:]}"
    recipients = list(settings.notify_internal)
    deliveries = (deliver(Message(rendered.subject, rendered.text, rendered.html, reference=f"{incident_id} {record_id}"),
                          recipients, settings) if recipients else
                  [Delivery(channel="none", recipient="internal", status="not_sent",
                            detail="not sent: no recipient configured for internal (IRP_NOTIFY_INTERNAL)")])
    status = delivery_status(deliveries)
    item = store.put(incident_id, f"notifications/triage/{template}.fr.md",
                     f"Subject: {rendered.subject}\n\n{rendered.text}".encode(),
                     content_type="text/markdown; charset=utf-8", source_system="irp")
    record = NotificationRecord(
        id=record_id, at=now, phase="triage", audience="internal", recipient="", template=template, language="fr",
        subject=rendered.subject, status=status, deliveries=deliveries, evidence=item.name,
        reason="; ".join(f"{d.recipient}: {d.status} {d.detail}".strip() for d in deliveries if d.status != "sent"),
    )
    store.put_json(incident_id, f"notifications/triage/{template}.fr.delivery.json", record.model_dump(mode="json"),
                   source_system="irp")
    return record

