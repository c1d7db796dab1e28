"""Regulatory clocks end to end, with a controllable clock (time-machine) and a real SMTP server:
reminders and escalations by the deadline watch, `irp incidents deadlines`, late notifications."""

# ruff: noqa: F811  (pytest fixtures imported from notify_fixtures are parameters here)
from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from notify_fixtures import smtp_server, tls_cert  # noqa: F401 (fixtures)
from ruamel.yaml import YAML
from typer.testing import CliRunner

from flows.deadlines import watch_deadlines
from irp.cli import app
from irp.deadlines import check_deadlines
from irp.evidence import open_store
from irp.models import (
    ActionItem,
    Incident,
    IncidentStatus,
    IncidentType,
    NotificationRecord,
    PersonalData,
    PlaybookRef,
    Severity,
    Stage,
    Waiting,
)
from irp.notifications.obligations import decide
from irp.settings import get_settings

REPO = Path(__file__).resolve().parents[2]
AWARE = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
INTERNAL = ("security@confluent-digital.com", "dpo@confluent-digital.com")


@pytest.fixture
def configured(smtp_server, tls_cert, monkeypatch: pytest.MonkeyPatch):
    env = {
        "IRP_SMTP_URL": smtp_server.url,
        "IRP_SMTP_CA_BUNDLE": str(tls_cert.cert),
        "IRP_NOTIFY_AUTHORITIES": json.dumps({"cnil": ["cnil-filing@confluent-digital.com"],
                                              "anssi": ["anssi-filing@confluent-digital.com"]}),
        "IRP_REMINDER_LEAD_HOURS": "24,6,1",
        "IRP_ESCALATION_LEAD_HOURS": "2",
        "IRP_NOTIFY_RETRY_BASE_SECONDS": "0.05",
        "IRP_NOTIFY_RETRY_MAX_SECONDS": "0.1",
        "IRP_NOTIFY_REVIEW": "{}",  # these tests are about the clocks; tests/e2e/test_notifications.py holds for review
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield smtp_server
    get_settings.cache_clear()


def make_incident(store, aware: datetime = AWARE, significant: bool = False, **changes) -> Incident:
    fields = dict(
        id="INC-20261120-C10C4A", type=IncidentType.data_leak, severity=Severity.critical, title="Leak",
        detected_at=aware - timedelta(hours=1), aware_at=aware, affected_clients=[],
        personal_data=PersonalData(involved=True, categories=["contact"], approx_people=40),
        playbook=PlaybookRef(name="Fuite de données", version="1.0.0", policy_version="2026-05-13",
                             path="playbooks/data_leak.yaml", sha256="0" * 64))
    incident = Incident(**(fields | changes))
    obligations, _ = decide(incident, controller=True, risk=True, high_risk=False, significant=significant,
                            client_notice_hours=24)
    incident = incident.model_copy(update={"obligations": obligations})
    store.save_incident(incident)
    return incident


def watch(at: datetime):
    with time_machine.travel(at, tick=False):
        return check_deadlines(open_store(get_settings().evidence_url), get_settings())


def subjects(server, since: int = 0) -> list[str]:
    return [m.message["Subject"] for m in server.messages[since:]]


class TestWatch:
    def test_reminders_then_escalations_each_sent_once(self, configured) -> None:
        store = open_store(get_settings().evidence_url)
        make_incident(store)  # GDPR Art. 33: the CNIL within 72 h of awareness, nothing else
        assert watch(AWARE + timedelta(hours=10)).notices == []

        steps = [(48, "reminder", "24h"), (66.5, "reminder", "6h"), (70.5, "near", "near"), (73, "missed", "missed")]
        for hours, kind, key in steps:
            before = len(configured.messages)
            report = watch(AWARE + timedelta(hours=hours))
            assert [(n.obligation, n.kind, n.key, n.status) for n in report.notices] == \
                [("gdpr_authority", kind, key, "sent")], hours
            new = configured.messages[before:]
            assert sorted(r for m in new for r in m.rcpt_tos) == sorted(INTERNAL)  # security@ and dpo@ (§14)
            assert watch(AWARE + timedelta(hours=hours)).notices == []  # never twice
        assert watch(AWARE + timedelta(hours=71.5)).notices == []  # the 1 h reminder was covered by "near"
        assert watch(AWARE + timedelta(hours=100)).notices == []

        subject = configured.messages[-1].message["Subject"]
        body = configured.messages[-1].message.get_body(("plain",)).get_content()
        assert subject == "[IRP][ÉCHÉANCE DÉPASSÉE] INC-20261120-C10C4A gdpr_authority cnil"
        assert "motifs du retard" in body and "--late-reason" in body and "RGPD art. 33(1)" in body
        incident = store.load_incident("INC-20261120-C10C4A")
        kinds = [e.kind for e in incident.timeline if e.data.get("obligation") == "gdpr_authority"]
        assert kinds == ["reminder", "reminder", "escalation", "escalation"]
        names = {i.name for i in store.manifest(incident.id)}
        assert any(n.startswith("notifications/escalation/internal_escalation.fr") for n in names)

    def test_overdue_measures_are_reminded_once_and_a_late_stage_is_escalated(self, configured) -> None:
        store = open_store(get_settings().evidence_url)
        make_incident(store, status=IncidentStatus.containing, waiting=Waiting(stage=Stage.contain, since=AWARE),
                      actions=[ActionItem(id="A-1", title="Revoke the export token", owner="platform-oncall",
                                          stage=Stage.contain, due_at=AWARE + timedelta(hours=2))])
        assert watch(AWARE + timedelta(hours=1)).notices == []
        # the measure is past due; contain's target (critical: 4 h from detection, 1 h before awareness) is not
        overdue = watch(AWARE + timedelta(hours=2, minutes=30))
        assert [(n.kind, n.key, n.status) for n in overdue.notices] == [("overdue_measures", "measure:A-1", "sent")]
        mail = configured.messages[-1].message
        assert mail["Subject"] == "[IRP][Mesures en retard] INC-20261120-C10C4A"
        body = mail.get_body(("plain",)).get_content()
        assert "A-1 (contain, platform-oncall, overdue by 30 min): Revoke the export token" in body
        assert "irp actions close INC-20261120-C10C4A" in body
        late = watch(AWARE + timedelta(hours=3, minutes=5))
        assert [(n.kind, n.key) for n in late.notices] == [("stage_late", "stage:contain")]
        body = configured.messages[-1].message.get_body(("plain",)).get_content()
        assert "« contain » dépasse l'objectif" in body and "4h 00m after detection" in body
        assert "1 measure(s) open (A-1)" in body
        assert watch(AWARE + timedelta(hours=5)).notices == []  # each once

    def test_a_late_watch_sends_only_the_tightest_notice(self, configured) -> None:
        make_incident(open_store(get_settings().evidence_url))
        report = watch(AWARE + timedelta(hours=70.5))
        assert [n.kind for n in report.notices] == ["near"]
        assert len(configured.messages) == 2

    def test_nis2_clocks_24h_72h_then_one_month_after_the_notification(self, configured) -> None:
        store = open_store(get_settings().evidence_url)
        incident = make_incident(store, significant=True, personal_data=PersonalData())
        report = watch(AWARE + timedelta(hours=23.5))  # early warning: 24 h
        assert [(n.obligation, n.kind) for n in report.notices] == [("nis2_early_warning", "near")]
        sent_at = AWARE + timedelta(hours=50)
        records = [NotificationRecord(id=f"N-{i}", at=sent_at, audience="authority", template=o.template,
                                      subject="s", obligation=o.id, status="sent")
                   for i, o in enumerate(incident.obligations) if o.kind != "nis2_final_report"]
        store.save_incident(incident.model_copy(update={"notifications": records}))
        final_due = datetime(2026, 12, 22, 11, 0, tzinfo=UTC)  # one calendar month after the notification
        assert watch(final_due - timedelta(hours=25)).notices == []
        assert [(n.obligation, n.key) for n in watch(final_due - timedelta(hours=23)).notices] == \
            [("nis2_final_report", "24h")]

    def test_an_escalation_that_could_not_be_delivered_is_tried_again(self, configured, monkeypatch) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        monkeypatch.setenv("IRP_NOTIFY_INTERNAL", f"json://127.0.0.1:{port}/down")
        monkeypatch.setenv("IRP_NOTIFY_ALLOWLIST", "json://127.0.0.1:")
        get_settings.cache_clear()
        make_incident(open_store(get_settings().evidence_url))
        first = watch(AWARE + timedelta(hours=73))
        assert [(n.kind, n.status) for n in first.notices] == [("missed", "failed")]
        again = watch(AWARE + timedelta(hours=73, minutes=5))
        assert [(n.kind, n.status) for n in again.notices] == [("missed", "failed")]
        incident = open_store(get_settings().evidence_url).load_incident("INC-20261120-C10C4A")
        assert sum(e.kind == "escalation" for e in incident.timeline) == 2


runner = CliRunner()


class TestCli:
    def test_deadlines_lists_what_is_due_and_when(self, configured) -> None:
        make_incident(open_store(get_settings().evidence_url), significant=True)
        with time_machine.travel(AWARE + timedelta(hours=20), tick=False):
            result = runner.invoke(app, ["incidents", "deadlines"])
            as_json = json.loads(runner.invoke(app, ["incidents", "deadlines", "--json"]).stdout)
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert "nis2_early_warning" in lines[1] and "2026-11-21 09:00" in lines[1] and "in 4.0 h" in lines[1]
        assert {(r["obligation"], r["due_at"]) for r in as_json} == {
            ("nis2_early_warning", "2026-11-21T09:00:00+00:00"), ("gdpr_authority", "2026-11-23T09:00:00+00:00"),
            ("nis2_notification", "2026-11-23T09:00:00+00:00"), ("nis2_final_report", "2026-12-23T09:00:00+00:00")}

    def test_a_late_notification_goes_only_with_its_reasons(self, configured) -> None:
        store = open_store(get_settings().evidence_url)
        make_incident(store)
        late = AWARE + timedelta(hours=75)
        with time_machine.travel(late, tick=False):
            refused = runner.invoke(app, ["incidents", "notify", "INC-20261120-C10C4A", "gdpr_authority"])
            assert refused.exit_code == 1
            assert "late by 3.0 h: not sent without the reasons for the delay" in refused.output
            assert configured.to("cnil-filing@confluent-digital.com") == []
            missing = runner.invoke(app, ["incidents", "deadlines"]).stdout
            assert "reason for the delay: MISSING" in missing
            recorded = runner.invoke(app, ["incidents", "deadlines", "INC-20261120-C10C4A", "--obligation",
                                           "gdpr_authority", "--late-reason", "Périmètre établi au jour 3"])
            assert recorded.exit_code == 0, recorded.output
            sent = runner.invoke(app, ["incidents", "notify", "INC-20261120-C10C4A", "gdpr_authority"])
            assert sent.exit_code == 0, sent.output
            listed = runner.invoke(app, ["incidents", "deadlines", "--all"]).stdout
        [message] = configured.to("cnil-filing@confluent-digital.com")
        assert "Motifs du retard (article 33(1) du RGPD) : Périmètre établi au jour 3" in \
            message.message.get_body(("plain",)).get_content()
        assert "met_late" in listed and "reason: Périmètre établi au jour 3" in listed
        assert watch(late + timedelta(hours=1)).notices == []  # met: the watch is quiet

    def test_unknown_incident_and_obligation_are_one_line_errors(self, configured) -> None:
        make_incident(open_store(get_settings().evidence_url))
        result = runner.invoke(app, ["incidents", "notify", "INC-20261120-C10C4A", "nope"])
        assert result.exit_code == 1 and "valid: gdpr_authority" in result.output
        result = runner.invoke(app, ["incidents", "deadlines", "INC-20990101-000000"])
        assert result.exit_code == 1 and "no incident" in result.output
        assert "Traceback" not in result.output


def test_the_watch_is_deployed_every_five_minutes() -> None:
    deployments = YAML(typ="safe").load(REPO / "prefect.yaml")["deployments"]
    [watch_deployment] = [d for d in deployments if d["entrypoint"] == "flows/deadlines.py:watch_deadlines"]
    assert watch_deployment["schedules"] == [{"interval": 300, "active": True}]


@pytest.mark.usefixtures("prefect_server")
def test_the_watch_flow_runs_on_prefect(configured) -> None:
    from irp.models import utcnow

    make_incident(open_store(get_settings().evidence_url), aware=utcnow() - timedelta(hours=49))
    state = watch_deadlines(return_state=True)
    assert state.is_completed(), state.message
    report = state.result()
    assert [(n.obligation, n.kind, n.status) for n in report.notices] == [("gdpr_authority", "reminder", "sent")]
    assert len(configured.messages) == 2
