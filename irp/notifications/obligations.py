"""Regulatory clocks: which notifications an incident calls for, to whom, and by when.

The rules (policy §7, §12; GDPR Art. 33, 34; NIS2 Art. 23), all counted from the awareness time:

    kind                when                                     to          deadline
    client              personal data, risk, a Client concerned  the Client  IRP_CLIENT_NOTICE_HOURS (§7, 33(2))
    gdpr_authority      personal data, risk, controller (*)      cnil        72 h (Art. 33(1))
    data_subjects       personal data, high risk, controller (*) relay       IRP_CLIENT_NOTICE_HOURS (Art. 34)
    nis2_early_warning  significant incident (NIS2)              anssi       24 h (Art. 23(4)(a))
    nis2_notification   significant incident                     anssi       72 h (Art. 23(4)(b))
    nis2_final_report   significant incident                     anssi       1 month after the notification (d)
    service_recipients  significant, a Client, no §7 letter      the Client  IRP_CLIENT_NOTICE_HOURS (Art. 23(1))

(*) or processor instructed by its Clients to do it on their behalf (IRP_GDPR_NOTIFY_FOR_CLIENT, Art. 28(3)(f)).

`decide` returns the obligations and every decision with its reason (Art. 33(5): every breach is
documented, notified or not). Whether an obligation is met is never stored: `deadlines` reads it
from the notifications sent, whether by a run or from outside one (timeline events), so the
watch flow and `irp incidents deadlines` see the same thing.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from irp.models import Incident, NotificationRecord, Obligation, TimelineEntry

__all__ = ["Deadline", "Decision", "add_months", "deadlines", "decide", "late_reasons", "notices_sent",
           "notifications_of"]

MET = ("sent", "partial")


class Decision(BaseModel):
    """One rule applied to the incident: due or not, and why (kept as evidence, Art. 33(5))."""

    rule: str
    basis: str
    due: bool
    why: str


def add_months(moment: datetime, months: int) -> datetime:
    """`moment` plus calendar months, the day clamped to the month's last (31 Jan + 1 = 28/29 Feb)."""
    month0 = moment.month - 1 + months
    year, month = moment.year + month0 // 12, month0 % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


@dataclass(frozen=True)
class _Facts:
    """What the rules look at: the incident's facts and the configuration's clocks and authorities."""

    aware: datetime
    prompt: datetime  # awareness + the Client notice delay
    personal: bool
    clients: list[str]
    controller: bool
    for_client: bool  # processor instructed to notify and inform on the Client's behalf
    risk: bool
    high_risk: bool
    significant: bool
    hours: float
    language: str
    gdpr_authority: str
    nis2_authority: str

    def obligation(self, **fields: Any) -> Obligation:
        return Obligation(language=self.language, **fields)


def _client_rule(f: _Facts) -> tuple[list[Obligation], Decision]:
    """§7 and Art. 33(2): the Client, controller of its data, hears from us first."""
    rule = "client"
    if not f.personal:
        return [], Decision(rule=rule, basis="Politique §7", due=False, why="no personal data involved")
    if not f.risk:
        return [], Decision(rule=rule, basis="Politique §7", due=False,
                            why="personal data involved, but no risk to people's rights and freedoms")
    if not f.clients:
        return [], Decision(rule=rule, basis="Politique §7", due=False,
                            why="no Client concerned: the data is Confluent Digital's own")
    found = [f.obligation(id=f"client:{client}", kind="client", audience="client", recipient=client,
                          template="client_notification", basis="Politique §7 ; RGPD art. 33(2)", due_at=f.prompt,
                          clock=f"{f.hours:g} h after awareness (§7: dans les meilleurs délais)")
             for client in f.clients]
    return found, Decision(rule=rule, basis="Politique §7 ; RGPD art. 33(2)", due=True,
                           why=f"personal data at risk; Clients concerned: {', '.join(f.clients)}")


