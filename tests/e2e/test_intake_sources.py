"""The intake over real HTTP: every source in its real shape, every authentication method, bad input.

One `irp webhook` process (module scope) against the session's Prefect server, with the incident
deployments applied: runs are created and wait Scheduled, which is what these tests look at.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from intake_harness import (
    PD_SECRET,
    REPO,
    SECRET_NEW,
    SECRET_OLD,
    TOPIC,
    Intake,
    bearer,
    flow_runs_for,
    intake_env,
    make_intake,
    pagerduty_headers,
    sample,
    sns_pki_server,
    standard_webhook_headers,
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def sns_pki(tmp_path_factory: pytest.TempPathFactory):
    with sns_pki_server(tmp_path_factory.mktemp("sns-pki")) as pki:
        yield pki


@pytest.fixture(scope="module")
def intake(deployments: str, sns_pki, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("intake-sources")
    service = make_intake(
        tmp, deployments,
        IRP_WEBHOOK_SECRET=f"{SECRET_OLD} {SECRET_NEW}",
        IRP_PAGERDUTY_SECRET=PD_SECRET,
        IRP_SNS_TOPIC_ARNS=TOPIC,
        IRP_SNS_HOST_PATTERN=r"^127\.0\.0\.1:\d+$",
        IRP_SNS_CA_BUNDLE=str(sns_pki.ca_file),
        IRP_EVIDENCE_URL=f"file://{tmp / 'evidence'}",
    ).start()
    service.evidence = tmp / "evidence"
    yield service
    service.stop()


def _unique(doc: dict) -> dict:
    """The sample with fresh fingerprints and tenants, so tests do not join each other's incidents."""
    doc = copy.deepcopy(doc)
    for alert in doc.get("alerts", []):
        alert["fingerprint"] = uuid.uuid4().hex[:16]
        alert["labels"]["tenant"] = alert["labels"]["service"] = f"t-{alert['fingerprint']}"
    return doc


def _post(intake: Intake, path: str, body: bytes | dict, headers: dict) -> httpx.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{intake.url}{path}", content=data, headers=headers, timeout=30)


