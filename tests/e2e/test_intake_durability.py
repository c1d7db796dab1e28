"""No alert lost, none duplicated: the storm, SIGKILL mid-storm, and the Prefect server down.

Exact counts against the real Prefect server (session fixture) with the incident deployments applied.
Load is bounded: at most 10,000 requests per test, 16 at a time, on 127.0.0.1 only.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from intake_harness import Relay, bearer, check_every_ack, distinct_alerts, fingerprint, flow_runs_for, make_intake, storm

pytestmark = pytest.mark.timeout(600)


def test_storm_of_10000_repeats_of_20_alerts_starts_exactly_20_runs(deployments: str, tmp_path: Path) -> None:
    evidence = tmp_path / "evidence"
    intake = make_intake(tmp_path, deployments, IRP_EVIDENCE_URL=f"file://{evidence}").start()
    try:
        alerts = distinct_alerts(20)
        bodies = [alerts[i % 20] for i in range(10_000)]
        started = time.monotonic()
        results = storm(intake.url, bodies)
        elapsed = time.monotonic() - started
        assert Counter(status for _, status, _ in results) == {202: 10_000}
        outcomes = Counter(answer["alerts"][0]["outcome"] for _, _, answer in results)
        assert outcomes == {"new_incident": 20, "joined": 9_980}
        intake.wait_drained(timeout=180)
        check_every_ack(evidence, [(i, a) for i, _, a in results], {fingerprint(b) for b in alerts})
        assert intake.metric("irp_intake_alerts_accepted_total") == 10_000
        assert intake.metric("irp_intake_alerts_deduplicated_total") == 9_980
        assert intake.metric("irp_intake_runs_created_total") == 20
        print(f"storm: 10,000 alerts acknowledged in {elapsed:.1f}s ({10_000 / elapsed:.0f}/s)")
    finally:
        intake.stop()


def test_sigkill_mid_storm_loses_nothing_and_duplicates_nothing(deployments: str, tmp_path: Path) -> None:
    evidence = tmp_path / "evidence"
    first = make_intake(tmp_path, deployments, IRP_EVIDENCE_URL=f"file://{evidence}").start()
    alerts = distinct_alerts(20)
    bodies = [alerts[i % 20] for i in range(4_000)]
    acked: list[int] = []
    outcome: dict = {}
    sender = threading.Thread(target=lambda: outcome.setdefault("results", storm(first.url, bodies, 8, acked)))
    sender.start()
    deadline = time.monotonic() + 120
    while len(acked) < 1_500:
        assert time.monotonic() < deadline and sender.is_alive(), f"only {len(acked)} acks"
        time.sleep(0.01)
    first.kill()
    sender.join(120)
    results = outcome["results"]
    answers = [(i, a) for i, status, a in results if status == 202]
    unacked = [i for i, status, _ in results if status != 202]
    assert len(answers) >= 1_500 and unacked, "the kill should interrupt the storm"

    second = make_intake(tmp_path, deployments, IRP_EVIDENCE_URL=f"file://{evidence}")
    assert second.journal == first.journal
    second.start()
    try:
        retried = storm(second.url, [bodies[i] for i in unacked], 8)  # the sender retries what was not acknowledged
        assert Counter(status for _, status, _ in retried) == {202: len(unacked)}
        second.wait_drained(timeout=180)
        check_every_ack(evidence, answers + [(i, a) for i, _, a in retried], {fingerprint(b) for b in alerts})
        print(f"SIGKILL after {len(answers)} acks; {len(unacked)} resent after restart")
    finally:
        second.stop()


def test_prefect_down_alerts_accepted_runs_created_when_back(deployments: str, tmp_path: Path) -> None:
    relay = Relay(urlsplit(deployments).port)  # the intake reaches Prefect only through the relay, now down
    intake = make_intake(tmp_path, f"http://127.0.0.1:{relay.port}/api",
                         IRP_EVIDENCE_URL=f"file://{tmp_path / 'evidence'}").start()
    try:
        alerts = distinct_alerts(10)
        started = time.monotonic()
        results = storm(intake.url, [alerts[i % 10] for i in range(30)], 4)
        assert Counter(status for _, status, _ in results) == {202: 30}
        assert time.monotonic() - started < 10
        time.sleep(3)
        health = intake.health()
        assert health["backlog"]["run"] == 10 and "Connect" in health["last_error"]
        assert flow_runs_for({fingerprint(b) for b in alerts}) == []
        relay.up()
        intake.wait_drained(timeout=120)
        check_every_ack(tmp_path / "evidence", [(i, a) for i, _, a in results], {fingerprint(b) for b in alerts})
        assert intake.metric("irp_intake_runs_created_total") == 10
        assert intake.metric("irp_intake_run_errors_total") >= 1
        first = results[0][2]
        status = httpx.get(f"{intake.url}/deliveries/{first['delivery_id']}", headers=bearer(), timeout=10).json()
        assert status["alerts"][0]["flow_run_id"]
    finally:
        intake.stop()
        relay.down()
