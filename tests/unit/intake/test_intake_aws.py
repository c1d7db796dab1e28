"""AWS security sources: EventBridge events at /alerts/eventbridge (and through SNS) reach their playbook with
the labels the playbooks read, mapped by the shipped routing.yaml from the samples of playbooks/samples/aws/."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_fixtures import intake_request
from typer.testing import CliRunner

from irp.cli import app
from irp.intake.service import IntakeService
from irp.settings import Settings

REPO = Path(__file__).resolve().parents[3]
SAMPLES = REPO / "playbooks" / "samples" / "aws"
TOKEN = "unit-token"
API_KEY = "eb-connection-key"

# sample -> (route, incident type, severity hint, labels the route maps that the playbooks read)
EXPECTED = {
    "guardduty-iam-credentials.json": ("guardduty-credentials", "account_compromise", "critical", {
        "access_key": "AKIAIOSFODNN7EXAMPLE", "iam_user": "rating-api", "src_ip": "198.51.100.23",
        "guardduty_severity": "8", "detector": "guardduty"}),
    "guardduty-ec2-cryptocurrency.json": ("guardduty-malware", "malware", "major", {
        "instance_id": "i-0abcd1234ef567890", "finding_type": "CryptoCurrency:EC2/BitcoinTool.B!DNS"}),
    "guardduty-s3-exfiltration.json": ("guardduty-s3", "data_leak", "critical", {
        "bucket": "callcenterrate-recordings", "access_key": "AKIAIOSFODNN7EXAMPLE",
        "data_categories": "call_recordings"}),
    "guardduty-ec2-ssh-brute-force.json": ("guardduty-attempts", "intrusion_attempt", "minor", {
        "instance_id": "i-0abcd1234ef567890", "src_ip": "198.51.100.23"}),
    "securityhub-macie-pii.json": ("securityhub-data-exposure", "data_leak", "critical", {
        "product": "Macie", "data_categories": "identification",
        "resource_id": "arn:aws:s3:::callcenterrate-exports"}),
    "securityhub-iam-ttp.json": ("securityhub-credentials", "account_compromise", "major", {
        "access_key": "AKIAIOSFODNN7EXAMPLE", "iam_user": "export-bot"}),
    "health-issue.json": ("aws-health", "service_unavailability", None, {
        "event_type_code": "AWS_EC2_OPERATIONAL_ISSUE", "instance_id": "i-0abcd1234ef567890"}),
    "health-credentials-exposed.json": ("aws-health-exposed-credentials", "account_compromise", "critical", {
        "access_key": "AKIAIOSFODNN7EXAMPLE"}),
    "cloudtrail-bucket-policy-public.json": ("cloudtrail-bucket-made-public", "data_leak", "critical", {
        "bucket": "callcenterrate-exports", "src_ip": "203.0.113.45", "public_grant": "Allow"}),
    "cloudtrail-root-access-key.json": ("cloudtrail-admin-access-key", "account_compromise", "critical", {
        "access_key": "AKIAIOSFODNN7EXAMPLE", "target_user": "root"}),
    "console-login-without-mfa.json": ("console-login-without-mfa", "unauthorized_access", "major", {
        "user": "support-lead", "src_ip": "198.51.100.23", "mfa_used": "No"}),
}


def test_every_sample_has_an_expectation() -> None:
    assert sorted(p.name for p in SAMPLES.glob("*.json") if not p.name.startswith("sns-")) == sorted(EXPECTED)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[IntakeService]:
    settings = Settings(webhook_token=TOKEN, eventbridge_api_key=API_KEY,
                        intake_journal=str(tmp_path / "journal.sqlite3"))
    service = IntakeService(settings, create_run=lambda payload: "run", append_event=lambda incident, entry: None)
    yield service
    service.journal.close()


def _request(service: IntakeService, method: str, path: str, **kwargs) -> httpx.Response:
    return intake_request(service, method, path, **kwargs)


def _runs(service: IntakeService) -> list[dict]:
    return [item.payload for item in service.journal.due(time.time() + 1) if item.kind == "run"]


def _post(service: IntakeService, body: bytes, **headers: str):
    return _request(service, "POST", "/alerts/eventbridge", content=body,
                    headers={"Content-Type": "application/json", **headers})


class TestSamples:
    @pytest.mark.parametrize("sample", sorted(EXPECTED))
    def test_posted_sample_opens_its_incident_with_the_mapped_labels(self, service: IntakeService,
                                                                      sample: str) -> None:
        route, incident_type, severity, labels = EXPECTED[sample]
        answer = _post(service, (SAMPLES / sample).read_bytes(), **{"x-irp-api-key": API_KEY})
        assert answer.status_code == 202, answer.text
        [outcome] = answer.json()["alerts"]
        assert (outcome["outcome"], outcome["route"], outcome["incident_type"], outcome["severity_hint"]) == \
            ("new_incident", route, incident_type, severity)
        [run] = _runs(service)
        alert = run["parameters"]["alert"]
        assert alert["source"] == "eventbridge"
        assert {key: alert["labels"].get(key) for key in labels} == labels
        assert alert["raw"] == json.loads((SAMPLES / sample).read_bytes())  # kept verbatim as evidence
        assert "clients" not in run["parameters"]  # a mapping never states Clients

    def test_the_same_event_through_sns_goes_the_same_way(self, tmp_path: Path) -> None:
        settings = Settings(intake_journal=str(tmp_path / "journal.sqlite3"))  # --local: SNS unsigned
        service = IntakeService(settings, local=True, create_run=lambda p: "run", append_event=lambda i, e: None)
        try:
            answer = _request(service, "POST", "/alerts/sns",
                              content=(SAMPLES / "sns-guardduty-iam-credentials.json").read_bytes(),
                              headers={"Content-Type": "application/json"})
            assert answer.status_code == 202, answer.text
            [outcome] = answer.json()["alerts"]
            assert (outcome["route"], outcome["incident_type"], outcome["severity_hint"]) == \
                ("guardduty-credentials", "account_compromise", "critical")
            [run] = _runs(service)
            labels = run["parameters"]["alert"]["labels"]
            assert (labels["access_key"], labels["topic_arn"]) == (
                "AKIAIOSFODNN7EXAMPLE", "arn:aws:sns:eu-west-3:123456789012:security-findings")
        finally:
            service.journal.close()

    def test_a_repeated_finding_joins_its_incident(self, service: IntakeService) -> None:
        body = json.loads((SAMPLES / "guardduty-iam-credentials.json").read_bytes())
        first = _post(service, json.dumps(body).encode(), authorization=f"Bearer {TOKEN}")
        body["id"] = "another-event-id"  # GuardDuty sends an updated finding as a new event
        second = _post(service, json.dumps(body).encode(), authorization=f"Bearer {TOKEN}")
        assert [first.json()["alerts"][0]["outcome"], second.json()["alerts"][0]["outcome"]] == \
            ["new_incident", "joined"]

    def test_route_command_shows_the_mapped_labels(self) -> None:
        result = CliRunner().invoke(app, ["playbooks", "route", "eventbridge",
                                          str(SAMPLES / "guardduty-iam-credentials.json")])
        assert result.exit_code == 0, result.output
        assert "route guardduty-credentials -> account_compromise, severity critical" in result.output
        assert "label access_key = 'AKIAIOSFODNN7EXAMPLE' (set by the route: data, not authority)" in result.output


class TestEventBridgeAuthentication:
    BODY = (SAMPLES / "health-issue.json").read_bytes()

    @pytest.mark.parametrize("headers", [
        {"x-irp-api-key": API_KEY},
        {"authorization": f"Bearer {TOKEN}"},
        {"authorization": "Basic " + base64.b64encode(f"eventbridge:{TOKEN}".encode()).decode()},
    ], ids=["api-key", "bearer", "basic"])
    def test_what_an_eventbridge_connection_sends_passes(self, service: IntakeService, headers: dict) -> None:
        assert _post(service, self.BODY, **headers).status_code == 202

    @pytest.mark.parametrize("headers", [
        {}, {"x-irp-api-key": "wrong"}, {"x-irp-api-key": TOKEN}, {"x-api-key": API_KEY},
        {"authorization": f"Bearer {API_KEY}"},
    ])
    def test_anything_else_is_refused_before_the_body(self, service: IntakeService, headers: dict) -> None:
        assert service.auth.before_body("eventbridge", headers) is None  # nothing read from the body
        answer = _post(service, self.BODY, **headers)
        assert (answer.status_code, answer.json()["detail"]) == (401, "unauthenticated")
        assert _runs(service) == []

    def test_header_name_is_configurable(self, tmp_path: Path) -> None:
        settings = Settings(eventbridge_api_key_header="X-Partner-Key", eventbridge_api_key=f"old,{API_KEY}",
                            intake_journal=str(tmp_path / "j.sqlite3"))
        service = IntakeService(settings, create_run=lambda p: "run", append_event=lambda i, e: None)
        try:
            assert _post(service, self.BODY, **{"x-partner-key": API_KEY}).status_code == 202
            assert _post(service, self.BODY, **{"x-irp-api-key": API_KEY}).status_code == 401
        finally:
            service.journal.close()

    def test_not_an_event_is_a_422_naming_the_field(self, service: IntakeService) -> None:
        answer = _post(service, b'{"id": "x", "source": "aws.guardduty", "detail": []}', **{"x-irp-api-key": API_KEY})
        assert answer.status_code == 422
        paths = {error["path"] for error in answer.json()["errors"]}
        assert paths == {"detail-type", "detail"}


class TestNormalise:
    def test_one_alert_per_security_hub_finding_each_with_its_own_raw(self) -> None:
        from irp.intake.sources import SOURCES, alerts_in

        event = json.loads((SAMPLES / "securityhub-iam-ttp.json").read_bytes())
        first = event["detail"]["findings"][0]
        second = {**first, "Id": "finding-2", "Title": "Second", "Workflow": {"Status": "RESOLVED"}}
        event["detail"]["findings"] = [first, second]
        alerts = alerts_in(SOURCES["eventbridge"], json.dumps(event).encode())
        assert [(a.title, a.status) for a, _ in alerts] == [("Access key used from a new country", "firing"),
                                                           ("Second", "resolved")]
        assert [a.raw["detail"]["findings"] for a, _ in alerts] == [[first], [second]]
        assert alerts[0][0].fingerprint != alerts[1][0].fingerprint
        assert alerts[0][0].labels == {"kind": "eventbridge", "event_source": "aws.securityhub",
                                       "detail_type": "Security Hub Findings - Imported",
                                       "account": "123456789012", "region": "eu-west-3"}

    def test_direct_and_sns_deliveries_of_one_event_are_one_alert(self) -> None:
        from irp.intake.sources import SOURCES, alerts_in

        [(direct, _)] = alerts_in(SOURCES["eventbridge"], (SAMPLES / "guardduty-iam-credentials.json").read_bytes())
        [(via_sns, _)] = alerts_in(SOURCES["sns"], (SAMPLES / "sns-guardduty-iam-credentials.json").read_bytes())
        assert (direct.fingerprint, direct.title, direct.observed_at) == \
            (via_sns.fingerprint, via_sns.title, via_sns.observed_at)
