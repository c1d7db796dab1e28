"""The HTTP app in-process (no server): JSON reading, the alert POSTs' fast path, and what it passes on."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_fixtures import intake_request

from irp.intake.service import IntakeService
from irp.intake.sources import SOURCES, alerts_in, parse_json
from irp.settings import Settings

SAMPLE = Path(__file__).parent / "samples" / "alertmanager.json"
TOKEN = "unit-token"


class TestParse:
    @pytest.mark.parametrize("body", [
        b'{"a": 1, "b": [true, null, "x\\u00e9"], "c": {"d": -0.5e3}}',
        b'{"a": 1, "a": 2}',
        b'{"big": 123456789012345678901234567890, "neg": -9223372036854775809}',  # beyond 64 bits: exact
        b'{"inf": 1e400, "nan": NaN}',  # orjson refuses, json reads
        b'\xef\xbb\xbf{"bom": 1}',
        b'{"lone": "\\ud800"}',
        b'{"big_in_string": "12345678901234567890123"}',
    ])
    def test_reads_what_json_reads(self, body: bytes) -> None:
        assert repr(parse_json(body)) == repr(json.loads(body))

    @pytest.mark.parametrize("body", [b"", b"{", b'{"a": 1,}', b'{"a": "\x01"}', b"\xff\xfe{", b'{"a": 1} x'])
    def test_errors_worded_by_json(self, body: bytes) -> None:
        with pytest.raises(ValueError) as expected:
            json.loads(body)
        with pytest.raises(ValueError) as got:
            parse_json(body)
        assert str(got.value) == str(expected.value)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[IntakeService]:
    settings = Settings(webhook_token=TOKEN, intake_journal=str(tmp_path / "journal.sqlite3"))
    service = IntakeService(settings, create_run=lambda payload: "run", append_event=lambda incident, entry: None)
    yield service
    service.journal.close()


def _request(service: IntakeService, method: str, path: str, **kwargs) -> httpx.Response:
    return intake_request(service, method, path, **kwargs)


class TestAlertPosts:
    def test_accepted_then_deduplicated_and_counted(self, service: IntakeService) -> None:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        first = _request(service, "POST", "/alerts/alertmanager", content=SAMPLE.read_bytes(), headers=auth)
        second = _request(service, "POST", "/alerts/alertmanager", content=SAMPLE.read_bytes(), headers=auth)
        assert (first.status_code, second.status_code) == (202, 202)
        assert first.headers["content-type"] == "application/json"
        assert first.json()["alerts"][0]["outcome"] == "new_incident"
        assert second.json()["alerts"][0]["outcome"] == "joined"
        metrics = _request(service, "GET", "/metrics").text
        assert 'irp_intake_alerts_accepted_total{source="alertmanager"} 2.0' in metrics
        assert 'irp_intake_alerts_deduplicated_total{source="alertmanager"} 1.0' in metrics
        assert 'irp_intake_ack_latency_seconds_count{source="alertmanager"} 2.0' in metrics

    def test_rejections_keep_their_status_body_and_metric(self, service: IntakeService) -> None:
        unauthenticated = _request(service, "POST", "/alerts/alertmanager", content=b"{}")
        assert unauthenticated.status_code == 401
        assert unauthenticated.headers["www-authenticate"] == "Bearer"
        assert unauthenticated.json() == {"detail": "unauthenticated", "errors": []}
        invalid = _request(service, "POST", "/alerts/generic", content=b'{"title": ',
                           headers={"Authorization": f"Bearer {TOKEN}"})
        assert invalid.status_code == 422
        assert invalid.json()["detail"].startswith("invalid JSON: Expecting value")
        metrics = _request(service, "GET", "/metrics").text
        assert 'irp_intake_requests_rejected_total{reason="unauthenticated",source="alertmanager"} 1.0' in metrics
        assert 'irp_intake_requests_rejected_total{reason="invalid_json",source="generic"} 1.0' in metrics

    def test_the_endpoint_and_alerts_in_refuse_the_same_deep_body(self, service: IntakeService) -> None:
        """`irp playbooks route` reads bodies as the endpoint does: too deep is refused by both, said the same."""
        nested: object = "leaf"
        for _ in range(100):
            nested = {"a": nested}
        body = json.dumps({**json.loads(SAMPLE.read_bytes()), "extra": nested}).encode()
        posted = _request(service, "POST", "/alerts/alertmanager", content=body,
                          headers={"Authorization": f"Bearer {TOKEN}"})
        assert (posted.status_code, posted.json()["detail"]) == (422, "JSON nested deeper than 64 levels")
        with pytest.raises(ValueError, match="^JSON nested deeper than 64 levels$"):
            alerts_in(SOURCES["alertmanager"], body)

    def test_other_methods_and_paths_pass_on(self, service: IntakeService) -> None:
        wrong_method = _request(service, "GET", "/alerts/alertmanager")
        assert (wrong_method.status_code, wrong_method.json()) == (405, {"detail": "Method Not Allowed"})
        unknown = _request(service, "POST", "/alerts/nagios", content=b"{}")
        assert unknown.status_code == 404
        assert unknown.json()["detail"].startswith("unknown source 'nagios'")


ROUTES = """version: 1
routes:
  - name: {name}
    source: generic
    labels: {{team: web}}
    incident_type: {incident_type}