def _gdpr_authority_rule(f: _Facts) -> tuple[list[Obligation], Decision]:
    """Art. 33(1): the supervisory authority, within 72 hours, unless the breach is unlikely to be a risk."""
    rule, basis = "gdpr_authority", "RGPD art. 33(1)"
    if not f.personal or not f.risk:
        why = "no personal data involved" if not f.personal else "unlikely to result in a risk (documented, Art. 33(5))"
        return [], Decision(rule=rule, basis=basis, due=False, why=why)
    if not f.controller and not f.for_client:
        return [], Decision(rule=rule, basis=basis, due=False,
                            why="Confluent Digital is processor: the Client, controller, notifies the "
                                "authority; we assist it (Art. 28(3)(f))")
    if not f.controller:
        basis = "RGPD art. 33(1) ; art. 28(3)(f), pour le compte du Client"
    found = [f.obligation(id="gdpr_authority", kind="gdpr_authority", audience="authority",
                          recipient=f.gdpr_authority, template="authority_notification", basis=basis,
                          due_at=f.aware + timedelta(hours=72), clock="72 h after awareness")]
    why = "personal data breach likely to be a risk" + ("" if f.controller else "; notified on the Client's "
                                                        "behalf, as instructed (IRP_GDPR_NOTIFY_FOR_CLIENT)")
    return found, Decision(rule=rule, basis=basis, due=True, why=why)


def _data_subjects_rule(f: _Facts) -> tuple[list[Obligation], Decision]:
    """Art. 34: the people themselves, when the risk is high."""
    rule, basis = "data_subjects", "RGPD art. 34"
    if not f.personal or not f.high_risk:
        return [], Decision(rule=rule, basis=basis, due=False, why="no high risk to the people concerned")
    if not f.controller and not f.for_client:
        return [], Decision(rule=rule, basis=basis, due=False,
                            why="high risk, but the Client, controller, informs the people; the §7 letter says so")
    if not f.controller:
        basis = "RGPD art. 34 ; art. 28(3)(f), pour le compte du Client"
    found = [f.obligation(id=f"data_subjects:{key}", kind="data_subjects", audience="data_subjects", recipient=key,
                          template="data_subject_communication", basis=basis, due_at=f.prompt,
                          clock=f"{f.hours:g} h after awareness (Art. 34: sans retard injustifié)")
             for key in f.clients or ["*"]]
    return found, Decision(rule=rule, basis=basis, due=True, why="high risk to the people concerned")


def _nis2_rule(f: _Facts, told: set[str]) -> tuple[list[Obligation], Decision]:
    """NIS2 Art. 23: significant incidents, in three steps, to the CSIRT or competent authority; the service's
    recipients (Clients not `told` already) without undue delay."""
    rule, basis = "nis2", "NIS2 art. 23"
    if not f.significant:
        return [], Decision(rule=rule, basis=basis, due=False, why="not a significant incident (Art. 23(3))")
    found = [
        f.obligation(id="nis2_early_warning", kind="nis2_early_warning", audience="authority",
                     recipient=f.nis2_authority, template="nis2_early_warning", basis="NIS2 art. 23(4)(a)",
                     due_at=f.aware + timedelta(hours=24), clock="24 h after awareness"),
        f.obligation(id="nis2_notification", kind="nis2_notification", audience="authority",
                     recipient=f.nis2_authority, template="nis2_incident_notification", basis="NIS2 art. 23(4)(b)",
                     due_at=f.aware + timedelta(hours=72), clock="72 h after awareness"),
        f.obligation(id="nis2_final_report", kind="nis2_final_report", audience="authority",
                     recipient=f.nis2_authority, template="nis2_final_report", basis="NIS2 art. 23(4)(d)",
                     phase="final", due_at=add_months(f.aware + timedelta(hours=72), 1), after="nis2_notification",
                     clock="1 month after the incident notification"),
    ]
    found += [f.obligation(id=f"service:{client}", kind="service_recipients", audience="client", recipient=client,
                           template="client_service_notice", basis="NIS2 art. 23(1)", due_at=f.prompt,
                           clock=f"{f.hours:g} h after awareness (sans retard injustifié)")
              for client in f.clients if client not in told]
    return found, Decision(rule=rule, basis=basis, due=True, why="significant incident (Art. 23(3))")