def _wait_run(intake: Intake, delivery_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = httpx.get(f"{intake.url}/deliveries/{delivery_id}", headers=bearer(), timeout=10).json()
        if all(a["flow_run_id"] for a in status["alerts"]):
            return status
        time.sleep(0.3)
    raise AssertionError(f"no flow run for delivery {delivery_id}: {intake.health()}")


class TestAlertmanager:
    def test_alert_starts_one_run_with_the_routed_parameters(self, intake: Intake) -> None:
        doc = _unique(sample("alertmanager.json"))
        response = _post(intake, "/alerts/alertmanager", doc, bearer())
        assert response.status_code == 202, response.text
        [outcome] = response.json()["alerts"]
        assert (outcome["outcome"], outcome["deduplicated"], outcome["incident_type"], outcome["severity_hint"]) == (
            "new_incident", False, "account_compromise", "major")
        status = _wait_run(intake, response.json()["delivery_id"])
        [run] = flow_runs_for({doc["alerts"][0]["fingerprint"]})
        assert str(run.id) == status["alerts"][0]["flow_run_id"]
        assert status["alerts"][0]["ui_url"].endswith(f"/runs/flow-run/{run.id}")
        assert run.parameters["incident_id"] == outcome["incident_id"]
        assert run.parameters["severity_hint"] == "major"
        assert run.parameters["alert"]["title"] == doc["alerts"][0]["annotations"]["summary"]
        assert run.state.is_scheduled()
        assert run.name == f"{outcome['incident_id']} account_compromise"

    def test_repeats_and_resolution_join_the_incident_timeline(self, intake: Intake) -> None:
        doc = _unique(sample("alertmanager.json"))
        first = _post(intake, "/alerts/alertmanager", doc, bearer()).json()["alerts"][0]
        for _ in range(3):
            again = _post(intake, "/alerts/alertmanager", doc, bearer()).json()["alerts"][0]
            assert (again["outcome"], again["deduplicated"], again["incident_id"]) == (
                "joined", True, first["incident_id"])
        resolved = copy.deepcopy(doc)
        resolved["status"] = resolved["alerts"][0]["status"] = "resolved"
        resolved["alerts"][0]["endsAt"] = "2026-11-20T09:44:03Z"
        outcome = _post(intake, "/alerts/alertmanager", resolved, bearer()).json()["alerts"][0]
        assert (outcome["outcome"], outcome["incident_id"]) == ("resolved", first["incident_id"])
        intake.wait_drained()
        assert len(flow_runs_for({doc["alerts"][0]["fingerprint"]})) == 1
        events = [json.loads(line) for line in
                  (intake.evidence / first["incident_id"] / "events.jsonl").read_text().splitlines()]
        assert sum(e["data"]["count"] for e in events if e["data"]["event"] == "repeat") == 3
        assert [e["message"] for e in events if e["data"]["event"] == "resolved"] == [
            "alertmanager alert resolved: 312 failed logins in 5 minutes for tenant acme-callcenter"]


def test_grafana(intake: Intake) -> None:
    doc = _unique(sample("grafana.json"))
    response = _post(intake, "/alerts/grafana", doc, bearer())
    assert response.status_code == 202
    assert response.json()["alerts"][0]["incident_type"] == "service_unavailability"


class TestStandardWebhooks:
    def _body(self) -> bytes:
        doc = sample("generic.json")
        doc["fingerprint"] = uuid.uuid4().hex
        return json.dumps(doc).encode()

    @pytest.mark.parametrize("secrets", [[SECRET_OLD], [SECRET_NEW], [SECRET_OLD, SECRET_NEW]])
    def test_rotation(self, intake: Intake, secrets: list[str]) -> None:
        body = self._body()
        response = _post(intake, "/alerts/generic", body,
                         standard_webhook_headers(body, secrets, f"msg_{uuid.uuid4().hex}"))
        assert response.status_code == 202, response.text
        assert response.json()["alerts"][0]["incident_type"] == "data_leak"

    def test_replay_rejected(self, intake: Intake) -> None:
        body = self._body()
        headers = standard_webhook_headers(body, [SECRET_NEW], f"msg_{uuid.uuid4().hex}")
        assert _post(intake, "/alerts/generic", body, headers).status_code == 202
        replay = _post(intake, "/alerts/generic", body, headers)
        assert (replay.status_code, replay.json()) == (401, {"detail": "unauthenticated", "errors": []})

    def test_every_failure_looks_the_same(self, intake: Intake) -> None:
        body = self._body()
        old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=6)
        wrong_secret = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="
        cases = [
            standard_webhook_headers(body, [SECRET_NEW], "msg_old", at=old),
            standard_webhook_headers(body, [wrong_secret], "msg_wrong"),
            standard_webhook_headers(body + b" ", [SECRET_NEW], "msg_tampered"),
            {"content-type": "application/json"},
            bearer("not-the-token"),
        ]
        answers = {(r.status_code, r.text) for r in (_post(intake, "/alerts/generic", body, h) for h in cases)}
        assert answers == {(401, '{"detail":"unauthenticated","errors":[]}')}


class TestPagerDuty:
    def test_lifecycle(self, intake: Intake) -> None:
        incident = f"Q{uuid.uuid4().hex[:12].upper()}"
        docs = {}
        for name in ("triggered", "annotated", "resolved"):
            doc = sample(f"pagerduty-{name}.json")
            doc["event"]["id"] = uuid.uuid4().hex
            data = doc["event"]["data"]
            data.get("incident", data)["id"] = incident
            docs[name] = json.dumps(doc).encode()
        answers = {}
        for name, body in docs.items():
            response = _post(intake, "/alerts/pagerduty", body, pagerduty_headers(body, ["retired", PD_SECRET]))
            assert response.status_code == 202, response.text
            answers[name] = response.json()["alerts"][0]
        assert answers["triggered"]["outcome"] == "new_incident"
        assert answers["triggered"]["severity_hint"] == "major"
        assert (answers["annotated"]["outcome"], answers["resolved"]["outcome"]) == ("update", "resolved")
        assert len({a["incident_id"] for a in answers.values()}) == 1
        resent = _post(intake, "/alerts/pagerduty", docs["triggered"], pagerduty_headers(docs["triggered"],
                                                                                          [PD_SECRET]))
        assert resent.status_code == 202 and resent.json()["repeat_delivery"] is True
        intake.wait_drained()
        assert len(flow_runs_for({f"pd-{incident}"})) == 1

    def test_bad_signature(self, intake: Intake) -> None:
        body = json.dumps(sample("pagerduty-triggered.json")).encode()
        assert _post(intake, "/alerts/pagerduty", body, pagerduty_headers(body, ["other"])).status_code == 401
        assert _post(intake, "/alerts/pagerduty", body, pagerduty_headers(body + b"\n", [PD_SECRET])).status_code \
            == 401


