"""Notifications end to end: a real SMTP server (STARTTLS + AUTH) and a webhook receiver on loopback,
the allowlist, retries with backoff, escalation, and the incident flows sending what analyse found due."""

# ruff: noqa: F811  (pytest fixtures imported from notify_fixtures are parameters here)
from __future__ import annotations

import json
import re
import socket
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from lifecycle_fixtures import EVERYONE_AGREES, GATES_APPROVED
from notify_fixtures import SMTP_PASSWORD, smtp_server, tls_cert, webhook  # noqa: F401 (fixtures)
from pydantic import SecretStr
from typer.testing import CliRunner

from flows.declare import IncidentReport, declare_incident
from flows.incidents import INCIDENT_FLOWS
from irp.alerts import read_alert
from irp.cli import app
from irp.deadlines import check_deadlines
from irp.evidence import open_store
from irp.intake.routing import Router
from irp.models import IncidentStatus, IncidentType, StepStatus
from irp.notifications.channels import Message, deliver
from irp.notifications.obligations import deadlines, notifications_of
from irp.playbook.models import Routing
from irp.settings import Settings, get_settings

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "playbooks" / "samples"
INTERNAL = ["security@confluent-digital.com", "dpo@confluent-digital.com"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def settings_for(smtp, tls_cert, **changes) -> Settings:
    return Settings(**({"smtp_url": SecretStr(smtp.url), "smtp_ca_bundle": tls_cert.cert,
                        "notify_allowlist": ["confluent-digital.com", "acme.example", "json://127.0.0.1:"],
                        "notify_attempts": 3, "notify_retry_base_seconds": 0.05, "notify_retry_max_seconds": 0.1,
                        "notify_timeout_seconds": 5} | changes))


class TestEmail:
    def test_sent_over_starttls_with_auth_one_message_per_recipient(self, smtp_server, tls_cert) -> None:
        message = Message("Incident <b>x</b>", "Body <script>alert(1)</script>", html="<p>&lt;script&gt;</p>",
                          reference="INC-1 N-1")
        results = deliver(message, ["security@confluent-digital.com", "dpo@acme.example"],
                          settings_for(smtp_server, tls_cert))
        assert [(r.status, r.channel, r.attempts) for r in results] == [("sent", "email", 1)] * 2
        assert len(smtp_server.messages) == 2
        for received in smtp_server.messages:
            assert received.tls and received.login == "irp-mailer"
            assert len(received.rcpt_tos) == 1 and received.message["To"] == received.rcpt_tos[0]  # §12
            assert received.message["Subject"] == "Incident <b>x</b>"
            assert received.message["X-IRP-Reference"] == "INC-1 N-1"
            assert received.message.get_body(("plain",)).get_content().strip() == "Body <script>alert(1)</script>"

    def test_a_wrong_password_is_permanent_and_never_recorded(self, smtp_server, tls_cert) -> None:
        url = smtp_server.url.replace(SMTP_PASSWORD, "wrong-password-123")
        [result] = deliver(Message("s", "t"), ["security@confluent-digital.com"],
                           settings_for(smtp_server, tls_cert, smtp_url=SecretStr(url)))
        assert (result.status, result.attempts) == ("failed", 1)
        assert "authentication refused (535)" in result.detail
        assert "wrong-password-123" not in result.model_dump_json() and smtp_server.messages == []

    def test_an_untrusted_certificate_is_refused(self, smtp_server, tls_cert) -> None:
        [result] = deliver(Message("s", "t"), ["security@confluent-digital.com"],
                           settings_for(smtp_server, tls_cert, smtp_ca_bundle=None))
        assert result.status == "failed" and "certificate not trusted" in result.detail
        assert smtp_server.messages == []

    def test_a_temporary_refusal_is_retried_with_backoff(self, smtp_server, tls_cert) -> None:
        smtp_server.fail_next = 2
        [result] = deliver(Message("s", "t"), ["security@confluent-digital.com"], settings_for(smtp_server, tls_cert))
        assert (result.status, result.attempts, smtp_server.attempts) == ("sent", 3, 3)
        assert len(smtp_server.messages) == 1

    def test_still_refused_after_every_attempt_is_failed_not_lost(self, smtp_server, tls_cert) -> None:
        smtp_server.fail_next = 10
        [result] = deliver(Message("s", "t"), ["security@confluent-digital.com"], settings_for(smtp_server, tls_cert))
        assert (result.status, result.attempts) == ("failed", 3) and "451" in result.detail

    def test_nothing_leaves_for_an_address_outside_the_allowlist(self, smtp_server, tls_cert) -> None:
        targets = ["dpo@acme.example", "dpo@acme.example.evil.example", "x@evil.example", "dpo@ACME.example "]
        results = deliver(Message("s", "t"), targets, settings_for(smtp_server, tls_cert))
        assert [r.status for r in results] == ["sent", "refused", "refused"]  # the last is the first, deduplicated
        assert {r for m in smtp_server.messages for r in m.rcpt_tos} == {"dpo@acme.example"}


class TestWebhook:
    def test_delivered_to_the_local_receiver(self, webhook, smtp_server, tls_cert) -> None:
        [result] = deliver(Message("Subject line", "Text"), [webhook.url()], settings_for(smtp_server, tls_cert))
        assert (result.status, result.channel) == ("sent", "apprise")
        assert result.recipient == f"json://127.0.0.1:{webhook.port}/hook"
        [request] = webhook.requests
        assert request["path"] == "/hook"
        assert (request["body"]["title"], request["body"]["message"]) == ("Subject line", "Text")

    def test_an_endpoint_down_is_retried_then_failed(self, webhook, smtp_server, tls_cert) -> None:
        webhook.fail_next = 2
        [ok] = deliver(Message("s", "t"), [webhook.url()], settings_for(smtp_server, tls_cert))
        assert (ok.status, ok.attempts, webhook.attempts) == ("sent", 3, 3)
        down = f"json://127.0.0.1:{closed_port()}/hook"
        [failed] = deliver(Message("s", "t"), [down], settings_for(smtp_server, tls_cert))
        assert (failed.status, failed.attempts) == ("failed", 3) and failed.detail

    def test_a_chat_url_outside_the_allowlist_is_refused(self, webhook, smtp_server, tls_cert) -> None:
        settings = settings_for(smtp_server, tls_cert, notify_allowlist=[f"json://127.0.0.1:{webhook.port}/ok"])
        [result] = deliver(Message("s", "t"), [webhook.url("/other")], settings)
        assert result.status == "refused" and webhook.attempts == 0


@pytest.fixture
def configured(smtp_server, tls_cert, monkeypatch: pytest.MonkeyPatch):
    """The flows' settings: SMTP on loopback, recipients for acme-callcenter, the CNIL and ANSSI."""
    env = {
        "IRP_SMTP_URL": smtp_server.url,
        "IRP_SMTP_CA_BUNDLE": str(tls_cert.cert),
        "IRP_NOTIFY_CLIENTS": json.dumps({"acme-callcenter": ["dpo@acme.example"]}),
        "IRP_NOTIFY_AUTHORITIES": json.dumps({"cnil": ["cnil-filing@confluent-digital.com"],
                                              "anssi": ["anssi-filing@confluent-digital.com"]}),
        "IRP_NOTIFY_DATA_SUBJECTS": json.dumps({"*": ["comms@confluent-digital.com"]}),
        "IRP_NOTIFY_ALLOWLIST": "confluent-digital.com,dpo@acme.example",
        "IRP_NOTIFY_RETRY_BASE_SECONDS": "0.05",
        "IRP_NOTIFY_RETRY_MAX_SECONDS": "0.1",
        "IRP_NOTIFY_REVIEW": "{}",  # these tests are about delivery; TestReviewGate holds messages for review
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield smtp_server
    get_settings.cache_clear()


def run(incident_type: IncidentType, alert, **params):
    params.setdefault("decisions", EVERYONE_AGREES)  # people end each stage: the final letters go
    state = INCIDENT_FLOWS[incident_type](alert=alert, return_state=True, **params)
    assert state.is_completed(), state.message
    return state.result()


def stated_by_route(alert, *clients: str) -> dict:
    """The run parameters the intake passes when the route that matches `alert` states its Clients."""
    routing = Routing.model_validate({"version": 1, "routes": [
        {"name": "acme-dlp", "source": alert.source.value, "incident_type": "data_leak", "clients": list(clients)}]})
    return {"clients": Router(routing).route(alert).run_clients()}


@pytest.mark.usefixtures("prefect_server")
class TestFlows:
    def test_a_data_leak_notifies_client_cnil_anssi_and_people_and_archives_every_message(
            self, configured, evidence_root: Path) -> None:
        alert = read_alert(SAMPLES / "data_leak.json")
        labels = {**alert.labels, "data_categories": "call_recordings,identification,credentials"}  # high risk
        summary = run(IncidentType.data_leak, alert.model_copy(update={"labels": labels}),
                      **stated_by_route(alert, "acme-callcenter"))
        assert summary.status == IncidentStatus.closed and not summary.escalated
        incident = open_store(f"file://{evidence_root}").load_incident(summary.incident_id)
        kinds = {o.kind for o in incident.obligations}
        assert {"client", "gdpr_authority", "data_subjects", "nis2_early_warning", "nis2_notification",
                "nis2_final_report"} <= kinds
        assert [d.obligation.id for d in deadlines(incident, summary.stages[-1].ended_at) if d.is_open] == []

        client = configured.to("dpo@acme.example")
        assert [m.message["Subject"] for m in client] == [
            f"[Confluent Digital] Violation de données personnelles {summary.incident_id} — notification initiale",
            f"[Confluent Digital] Violation de données personnelles {summary.incident_id} — notification finale"]
        letter = client[0].message.get_body(("plain",)).get_content()
        for heading in ("Nature de l'incident", "Catégories de données concernées", "Impacts potentiels identifiés",
                        "Mesures correctives mises en œuvre", "Recommandations"):
            assert f"## {heading}" in letter
        assert "enregistrements d'appels" in letter and "call_recordings" not in letter  # French labels
        cnil = configured.to("cnil-filing@confluent-digital.com")
        assert len(cnil) == 1 and "RGPD, art. 33" in cnil[0].message["Subject"]
        assert "environ 12\u202f000 personnes" in cnil[0].message.get_body(("plain",)).get_content()
        anssi = [m.message["Subject"] for m in configured.to("anssi-filing@confluent-digital.com")]
        assert [s.split(" — ")[0] for s in anssi] == [
            "Alerte précoce NIS2 (art. 23(4)(a))", "Notification d'incident NIS2 (art. 23(4)(b))",
            "Rapport final NIS2 (art. 23(4)(d))"]
        assert len(configured.to("security@confluent-digital.com")) == 1  # the internal alert
        assert len(configured.to("comms@confluent-digital.com")) == 1  # Art. 34, relayed

        folder = evidence_root / summary.incident_id / "objects"
        records = [json.loads(p.read_text()) for p in folder.glob("notifications/*/*.delivery*.json")]
        assert records and all(r["status"] == "sent" for r in records)
        assert {d["recipient"] for r in records for d in r["deliveries"]} >= {"dpo@acme.example"}
        for r in records:
            assert (folder / r["evidence"]).read_text().startswith(f"Subject: {r['subject']}\n\n")
        assert (folder / "obligations" / "assessment.json").is_file()
        every_file = "".join(p.read_text(errors="replace") for p in (evidence_root / summary.incident_id).rglob("*")
                             if p.is_file())
        assert SMTP_PASSWORD not in every_file

    def test_a_mail_server_down_is_retried_escalated_and_the_run_goes_on(
            self, configured, evidence_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("IRP_SMTP_URL", f"smtp://127.0.0.1:{closed_port()}")
        get_settings.cache_clear()
        summary = run(IncidentType.data_leak, read_alert(SAMPLES / "data_leak.json"))
        assert summary.status == IncidentStatus.closed and summary.escalated
        incident = open_store(f"file://{evidence_root}").load_incident(summary.incident_id)
        failed = [n for n in incident.notifications if n.status == "failed"]
        assert failed and all(d.attempts == 4 for n in failed for d in n.deliveries)
        assert any(e.kind == "escalation" and "not delivered" in e.message for e in incident.timeline)
        assert {n.template for n in incident.notifications if n.phase == "escalation"} == {"internal_escalation"}
        assert all(d.is_open for d in deadlines(incident, incident.aware_at))  # nothing met: the watch follows up

    def test_recipients_never_come_from_the_alert(self, configured, evidence_root: Path) -> None:
        alert = read_alert(SAMPLES / "data_leak.json")
        alert = alert.model_copy(update={"labels": {**alert.labels, "tenant": "attacker@evil.example",
                                                    "notify": "attacker@evil.example"}})
        summary = run(IncidentType.data_leak, alert)
        assert all("evil" not in r for m in configured.messages for r in m.rcpt_tos)
        incident = open_store(f"file://{evidence_root}").load_incident(summary.incident_id)
        client = [n for n in incident.notifications if n.audience == "client"]
        assert client and all(n.status == "not_sent" and "no recipient configured" in n.reason for n in client)

    def test_nothing_configured_renders_archives_and_says_not_sent(self, evidence_root: Path, monkeypatch) -> None:
        monkeypatch.setenv("IRP_NOTIFY_REVIEW", "{}")
        get_settings.cache_clear()
        summary = run(IncidentType.data_leak, read_alert(SAMPLES / "data_leak.json"))
        assert all(s.status == StepStatus.completed for s in summary.stages) and not summary.escalated
        incident = open_store(f"file://{evidence_root}").load_incident(summary.incident_id)
        assert incident.notifications and {n.status for n in incident.notifications} == {"not_sent"}
        assert any("no channel configured" in d.detail for n in incident.notifications for d in n.deliveries)

    def test_an_outage_without_personal_data_tells_the_clients_about_the_service(
            self, configured, evidence_root: Path) -> None:
        alert = read_alert(SAMPLES / "service_unavailability.json")
        alert = alert.model_copy(update={"labels": {**alert.labels, "tenant": "acme-callcenter"}})
        summary = run(IncidentType.service_unavailability, alert, **stated_by_route(alert, "acme-callcenter"))
        subjects = [m.message["Subject"] for m in configured.to("dpo@acme.example")]
        assert subjects and all("Incident de service" in s for s in subjects)
        body = configured.to("dpo@acme.example")[0].message.get_body(("plain",)).get_content()
        assert "Aucune donnée personnelle" in body and "disponibilité du Service" in body
        assert summary.status == IncidentStatus.closed

    def test_an_injection_in_the_alert_stays_inert_in_the_mail(self, configured, evidence_root: Path) -> None:
        hostile = "Leak {{ 7 * 7 }} <script>alert(1)</script>\r\nBcc: attacker@evil.example\r\n\r\nforged body"
        alert = read_alert(SAMPLES / "data_leak.json")
        run(IncidentType.data_leak, alert.model_copy(update={"title": hostile, "description": hostile}),
            **stated_by_route(alert, "acme-callcenter"))
        [internal] = configured.to("security@confluent-digital.com")
        mail = internal.message
        assert mail["Bcc"] is None and "\n" not in mail["Subject"] and "\r" not in mail["Subject"]
        subject = re.sub(r"INC-\d{8}-[0-9A-F]{6}", "INC-id", mail["Subject"])  # a random id may hold "49"
        assert "{{ 7 * 7 }}" in subject and "49" not in subject
        html = mail.get_body(("html",)).get_content()
        assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert all("evil" not in r for m in configured.messages for r in m.rcpt_tos)


@pytest.mark.usefixtures("prefect_server")
class TestClientsNamedByAlerts:
    """A Client an alert names is told only once a person or a configured route vouches for it (§7, §12)."""

    @pytest.fixture
    def two_clients(self, configured, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("IRP_NOTIFY_CLIENTS", json.dumps({"acme-callcenter": ["dpo@acme.example"],
                                                             "globex": ["dpo@globex.example"]}))
        monkeypatch.setenv("IRP_NOTIFY_ALLOWLIST", "confluent-digital.com,dpo@acme.example,dpo@globex.example")
        get_settings.cache_clear()
        return configured

    def test_a_tenant_label_naming_another_client_is_held_not_mailed(self, two_clients, evidence_root: Path) -> None:
        lure = "Urgent: call +33 1 23 45 67 89 and give your admin password to restore your recordings"
        alert = read_alert(SAMPLES / "data_leak.json")
        alert = alert.model_copy(update={"title": lure, "labels": {**alert.labels, "tenant": "globex"}})
        summary = run(IncidentType.data_leak, alert)
        assert two_clients.to("dpo@globex.example") == [] and two_clients.to("dpo@acme.example") == []
        incident = open_store(f"file://{evidence_root}").load_incident(summary.incident_id)
        held = [n for n in incident.notifications if n.recipient == "globex"]
        assert held and {(n.status, n.hold) for n in held} == {("held", "unconfirmed_client")}
        letter = (evidence_root / summary.incident_id / "objects" / held[0].evidence).read_text()
        assert letter.startswith("Subject: [Confluent Digital] Violation de données personnelles")  # archived
        assert lure not in letter  # the alert's own title never reaches an external letter
        assert "awaiting confirmation of the affected Clients" in held[0].reason
        open_ids = [d.obligation.id for d in deadlines(incident, incident.aware_at) if d.is_open]
        assert "client:globex" in open_ids  # never counted as met
        [told] = [m for m in two_clients.to("security@confluent-digital.com")
                  if "Lettre au Client retenue" in m.message["Subject"]]
        body = told.message.get_body(("plain",)).get_content()
        assert f"irp incidents confirm-clients {incident.id} --clients globex" in body
        assert any(e.kind == "escalation" and "held until a responder confirms" in e.message for e in incident.timeline)

        # a responder checks and confirms: the letter may then go, from the command line
        runner = CliRunner()
        shown = runner.invoke(app, ["incidents", "show", incident.id])
        assert "clients    globex (alert step scope, NOT confirmed: letters held)" in shown.output
        confirmed = runner.invoke(app, ["incidents", "confirm-clients", incident.id, "--clients", "globex",
                                        "--by", "Alice Martin"])
        assert confirmed.exit_code == 0, confirmed.output
        assert f"irp incidents notify {incident.id} client:globex" in confirmed.output
        sent = runner.invoke(app, ["incidents", "notify", incident.id, "client:globex"])
        assert sent.exit_code == 0, sent.output
        assert len(two_clients.to("dpo@globex.example")) == 1

    def test_an_unknown_tenant_is_reported_never_mailed(self, two_clients, evidence_root: Path) -> None:
        alert = read_alert(SAMPLES / "data_leak.json")
        summary = run(IncidentType.data_leak, alert.model_copy(update={"labels": {**alert.labels, "tenant": "initech"}}))
        outside = {r for m in two_clients.messages for r in m.rcpt_tos} - {"security@confluent-digital.com",
                                                                           "dpo@confluent-digital.com",
                                                                           "cnil-filing@confluent-digital.com",
                                                                           "anssi-filing@confluent-digital.com",
                                                                           "comms@confluent-digital.com"}
        assert outside == set()
        reports = [m for m in two_clients.to("security@confluent-digital.com")
                   if "Client inconnu" in m.message["Subject"]]
        assert len(reports) == 1  # once per Client, not once per letter
        incident = open_store(f"file://{evidence_root}").load_incident(summary.incident_id)
        assert {n.hold for n in incident.notifications if n.recipient == "initech"} == {"unknown_client"}
        assert any("initech: not a configured Client" in e.message for e in incident.timeline)

    def test_a_client_the_route_states_is_mailed(self, two_clients, evidence_root: Path) -> None:
        alert = read_alert(SAMPLES / "data_leak.json")
        alert = alert.model_copy(update={"labels": {**alert.labels, "tenant": "globex"}})
        summary = run(IncidentType.data_leak, alert, **stated_by_route(alert, "globex"))
        assert len(two_clients.to("dpo@globex.example")) == 2  # initial and final
        incident = open_store(f"file://{evidence_root}").load_incident(summary.incident_id)
        [origin] = incident.client_origins
        assert (origin.client, origin.source, origin.confirmed, origin.by) == ("globex", "routing", True, "route acme-dlp")

    def test_a_client_a_responder_declares_is_mailed(self, two_clients, evidence_root: Path) -> None:
        report = IncidentReport(incident_type=IncidentType.data_leak, title="Recordings exported to a wrong tenant",
                                reporter="Dana Roy (Globex)", affected_clients=["globex"],
                                data_categories=["call_recordings", "identification"], approx_people=300)
        summary = declare_incident(report=report)
        [initial] = two_clients.to("dpo@globex.example")  # the final letter waits for the end of the response
        assert summary.waiting is not None and summary.waiting.stage.value == "contain"
        incident = open_store(f"file://{evidence_root}").load_incident(summary.incident_id)
        assert [(o.source, o.confirmed) for o in incident.client_origins] == [("responder", True)]


@pytest.mark.usefixtures("prefect_server")
class TestReviewGate:
    """No message to a Client or an authority leaves before its reviewer approves it (IRP_NOTIFY_REVIEW)."""

    @pytest.fixture
    def reviewed(self, configured, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("IRP_NOTIFY_REVIEW", json.dumps({"authority": ["dpo@confluent-digital.com"],
                                                             "client": ["dpo@confluent-digital.com"]}))
        get_settings.cache_clear()
        return configured

    def held_run(self, smtp) -> str:
        alert = read_alert(SAMPLES / "data_leak.json")
        summary = run(IncidentType.data_leak, alert, decisions=GATES_APPROVED, **stated_by_route(alert, "acme-callcenter"))
        assert smtp.to("dpo@acme.example") == [] and smtp.to("cnil-filing@confluent-digital.com") == []
        return summary.incident_id

    def test_external_messages_wait_for_the_reviewer_who_is_told(self, reviewed, evidence_root: Path) -> None:
        incident_id = self.held_run(reviewed)
        incident = open_store(f"file://{evidence_root}").load_incident(incident_id)
        held = {n.obligation: n for n in incident.notifications if n.hold == "review"}
        assert {"client:acme-callcenter", "gdpr_authority"} <= set(held)
        assert all(n.status == "held" and not n.deliveries[0].status == "sent" for n in held.values())
        told = [m for m in reviewed.to("dpo@confluent-digital.com") if "Message à relire" in m.message["Subject"]]
        assert told and f"irp notifications approve {incident_id}" in told[0].message.get_body(("plain",)).get_content()
        open_ids = [d.obligation.id for d in deadlines(incident, incident.aware_at) if d.is_open]
        assert "gdpr_authority" in open_ids  # held is not met

    def test_approval_from_the_cli_sends_exactly_one_message_per_recipient(self, reviewed, evidence_root: Path) -> None:
        incident_id = self.held_run(reviewed)
        shown = CliRunner().invoke(app, ["notifications", "review", incident_id, "client:acme-callcenter"])
        assert shown.exit_code == 0, shown.output
        assert "deadline" in shown.output and f"Subject: [Confluent Digital] Violation de données personnelles {incident_id}" \
            in shown.output and "Mesures prises" in shown.output
        rewritten = "Les identifiants utilisés ont été révoqués ; l'export est suspendu."
        approved = CliRunner().invoke(app, ["notifications", "approve", incident_id, "client:acme-callcenter",
                                            "--by", "Claire Petit (DPO)", "--edit", f"measures={rewritten}"])
        assert approved.exit_code == 0, approved.output
        [letter] = reviewed.to("dpo@acme.example")
        assert letter.message["Subject"].startswith("[Confluent Digital] Violation de données personnelles")
        body = letter.message.get_body(("plain",)).get_content()
        assert rewritten in body and "Mesures prises" not in body  # the reviewer's words replace the list
        bad = CliRunner().invoke(app, ["notifications", "approve", incident_id, "gdpr_authority", "--by", "C",
                                       "--edit", "subject=x"])
        assert bad.exit_code == 1 and "editable parts: nature, measures, recommendations" in bad.output
        again = CliRunner().invoke(app, ["notifications", "approve", incident_id, "client:acme-callcenter",
                                         "--by", "Claire Petit (DPO)"])
        assert again.exit_code == 1 and "already sent" in again.output
        assert len(reviewed.to("dpo@acme.example")) == 1 and reviewed.to("cnil-filing@confluent-digital.com") == []
        store = open_store(f"file://{evidence_root}")
        incident = store.load_incident(incident_id)
        met = {d.obligation.id: d.status for d in deadlines(incident, incident.aware_at)}
        assert met["client:acme-callcenter"] == "met" and met["gdpr_authority"] == "open"
        sent = [n for n in notifications_of(incident) if n.status == "sent" and n.audience == "client"]
        assert [n.reviewed_by for n in sent] == ["Claire Petit (DPO)"]
        acts = [e.details["act"] for e in store.custody(incident_id) if e.event == "audit"]
        assert "notification_approved" in acts

    def test_postpone_is_recorded_and_the_watch_escalates_near_the_deadline(self, reviewed, evidence_root: Path) -> None:
        incident_id = self.held_run(reviewed)
        bad = CliRunner().invoke(app, ["notifications", "postpone", incident_id, "gdpr_authority", "--by", "Claire",
                                       "--reason", " "])
        assert bad.exit_code == 1 and "say why" in bad.output
        ok = CliRunner().invoke(app, ["notifications", "postpone", incident_id, "gdpr_authority", "--by", "Claire",
                                      "--reason", "numbers being checked with the Client"])
        assert ok.exit_code == 0, ok.output
        store = open_store(f"file://{evidence_root}")
        incident = store.load_incident(incident_id)
        assert any(e.kind == "notification_postponed" and "numbers being checked" in e.message for e in incident.timeline)
        due = next(o.due_at for o in incident.obligations if o.id == "gdpr_authority")
        before = len(reviewed.messages)
        with time_machine.travel(due - timedelta(minutes=30), tick=False):
            report = check_deadlines(store, get_settings())
        near = [n for n in report.notices if n.obligation == "gdpr_authority"]
        assert near and near[0].kind == "near"
        [escalation] = [m for m in reviewed.messages[before:] if "gdpr_authority" in m.message["Subject"]
                        and "dpo@confluent-digital.com" in m.rcpt_tos]
        assert "held for review" in escalation.message.get_body(("plain",)).get_content()  # why it has not gone
