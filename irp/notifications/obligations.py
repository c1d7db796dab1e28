"""Regulatory clocks: which notifications an incident calls for, to whom, and by when.

The rules (policy §7, §12; GDPR Art. 33, 34; NIS2 Art. 23), all counted from the awareness time:

    kind                when                                     to          deadline
    client              personal data, risk, a Client concerned  the Client  IRP_CLIENT_NOTICE_HOURS (§7, 33(2))
    gdpr_authority      personal data, risk, controller          cnil        72 h (Art. 33(1))
    data_subjects       personal data, high risk, controller     relay       IRP_CLIENT_NOTICE_HOURS (Art. 34)
    nis2_early_warning  significant incident (NIS2)              anssi       24 h (Art. 23(4)(a))
    nis2_notification   significant incident                     anssi       72 h (Art. 23(4)(b))
    nis2_final_report   significant incident                     anssi       1 month after the notification (d)
    service_recipients  significant, a Client, no §7 letter      the Client  IRP_CLIENT_NOTICE_HOURS (Art. 23(1))

`decide` returns the obligations and every decision with its reason (Art. 33(5): every breach is
documented, notified or not). Whether an obligation is met is never stored: `deadlines` reads it
from the notifications sent, whether by a run or from outside one (timeline events), so the
watch flow and `irp incidents deadlines` see the same thing.
"""

from __future__ import annotations

import calendar
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


def decide(
    incident: Incident,
    *,
    controller: bool,
    risk: bool,
    high_risk: bool,
    significant: bool,
    client_notice_hours: float,
    language: Literal["fr", "en"] = "fr",
    gdpr_authority: str = "cnil",
    nis2_authority: str = "anssi",
) -> tuple[list[Obligation], list[Decision]]:
    """The notifications `incident` calls for under these facts, and the reason for each decision."""
    aware = incident.aware_at
    prompt = aware + timedelta(hours=client_notice_hours)
    personal = incident.personal_data.involved
    clients = list(dict.fromkeys(incident.affected_clients))
    obligations: list[Obligation] = []
    decisions: list[Decision] = []

    def add(**fields: Any) -> None:
        obligations.append(Obligation(language=language, **fields))

    # §7 and Art. 33(2): the Client, controller of its data, hears from us first.
    rule = "client"
    if not personal:
        decisions.append(Decision(rule=rule, basis="Politique §7", due=False, why="no personal data involved"))
    elif not risk:
        decisions.append(Decision(rule=rule, basis="Politique §7", due=False,
                                  why="personal data involved, but no risk to people's rights and freedoms"))
    elif not clients:
        decisions.append(Decision(rule=rule, basis="Politique §7", due=False,
                                  why="no Client concerned: the data is Confluent Digital's own"))
    else:
        for client in clients:
            add(id=f"client:{client}", kind="client", audience="client", recipient=client,
                template="client_notification", basis="Politique §7 ; RGPD art. 33(2)", due_at=prompt,
                clock=f"{client_notice_hours:g} h after awareness (§7: dans les meilleurs délais)")
        decisions.append(Decision(rule=rule, basis="Politique §7 ; RGPD art. 33(2)", due=True,
                                  why=f"personal data at risk; Clients concerned: {', '.join(clients)}"))

    # Art. 33(1): the supervisory authority, within 72 hours, unless the breach is unlikely to be a risk.
    rule, basis = "gdpr_authority", "RGPD art. 33(1)"
    if not personal or not risk:
        why = "no personal data involved" if not personal else "unlikely to result in a risk (documented, Art. 33(5))"
        decisions.append(Decision(rule=rule, basis=basis, due=False, why=why))
    elif not controller:
        decisions.append(Decision(rule=rule, basis=basis, due=False,
                                  why="Confluent Digital is processor: the Client, controller, notifies the "
                                      "authority; we assist it (Art. 28(3)(f))"))
    else:
        add(id="gdpr_authority", kind="gdpr_authority", audience="authority", recipient=gdpr_authority,
            template="authority_notification", basis=basis, due_at=aware + timedelta(hours=72),
            clock="72 h after awareness")
        decisions.append(Decision(rule=rule, basis=basis, due=True, why="personal data breach likely to be a risk"))

    # Art. 34: the people themselves, when the risk is high.
    rule, basis = "data_subjects", "RGPD art. 34"
    if not personal or not high_risk:
        decisions.append(Decision(rule=rule, basis=basis, due=False, why="no high risk to the people concerned"))
    elif not controller:
        decisions.append(Decision(rule=rule, basis=basis, due=False,
                                  why="high risk, but the Client, controller, informs the people; the §7 "
                                      "letter says so"))
    else:
        for key in clients or ["*"]:
            add(id=f"data_subjects:{key}", kind="data_subjects", audience="data_subjects", recipient=key,
                template="data_subject_communication", basis=basis, due_at=prompt,
                clock=f"{client_notice_hours:g} h after awareness (Art. 34: sans retard injustifié)")
        decisions.append(Decision(rule=rule, basis=basis, due=True, why="high risk to the people concerned"))

    # NIS2 Art. 23: significant incidents, in three steps, to the CSIRT or competent authority.
    rule, basis = "nis2", "NIS2 art. 23"
    if not significant:
        decisions.append(Decision(rule=rule, basis=basis, due=False, why="not a significant incident (Art. 23(3))"))
    else:
        add(id="nis2_early_warning", kind="nis2_early_warning", audience="authority", recipient=nis2_authority,
            template="nis2_early_warning", basis="NIS2 art. 23(4)(a)", due_at=aware + timedelta(hours=24),
            clock="24 h after awareness")
        add(id="nis2_notification", kind="nis2_notification", audience="authority", recipient=nis2_authority,
            template="nis2_incident_notification", basis="NIS2 art. 23(4)(b)", due_at=aware + timedelta(hours=72),
            clock="72 h after awareness")
        add(id="nis2_final_report", kind="nis2_final_report", audience="authority", recipient=nis2_authority,
            template="nis2_final_report", basis="NIS2 art. 23(4)(d)", phase="final",
            due_at=add_months(aware + timedelta(hours=72), 1), after="nis2_notification",
            clock="1 month after the incident notification")
        told = {o.recipient for o in obligations if o.kind == "client"}
        for client in clients:
            if client not in told:
                add(id=f"service:{client}", kind="service_recipients", audience="client", recipient=client,
                    template="client_service_notice", basis="NIS2 art. 23(1)", due_at=prompt,
                    clock=f"{client_notice_hours:g} h after awareness (sans retard injustifié)")
        decisions.append(Decision(rule=rule, basis=basis, due=True, why="significant incident (Art. 23(3))"))
    return obligations, decisions


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
