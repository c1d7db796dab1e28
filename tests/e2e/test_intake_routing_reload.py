"""routing.yaml edited under a running `irp webhook`: picked up by the watch or on SIGHUP, refused when broken.

No Prefect server is needed: the answers carry the route and incident type the routing decided.
"""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import httpx
import pytest
from intake_harness import Intake, bearer, make_intake

pytestmark = pytest.mark.timeout(180)

ROUTES = """version: 1
routes:
  - name: {name}
    source: generic
    labels: {{team: web}}
    incident_type: {incident_type}
"""


def _intake(tmp_path: Path, reload_seconds: str) -> tuple[Intake, Path]:
    routing = tmp_path / "routing.yaml"
    routing.write_text(ROUTES.format(name="web", incident_type="data_leak"))
    intake = make_intake(tmp_path, "http://127.0.0.1:9/api", IRP_ROUTING_FILE=str(routing),
                         IRP_ROUTING_RELOAD_SECONDS=reload_seconds, IRP_EVIDENCE_URL=f"file://{tmp_path / 'evidence'}")
    return intake.start(), routing


def _routed(intake: Intake) -> tuple[str, str]:
    body = {"title": f"alert {uuid.uuid4().hex[:8]}", "labels": {"team": "web"}}
    response = httpx.post(f"{intake.url}/alerts/generic", json=body, headers=bearer(), timeout=10)
    assert response.status_code == 202, response.text
    outcome = response.json()["alerts"][0]
    return outcome["route"], outcome["incident_type"]


def _wait_routing(intake: Intake, done, timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = intake.health()
        if done(health):
            return health
        time.sleep(0.1)
    raise AssertionError(f"routing not reloaded after {timeout}s: {intake.health()}")


def test_edits_are_watched_and_a_broken_file_is_refused(tmp_path: Path) -> None:
    intake, routing = _intake(tmp_path, "0.2")
    try:
        assert _routed(intake) == ("web", "data_leak")
        first = intake.health()["routing"]["sha256"]
        routing.write_text(ROUTES.format(name="web-v2", incident_type="cyberattack"))
        _wait_routing(intake, lambda h: h["routing"]["sha256"] != first)
        assert _routed(intake) == ("web-v2", "cyberattack")

        routing.write_text("version: 1\nroutes:\n  - name: web-v3\n    incident_type: no_such_type\n")
        health = _wait_routing(intake, lambda h: h["status"] == "degraded")
        [problem] = health["routing"]["problems"]
        assert problem.startswith(f"{routing}:4:5: routes.0.incident_type:") and "no_such_type" in problem
        assert _routed(intake) == ("web-v2", "cyberattack")  # the routes in force stay
        assert intake.metric("irp_intake_routing_last_reload_successful") == 0
        assert "not loaded; the routes loaded" in intake.log.read_text()
    finally:
        intake.stop()


def test_sighup_reloads_when_the_watch_is_off(tmp_path: Path) -> None:
    intake, routing = _intake(tmp_path, "0")
    try:
        first = intake.health()["routing"]["sha256"]
        routing.write_text(ROUTES.format(name="web-v2", incident_type="cyberattack"))
        time.sleep(1.0)
        assert intake.health()["routing"]["sha256"] == first  # not watched
        intake.process.send_signal(signal.SIGHUP)
        _wait_routing(intake, lambda h: h["routing"]["sha256"] != first)
        assert _routed(intake) == ("web-v2", "cyberattack")
        assert intake.process.poll() is None  # SIGHUP reloads, it does not stop the service
    finally:
        intake.stop()


def test_unrouted_alerts_replayed_after_the_fix(tmp_path: Path) -> None:
    intake, routing = _intake(tmp_path, "0.2")
    try:
        body = {"title": "billing export failing", "labels": {"team": "billing"}}
        answer = httpx.post(f"{intake.url}/alerts/generic", json=body, headers=bearer(), timeout=10).json()
        assert answer["alerts"][0]["outcome"] == "unrouted"
        routing.write_text(ROUTES.format(name="web", incident_type="data_leak")
                           + "  - name: billing\n    source: generic\n    labels: {team: billing}\n"
                             "    incident_type: technical_failure\n")
        _wait_routing(intake, lambda h: h["routing"]["routes"] == 2)
        replay = httpx.post(f"{intake.url}/alerts/unrouted/replay", headers=bearer(), timeout=10)
        assert replay.status_code == 200, replay.text
        [alert] = replay.json()["replayed"]
        assert (alert["outcome"], alert["incident_type"], alert["replayed_delivery_id"]) == \
            ("new_incident", "technical_failure", answer["delivery_id"])
        recorded = httpx.get(f"{intake.url}/deliveries/{alert['delivery_id']}", headers=bearer(), timeout=10).json()
        assert recorded["alerts"][0]["incident_id"] == alert["incident_id"]
        assert httpx.get(f"{intake.url}/alerts/unrouted", headers=bearer(), timeout=10).json() == []
        assert httpx.post(f"{intake.url}/alerts/unrouted/replay", timeout=10).status_code == 401
    finally:
        intake.stop()