"""


@pytest.fixture
def routed(tmp_path: Path) -> Iterator[tuple[IntakeService, Path]]:
    """A service whose routing file (one route: generic alerts of team web → data_leak) the test may edit."""
    routing = tmp_path / "routing.yaml"
    routing.write_text(ROUTES.format(name="web", incident_type="data_leak"))
    settings = Settings(webhook_token=TOKEN, intake_journal=str(tmp_path / "journal.sqlite3"), routing_file=routing)
    service = IntakeService(settings, create_run=lambda payload: "run", append_event=lambda incident, entry: None)
    yield service, routing
    service.journal.close()


class TestRoutingReload:
    """routing.yaml edited while the intake runs: taken when valid, refused (routes kept) when not."""

    @staticmethod
    def _post(service: IntakeService, title: str) -> dict:
        response = _request(service, "POST", "/alerts/generic", json={"title": title, "labels": {"team": "web"}},
                            headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 202, response.text
        return response.json()["alerts"][0]

    @staticmethod
    def _health(service: IntakeService) -> dict:
        return _request(service, "GET", "/healthz", headers={"Authorization": f"Bearer {TOKEN}"}).json()

    def test_a_changed_file_is_taken(self, routed: tuple[IntakeService, Path]) -> None:
        service, routing = routed
        assert self._post(service, "first")["incident_type"] == "data_leak"
        before = self._health(service)["routing"]
        assert not service.reload_routing()  # unchanged
        routing.write_text(ROUTES.format(name="web-v2", incident_type="cyberattack"))
        assert service.reload_routing()
        outcome = self._post(service, "second")
        assert (outcome["route"], outcome["incident_type"]) == ("web-v2", "cyberattack")
        after = self._health(service)
        assert after["status"] == "ok" and after["routing"]["problems"] == []
        assert after["routing"]["sha256"] != before["sha256"] and after["routing"]["routes"] == 1
        assert after["routing"]["loaded_at"] >= before["loaded_at"]

    def test_a_file_with_problems_leaves_the_routes_in_force(self, routed: tuple[IntakeService, Path],
                                                           caplog: pytest.LogCaptureFixture) -> None:
        service, routing = routed
        good = routing.read_text()
        routing.write_text(good.replace("    labels:", "    colour: red\n    labels:"))
        assert not service.reload_routing()
        outcome = self._post(service, "still routed")
        assert (outcome["route"], outcome["incident_type"]) == ("web", "data_leak")
        health = self._health(service)
        assert health["status"] == "degraded"
        [problem] = health["routing"]["problems"]
        assert problem.startswith(f"{routing}:5:5: routes.0.colour: unknown key 'colour'; valid keys: name,")
        metrics = _request(service, "GET", "/metrics").text
        assert "irp_intake_routing_last_reload_successful 0.0" in metrics
        routing.write_text(good)  # put back as it was: nothing to load, nothing wrong any more
        with caplog.at_level("INFO", logger="irp.intake"):
            assert not service.reload_routing()
        assert "is valid again: the routes in force are unchanged" in caplog.text
        assert self._health(service)["status"] == "ok"
        assert "irp_intake_routing_last_reload_successful 1.0" in _request(service, "GET", "/metrics").text

    def test_a_missing_file_is_a_problem_not_a_crash(self, routed: tuple[IntakeService, Path]) -> None:
        service, routing = routed
        routing.unlink()
        assert not service.reload_routing()
        assert self._health(service)["routing"]["problems"] == [f"{routing}:1:1: no such file"]
        assert self._post(service, "routed by the routes in force")["route"] == "web"


class TestReplayUnrouted:
    """POST /alerts/unrouted/replay: after a routing fix, the unrouted alerts get their incidents, once."""

    @staticmethod
    def _replay(service: IntakeService, **params: str) -> httpx.Response:
        return _request(service, "POST", "/alerts/unrouted/replay", params=params,
                        headers={"Authorization": f"Bearer {TOKEN}"})

    def test_routed_once_after_the_fix(self, routed: tuple[IntakeService, Path]) -> None:
        service, routing = routed
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for title in ("billing disk full", "billing disk full", "billing queue stuck"):
            answer = _request(service, "POST", "/alerts/generic", headers=auth,
                              json={"title": title, "labels": {"team": "billing"}})
            assert answer.json()["alerts"][0]["outcome"] == "unrouted"
        unrouted = _request(service, "GET", "/alerts/unrouted", headers=auth).json()
        assert sorted((row["title"], row["count"]) for row in unrouted) == \
            [("billing disk full", 2), ("billing queue stuck", 1)]

        nothing = self._replay(service)
        assert nothing.status_code == 200
        assert (nothing.json()["replayed"], nothing.json()["still_unrouted"]) == ([], 2)

        routing.write_text(ROUTES.format(name="web", incident_type="data_leak")
                           + "  - name: billing\n    source: generic\n    labels: {team: billing}\n"
                             "    incident_type: technical_failure\n")
        assert service.reload_routing()
        wanted = next(row["fingerprint"] for row in unrouted if row["title"] == "billing disk full")
        one = self._replay(service, fingerprint=wanted).json()
        [alert] = one["replayed"]
        assert (alert["fingerprint"], alert["outcome"], alert["route"], alert["incident_type"]) == \
            (wanted, "new_incident", "billing", "technical_failure")
        assert alert["replayed_delivery_id"] == next(r["last_delivery_id"] for r in unrouted if r["fingerprint"] == wanted)
        assert one["routing_sha256"] == service.router.sha256
        rest = self._replay(service).json()
        assert [(a["route"], a["fingerprint"] != wanted) for a in rest["replayed"]] == [("billing", True)]
        assert rest["still_unrouted"] == 0
        assert _request(service, "GET", "/alerts/unrouted", headers=auth).json() == []
        assert self._replay(service).json()["replayed"] == []  # once each
        again = _request(service, "POST", "/alerts/generic", headers=auth,
                         json={"title": "billing disk full", "labels": {"team": "billing"}}).json()["alerts"][0]
        assert (again["outcome"], again["incident_id"]) == ("joined", alert["incident_id"])
        metrics = _request(service, "GET", "/metrics").text
        assert 'irp_intake_incidents_opened_total{incident_type="technical_failure",source="generic"} 2.0' in metrics
        assert 'irp_intake_alerts_accepted_total{source="generic"} 4.0' in metrics  # replays are not new alerts

    def test_needs_the_token_and_says_what_was_purged(self, routed: tuple[IntakeService, Path]) -> None:
        service, _ = routed
        assert _request(service, "POST", "/alerts/unrouted/replay").status_code == 401
        _request(service, "POST", "/alerts/generic", headers={"Authorization": f"Bearer {TOKEN}"},
                 json={"title": "old one", "labels": {}})
        service.journal.purge(older_than=time.time() + 1, window_start=0).result()  # past the retention
        assert self._replay(service).json() == {"routing_sha256": service.router.sha256, "replayed": [],
                                                "still_unrouted": 0, "purged": 1}


class TestOneAlertDocument:
    """The README's alert document for `irp run --alert` posts as is to /alerts/generic."""

    def test_the_run_sample_is_accepted_by_the_generic_endpoint(self, service: IntakeService) -> None:
        sample = Path(__file__).parents[3] / "playbooks" / "samples" / "data_leak.json"
        document = json.loads(sample.read_text())
        accepted = _request(service, "POST", "/alerts/generic", json=document, headers={"Authorization": f"Bearer {TOKEN}"})
        assert accepted.status_code == 202, accepted.text

    def test_a_source_of_another_endpoint_is_named(self, service: IntakeService) -> None:
        refused = _request(service, "POST", "/alerts/generic", json={"title": "x", "source": "grafana"},
                           headers={"Authorization": f"Bearer {TOKEN}"})
        assert refused.status_code == 422
        assert "source 'grafana' does not match this endpoint (/alerts/generic)" in refused.text

