"""An alert no route matches but whose source marks it severe goes to triage at once (a triage run is queued);
the others are listed as unrouted, as before."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_fixtures import intake_request

from irp.deployments import TRIAGE_DEPLOYMENT
from irp.intake.routing import Router, source_severity
from irp.intake.service import IntakeService
from irp.models import Alert, AlertSource, Severity
from irp.playbook.models import Routing
from irp.settings import Settings

REPO = Path(__file__).resolve().parents[3]
TOKEN = "unit-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROUTING = Routing.model_validate({"version": 1, "routes": [
    {"name": "db", "incident_type": "technical_failure", "labels": {"alertname": "DiskFull"}}]})


def generic(severity: str, title: str = "Root user signed in from an unknown country") -> dict:
    return {"title": title, "labels": {"severity": severity, "account": "prod"}}


class TestSourceSeverity:
    @pytest.mark.parametrize(("labels", "expected"), [
        ({"severity": "critical"}, Severity.critical), ({"severity": "HIGH"}, Severity.critical),
        ({"severity": "warning"}, Severity.minor), ({"severity": "sev-purple"}, None), ({}, None)])
    def test_the_severity_label_through_the_vocabulary(self, labels, expected) -> None:
        assert source_severity(Alert(title="t", labels=labels)) == expected

    def test_aws_findings_state_their_own(self) -> None:
        event = json.loads((REPO / "playbooks/samples/aws/securityhub-macie-pii.json").read_text())
        assert source_severity(Alert(source=AlertSource.eventbridge, title="t", raw=event)) == Severity.critical
        guardduty = json.loads((REPO / "playbooks/samples/aws/guardduty-ec2-cryptocurrency.json").read_text())
        assert source_severity(Alert(source=AlertSource.eventbridge, title="t", raw=guardduty)) == Severity.major
        guardduty["detail"]["severity"] = 8.5
        assert source_severity(Alert(source=AlertSource.eventbridge, title="t", raw=guardduty)) == Severity.critical


class TestRouter:
    def test_unrouted_and_severe_goes_to_triage(self) -> None:
        routed = Router(ROUTING, triage=[Severity.critical]).route(Alert(title="t", labels={"severity": "critical"}))
        assert (routed.route, routed.incident_type, routed.severity) == ("triage", None, Severity.critical)

    def test_below_the_threshold_or_none_configured_stays_unrouted(self) -> None:
        assert Router(ROUTING, triage=[Severity.critical]).route(Alert(title="t", labels={"severity": "major"})) is None
        assert Router(ROUTING, triage=[]).route(Alert(title="t", labels={"severity": "critical"})) is None

    def test_a_route_that_matches_wins(self) -> None:
        alert = Alert(title="t", labels={"alertname": "DiskFull", "severity": "critical"})
        assert Router(ROUTING, triage=[Severity.critical]).route(alert).route == "db"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[IntakeService, list[dict]]]:
    (tmp_path / "routing.yaml").write_text("version: 1\nroutes:\n  - name: db\n    incident_type: technical_failure\n"
                                           "    labels: {alertname: DiskFull}\n")
    settings = Settings(webhook_token=TOKEN, intake_journal=str(tmp_path / "journal.sqlite3"),
                        routing_file=tmp_path / "routing.yaml", triage_severities=["critical"])
    runs: list[dict] = []
    service = IntakeService(settings, create_run=lambda payload: runs.append(payload) or "run-1",
                            append_event=lambda incident, entry: None)
    yield service, runs
    service.journal.close()


def test_a_critical_unrouted_alert_queues_one_triage_run_and_is_not_listed(service) -> None:
    service, runs = service
    first = intake_request(service, "POST", "/alerts/generic", json=generic("critical"), headers=AUTH)
    again = intake_request(service, "POST", "/alerts/generic", json=generic("critical"), headers=AUTH)
    [outcome] = first.json()["alerts"]
    assert (first.status_code, outcome["outcome"], outcome["incident_type"], outcome["route"]) == (
        202, "new_incident", "triage", "triage")
    assert again.json()["alerts"][0]["outcome"] == "joined"
    assert again.json()["alerts"][0]["incident_id"] == outcome["incident_id"]
    service.outbox.drain_once()
    [run] = runs
    assert run["deployment"] == TRIAGE_DEPLOYMENT
    assert run["parameters"]["incident_id"] == outcome["incident_id"]
    assert run["parameters"]["severity_hint"] == "critical"
    assert run["parameters"]["alert"]["title"] == generic("critical")["title"]
    assert intake_request(service, "GET", "/alerts/unrouted", headers=AUTH).json() == []


def test_others_are_listed_as_before(service) -> None:
    service, runs = service
    body = generic("warning", "Disk latency high")
    [outcome] = intake_request(service, "POST", "/alerts/generic", json=body, headers=AUTH).json()["alerts"]
    assert outcome["outcome"] == "unrouted" and outcome["incident_id"] is None
    listed = intake_request(service, "GET", "/alerts/unrouted", headers=AUTH).json()
    assert [a["title"] for a in listed] == ["Disk latency high"] and runs == []