class TestSns:
    def _notification(self, sns_pki, version: str = "2") -> dict:
        doc = sample("sns-cloudwatch.json")
        doc["MessageId"] = str(uuid.uuid4())
        message = json.loads(doc["Message"])
        message["AlarmName"] = f"S3-Public-{uuid.uuid4().hex[:8]}"
        doc["Message"] = json.dumps(message)
        return sns_pki.sign(doc, version)

    def test_subscription_confirmation_is_confirmed(self, intake: Intake, sns_pki) -> None:
        doc = sample("sns-subscription-confirmation.json")
        token = uuid.uuid4().hex
        doc.update(Token=token, SubscribeURL=sns_pki.subscribe_url(token), MessageId=str(uuid.uuid4()))
        response = _post(intake, "/alerts/sns", sns_pki.sign(doc, "1"), {"content-type": "text/plain"})
        assert response.status_code == 202, response.text
        deadline = time.monotonic() + 30
        while not any(token in path for path in sns_pki.confirmations):
            assert time.monotonic() < deadline, intake.health()
            time.sleep(0.2)

    @pytest.mark.parametrize("version", ["1", "2"])
    def test_signed_cloudwatch_alarm(self, intake: Intake, sns_pki, version: str) -> None:
        doc = self._notification(sns_pki, version)
        response = _post(intake, "/alerts/sns", doc, {"content-type": "text/plain; charset=UTF-8"})
        assert response.status_code == 202, response.text
        [outcome] = response.json()["alerts"]
        assert (outcome["incident_type"], outcome["severity_hint"]) == ("data_leak", "critical")
        resent = _post(intake, "/alerts/sns", doc, {})
        assert resent.json()["repeat_delivery"] is True
        assert resent.json()["alerts"][0]["incident_id"] == outcome["incident_id"]

    def test_forgeries_rejected(self, intake: Intake, sns_pki) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        good = self._notification(sns_pki)
        tampered = {**good, "Message": good["Message"].replace("ALARM", "OK")}
        other_topic = sns_pki.sign({**good, "TopicArn": "arn:aws:sns:eu-west-3:999999999999:attacker"})
        other_key = sns_pki.sign(good, key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
        elsewhere = {**good, "SigningCertURL": "https://sns.evil.example/SimpleNotificationService-x.pem"}
        for doc in (tampered, other_topic, other_key, elsewhere):
            assert _post(intake, "/alerts/sns", doc, {}).status_code == 401


def test_report(intake: Intake) -> None:
    doc = sample("report.json")
    doc["summary"] += f" ({uuid.uuid4().hex[:6]})"
    response = _post(intake, "/reports", doc, bearer())
    assert response.status_code == 202, response.text
    assert response.json()["alerts"][0]["incident_type"] == "account_compromise"


class TestBadInput:
    def test_oversized_body_refused_before_it_is_sent(self, intake: Intake) -> None:
        """Content-Length says 50 MiB; the server answers 413 having read none of it."""
        with socket.create_connection(("127.0.0.1", intake.port), timeout=10) as sock:
            sock.sendall(b"POST /alerts/generic HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 52428800\r\n\r\n")
            answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 413")

    def test_oversized_chunked_body(self, intake: Intake) -> None:
        def chunks():
            for _ in range(40):
                yield b" " * 65536

        response = httpx.post(f"{intake.url}/alerts/generic", content=chunks(), headers=bearer(), timeout=30)
        assert response.status_code == 413

    @pytest.mark.parametrize(("path", "body", "status", "field"), [
        ("/alerts/generic", b"{not json", 422, ""),
        ("/alerts/generic", b"[1, 2]", 422, ""),
        ("/alerts/generic", b'{"title": ""}', 422, "title"),
        ("/alerts/generic", b'{"title": "x", "lables": {}}', 422, "lables"),
        ("/alerts/alertmanager", None, 422, "alerts.0.status"),
        ("/alerts/pagerduty", b'{"event": {"id": "e", "event_type": "incident.triggered", "data": {"id": 5}}}',
         422, "event.data.id"),
        ("/alerts/generic", b"\xff\xfe\x00", 422, ""),
        ("/alerts/generic", b"[" * 100_000, 422, None),
    ])
    def test_invalid_payloads_name_the_field(self, intake: Intake, path: str, body: bytes | None, status: int,
                                             field: str | None) -> None:
        if body is None:
            doc = sample("alertmanager.json")
            doc["alerts"][0]["status"] = "burning"
            body = json.dumps(doc).encode()
        headers = pagerduty_headers(body, [PD_SECRET]) if "pagerduty" in path else bearer()
        response = _post(intake, path, body, headers)
        assert response.status_code == status, response.text
        if field is not None:
            assert field in [e["path"] for e in response.json()["errors"]]

    def test_unknown_source(self, intake: Intake) -> None:
        response = _post(intake, "/alerts/nagios", b"{}", bearer())
        assert response.status_code == 404 and "/alerts/generic" in response.json()["detail"]

    def test_unrouted_alerts_are_listed(self, intake: Intake) -> None:
        title = f"Nobody routes this {uuid.uuid4().hex[:6]}"
        response = _post(intake, "/alerts/generic", {"title": title, "labels": {"team": "billing"}}, bearer())
        assert response.json()["alerts"][0]["outcome"] == "unrouted"
        listed = httpx.get(f"{intake.url}/alerts/unrouted", headers=bearer(), timeout=10)
        assert title in [row["title"] for row in listed.json()]
        assert httpx.get(f"{intake.url}/alerts/unrouted", timeout=10).status_code == 401


def test_metrics_count_what_happened(intake: Intake) -> None:
    before = intake.metric("irp_intake_requests_rejected_total", reason="unauthenticated", source="grafana")
    _post(intake, "/alerts/grafana", sample("grafana.json"), bearer("wrong"))
    assert intake.metric("irp_intake_requests_rejected_total", reason="unauthenticated", source="grafana") \
        == before + 1
    text = httpx.get(f"{intake.url}/metrics", timeout=10).text
    for name in ("irp_intake_alerts_accepted_total", "irp_intake_alerts_deduplicated_total",
                 "irp_intake_runs_created_total", "irp_intake_journal_backlog", "irp_intake_ack_latency_seconds_bucket",
                 "irp_intake_alerts_unrouted_total"):
        assert name in text
    assert intake.metric("irp_intake_runs_created_total") >= 1


def test_openapi_served_is_the_committed_one(intake: Intake) -> None:
    served = httpx.get(f"{intake.url}/openapi.json", timeout=10).json()
    assert served == json.loads((REPO / "docs" / "openapi.json").read_text())


class TestStartup:
    def _run(self, tmp_path: Path, args: list[str], **env: str) -> subprocess.CompletedProcess:
        environment = intake_env(tmp_path, "http://127.0.0.1:9/api", **env)
        environment.pop("IRP_WEBHOOK_TOKEN")
        return subprocess.run([sys.executable, "-m", "irp.cli", "webhook", "--port", "9", *args], cwd=REPO,
                              env=environment, capture_output=True, text=True, timeout=120)

    def test_refuses_without_credentials(self, tmp_path: Path) -> None:
        result = self._run(tmp_path, [])
        assert result.returncode == 1
        assert "no credential configured" in result.stderr and "--local" in result.stderr

    def test_local_only_on_loopback(self, tmp_path: Path) -> None:
        result = self._run(tmp_path, ["--local", "--host", "0.0.0.0"])
        assert result.returncode == 1 and "bind it to 127.0.0.1" in result.stderr

    def test_local_accepts_without_credentials(self, tmp_path: Path, deployments: str) -> None:
        service = make_intake(tmp_path, deployments, args=["--local"])
        service.env.pop("IRP_WEBHOOK_TOKEN")
        service.start()
        try:
            response = _post(service, "/alerts/generic", {"title": "local test", "labels": {}},
                             {"content-type": "application/json"})
            assert response.status_code == 202
        finally:
            service.stop()
