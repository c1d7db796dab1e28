"""Regulatory clocks: which notifications are due, to whom, and by when, from the awareness time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from irp.models import Incident, IncidentType, NotificationRecord, PersonalData, Severity, TimelineEntry
from irp.notifications.obligations import add_months, deadlines, decide

AWARE = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


def incident(**changes) -> Incident:
    fields = dict(id="INC-20261120-ABCDEF", type=IncidentType.data_leak, severity=Severity.major, title="t",
                  detected_at=AWARE - timedelta(hours=3), aware_at=AWARE, affected_clients=["acme", "globex"],
                  personal_data=PersonalData(involved=True, categories=["contact"], approx_people=10))
    return Incident(**(fields | changes))


def decided(inc: Incident, **facts):
    args = dict(controller=True, risk=True, high_risk=False, significant=False, client_notice_hours=24) | facts
    return decide(inc, **args)


class TestDecide:
    def test_personal_data_at_risk_is_due_to_each_client_and_to_the_cnil_in_72_hours(self) -> None:
        obligations, _ = decided(incident())
        due = {o.id: o for o in obligations}
        assert set(due) == {"client:acme", "client:globex", "gdpr_authority"}
        assert due["gdpr_authority"].due_at == AWARE + timedelta(hours=72)  # from awareness, not detection
        assert due["gdpr_authority"].recipient == "cnil" and due["gdpr_authority"].basis == "RGPD art. 33(1)"
        assert due["client:acme"].due_at == AWARE + timedelta(hours=24)
        assert due["client:acme"].template == "client_notification"

    def test_client_notice_hours_set_the_client_deadline(self) -> None:
        obligations, _ = decided(incident(), client_notice_hours=4)
        assert {o.due_at for o in obligations if o.kind == "client"} == {AWARE + timedelta(hours=4)}

    def test_no_personal_data_and_not_significant_is_nothing_due_but_every_decision_is_documented(self) -> None:
        obligations, decisions = decided(incident(personal_data=PersonalData()))
        assert obligations == []
        assert {d.rule for d in decisions} == {"client", "gdpr_authority", "data_subjects", "nis2"}
        assert all(not d.due and d.why for d in decisions)

    def test_no_risk_means_no_authority_notification_but_a_documented_decision(self) -> None:
        obligations, decisions = decided(incident(), risk=False)
        assert obligations == []
        assert "Art. 33(5)" in next(d.why for d in decisions if d.rule == "gdpr_authority")

    def test_a_processor_tells_the_client_who_notifies_the_authority(self) -> None:
        obligations, decisions = decided(incident(), controller=False, high_risk=True)
        assert {o.kind for o in obligations} == {"client"}
        assert "processor" in next(d.why for d in decisions if d.rule == "gdpr_authority")

    def test_a_processor_instructed_by_its_clients_notifies_on_their_behalf(self) -> None:
        obligations, decisions = decided(incident(), controller=False, for_client=True, high_risk=True)
        due = {o.kind: o for o in obligations}
        assert {"client", "gdpr_authority", "data_subjects"} <= set(due)
        assert "pour le compte du Client" in due["gdpr_authority"].basis
        assert "pour le compte du Client" in due["data_subjects"].basis
        assert "IRP_GDPR_NOTIFY_FOR_CLIENT" in next(d.why for d in decisions if d.rule == "gdpr_authority")

    def test_high_risk_adds_the_data_subjects(self) -> None:
        obligations, _ = decided(incident(), high_risk=True)
        subjects = {o.id for o in obligations if o.kind == "data_subjects"}
        assert subjects == {"data_subjects:acme", "data_subjects:globex"}
        assert all(o.basis == "RGPD art. 34" for o in obligations if o.kind == "data_subjects")

    def test_nis2_significant_incident_has_24h_72h_and_one_month_deadlines(self) -> None:
        obligations, _ = decided(incident(personal_data=PersonalData()), significant=True)
        due = {o.id: o for o in obligations}
        assert due["nis2_early_warning"].due_at == AWARE + timedelta(hours=24)
        assert due["nis2_notification"].due_at == AWARE + timedelta(hours=72)
        assert due["nis2_final_report"].due_at == datetime(2026, 12, 23, 9, 30, tzinfo=UTC)
        assert due["nis2_final_report"].after == "nis2_notification"
        # Without personal data, the Clients are told about the service (Art. 23(1)), not by a §7 letter.
        assert {o.id for o in obligations if o.kind == "service_recipients"} == {"service:acme", "service:globex"}

    @pytest.mark.parametrize(("start", "months", "end"), [
        (datetime(2026, 1, 31, tzinfo=UTC), 1, datetime(2026, 2, 28, tzinfo=UTC)),
        (datetime(2028, 1, 31, tzinfo=UTC), 1, datetime(2028, 2, 29, tzinfo=UTC)),
        (datetime(2026, 12, 15, 8, tzinfo=UTC), 1, datetime(2027, 1, 15, 8, tzinfo=UTC)),
    ])
    def test_add_months_clamps_to_the_end_of_the_month(self, start, months, end) -> None:
        assert add_months(start, months) == end


def record(obligation: str, at: datetime, status: str = "sent", **extra) -> NotificationRecord:
    return NotificationRecord(id=f"N-{obligation}-{at:%H%M%S}", at=at, audience="authority", template="x",
                              subject="s", obligation=obligation, status=status, **extra)


class TestDeadlines:
    def test_open_then_missed_as_time_passes(self) -> None:
        obligations, _ = decided(incident())
        inc = incident(obligations=obligations)
        cnil = lambda now: next(d for d in deadlines(inc, now) if d.obligation.id == "gdpr_authority")  # noqa: E731
        assert cnil(AWARE + timedelta(hours=71)).status == "open"
        assert cnil(AWARE + timedelta(hours=71)).remaining == timedelta(hours=1)
        assert cnil(AWARE + timedelta(hours=73)).status == "missed"

    def test_met_by_a_sent_notification_and_late_when_after_the_deadline(self) -> None:
        obligations, _ = decided(incident())
        inc = incident(obligations=obligations, notifications=[
            record("client:acme", AWARE + timedelta(hours=2)),
            record("gdpr_authority", AWARE + timedelta(hours=80), late_reason="scope unknown until day 3"),
            record("client:globex", AWARE + timedelta(hours=1), status="failed")])
        status = {d.obligation.id: d for d in deadlines(inc, AWARE + timedelta(hours=90))}
        assert status["client:acme"].status == "met"
        assert status["gdpr_authority"].status == "met_late"
        assert status["gdpr_authority"].late_reason == "scope unknown until day 3"
        assert status["client:globex"].status == "missed"  # a failed delivery meets nothing
        assert status["client:globex"].last_attempt.startswith("failed")

    def test_notifications_sent_outside_the_run_count(self) -> None:
        obligations, _ = decided(incident())
        sent = record("gdpr_authority", AWARE + timedelta(hours=5))
        inc = incident(obligations=obligations, timeline=[TimelineEntry(
            at=sent.at, kind="notification", message="sent", data={"record": sent.model_dump(mode="json")})])
        assert next(d for d in deadlines(inc, AWARE + timedelta(hours=6))
                    if d.obligation.id == "gdpr_authority").status == "met"

    def test_the_nis2_final_report_is_due_one_month_after_the_incident_notification_was_sent(self) -> None:
        obligations, _ = decided(incident(personal_data=PersonalData()), significant=True)
        sent_at = AWARE + timedelta(hours=30)
        inc = incident(personal_data=PersonalData(), obligations=obligations,
                       notifications=[record("nis2_notification", sent_at)])
        final = next(d for d in deadlines(inc, sent_at) if d.obligation.id == "nis2_final_report")
        assert final.due_at == add_months(sent_at, 1) == datetime(2026, 12, 21, 15, 30, tzinfo=UTC)