@pytest.fixture
def local_service(tmp_path: Path) -> Iterator[IntakeService]:
    """--local without any credential: every source open to this machine's own tools."""
    settings = Settings(intake_journal=str(tmp_path / "journal.sqlite3"))
    service = IntakeService(settings, local=True, create_run=lambda payload: "run",
                            append_event=lambda incident, entry: None)
    yield service
    service.journal.close()


class TestLocalRequests:
    """In-process the server is 127.0.0.1:80: the Host must name a loopback address with that port."""

    @pytest.mark.parametrize("host", ["127.0.0.1", "localhost:80", "[::1]", "127.0.0.2:80"])
    def test_loopback_host_accepted(self, local_service: IntakeService, host: str) -> None:
        answer = _request(local_service, "POST", "/alerts/generic", content=b'{"title": "t"}',
                          headers={"Host": host, "Content-Type": "application/json"})
        assert answer.status_code == 202, answer.text

    @pytest.mark.parametrize("host", ["evil.example", "127.0.0.1:8080", "evil.example@127.0.0.1", "127.0.0.1:x",
                                      "localhost.", "127.0.0.1.nip.io", ""])
    def test_other_hosts_refused(self, local_service: IntakeService, host: str) -> None:
        answer = _request(local_service, "POST", "/alerts/generic", content=b'{"title": "t"}',
                          headers={"Host": host, "Content-Type": "application/json"})
        assert answer.status_code == 403
        assert answer.json()["detail"].startswith("--local accepts requests from this machine only: Host must be")
        reader = _request(local_service, "GET", "/alerts/unrouted", headers={"Host": host})
        assert reader.status_code == 403

    @pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://127.0.0.1.evil.example", "file://"])
    def test_foreign_origin_refused(self, local_service: IntakeService, origin: str) -> None:
        answer = _request(local_service, "POST", "/alerts/generic", content=b'{"title": "t"}',
                          headers={"Origin": origin, "Content-Type": "application/json"})
        assert answer.status_code == 403
        assert "is not a loopback origin" in answer.json()["detail"]

    @pytest.mark.parametrize("media", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None])
    def test_only_json_alerts(self, local_service: IntakeService, media: str | None) -> None:
        headers = {"Content-Type": media} if media else {}
        answer = _request(local_service, "POST", "/alerts/generic", content=b'{"title": "t"}', headers=headers)
        assert answer.status_code == 415
        assert "accepts alerts only as Content-Type: application/json" in answer.json()["detail"]
        assert local_service.journal.unrouted(10) == []