def decide(
    incident: Incident,
    *,
    controller: bool,
    risk: bool,
    for_client: bool = False,
    high_risk: bool,
    significant: bool,
    client_notice_hours: float,
    language: Literal["fr", "en"] = "fr",
    gdpr_authority: str = "cnil",
    nis2_authority: str = "anssi",
) -> tuple[list[Obligation], list[Decision]]:
    """The notifications `incident` calls for under these facts, and the reason for each decision."""
    facts = _Facts(aware=incident.aware_at, prompt=incident.aware_at + timedelta(hours=client_notice_hours),
                   personal=incident.personal_data.involved, clients=list(dict.fromkeys(incident.affected_clients)),
                   controller=controller, for_client=for_client, risk=risk, high_risk=high_risk, significant=significant,
                   hours=client_notice_hours, language=language, gdpr_authority=gdpr_authority,
                   nis2_authority=nis2_authority)
    obligations: list[Obligation] = []
    decisions: list[Decision] = []
    for rule in (_client_rule, _gdpr_authority_rule, _data_subjects_rule):
        found, decision = rule(facts)
        obligations += found
        decisions.append(decision)
    found, decision = _nis2_rule(facts, {o.recipient for o in obligations if o.kind == "client"})
    return obligations + found, [*decisions, decision]


def notifications_of(incident: Incident) -> list[NotificationRecord]:
    """Every notification of the incident: those of the runs and those sent from outside (events)."""
    found = {n.id: n for n in incident.notifications}
    for entry in incident.timeline:
        record = entry.data.get("record") if entry.kind == "notification" else None
        if isinstance(record, dict) and record.get("id") not in found:
            parsed = NotificationRecord.model_validate(record)
            found[parsed.id] = parsed
    return sorted(found.values(), key=lambda n: n.at)


def _events(incident: Incident, kinds: tuple[str, ...], obligation_id: str) -> list[TimelineEntry]:
    return [e for e in incident.timeline if e.kind in kinds and e.data.get("obligation") == obligation_id]


def late_reasons(incident: Incident, obligation_id: str) -> list[str]:
    """Reasons for a delay recorded for an obligation (`irp incidents deadlines --late-reason`)."""
    return [str(e.data.get("reason", "")) for e in _events(incident, ("late_reason",), obligation_id)
            if e.data.get("reason")]


def notices_sent(incident: Incident, obligation_id: str) -> set[str]:
    """Reminder and escalation keys already sent for an obligation (e.g. 24h, near, missed)."""
    keys: set[str] = set()
    for entry in _events(incident, ("reminder", "escalation"), obligation_id):
        keys.update(entry.data.get("keys") or [])
    return keys


class Deadline(BaseModel):
    """An obligation as it stands at `now`."""

    incident_id: str
    obligation: Obligation
    due_at: datetime
    status: Literal["open", "missed", "met", "met_late"]
    met_at: datetime | None = None
    notification: str | None = Field(None, description="Id of the notification that met it.")
    last_attempt: str = Field("", description="Status and reason of the latest attempt that did not meet it.")
    late_reason: str = ""
    remaining: timedelta = Field(..., description="Time left until the deadline (negative when past).")

    @property
    def is_open(self) -> bool:
        return self.status in ("open", "missed")


def deadlines(incident: Incident, now: datetime) -> list[Deadline]:
    """Every obligation of `incident` with its effective deadline and status at `now`."""
    sent = notifications_of(incident)
    met: dict[str, NotificationRecord] = {}
    last: dict[str, NotificationRecord] = {}
    for record in sent:
        if record.obligation:
            last[record.obligation] = record
            if record.status in MET and record.obligation not in met:
                met[record.obligation] = record
    out: list[Deadline] = []
    for obligation in incident.obligations:
        due = obligation.due_at
        if obligation.after and obligation.after in met:  # the clock restarts when the earlier step is sent
            due = add_months(met[obligation.after].at, 1)
        done = met.get(obligation.id)
        reasons = late_reasons(incident, obligation.id)
        attempt = last.get(obligation.id)
        if done:
            status = "met_late" if done.at > due else "met"
        else:
            status = "missed" if now > due else "open"
        out.append(Deadline(
            incident_id=incident.id,
            obligation=obligation,
            due_at=due,
            status=status,
            met_at=done.at if done else None,
            notification=done.id if done else None,
            last_attempt="" if done or attempt is None else f"{attempt.status}: {attempt.reason}".rstrip(": "),
            late_reason=(done.late_reason if done and done.late_reason else "; ".join(reasons)),
            remaining=due - now,
        ))
    return out
