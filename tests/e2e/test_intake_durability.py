"""No alert lost, none duplicated: the storm, SIGKILL mid-storm, and the Prefect server down.

Exact counts against the real Prefect server (session fixture) with the incident deployments applied.
Load is bounded: at most 10,000 requests per test, 16 at a time, on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from intake_harness import Relay, apply_deployments, bearer, flow_runs_for, make_intake, sample

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def deployments(prefect_server: str) -> str:
    apply_deployments()
    return prefect_server


def distinct_alerts(n: int) -> list[bytes]:
    """n Alertmanager notifications, each one distinct alert (own fingerprint and tenant)."""
    base = sample("alertmanager.json")
    bodies = []
    for _ in range(n):
        doc = copy.deepcopy(base)
        alert = doc["alerts"][0]
        alert["fingerprint"] = uuid.uuid4().hex[:16]
        alert["labels"]["tenant"] = f"tenant-{alert['fingerprint']}"
        bodies.append(json.dumps(doc).encode())
    return bodies


def fingerprint(body: bytes) -> str:
    return json.loads(body)["alerts"][0]["fingerprint"]


def storm(url: str, bodies: list[bytes], concurrency: int = 16, acked: list | None = None) -> list:
    """POST every body (in order, `concurrency` at a time); returns (index, status or None, json or None)."""
    results: list = [None] * len(bodies)

    async def main() -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(bodies)):
            queue.put_nowait(i)
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=url, headers=bearer(), limits=limits, timeout=30) as client:
            async def worker() -> None:
                while not queue.empty():
                    i = queue.get_nowait()
                    try:
                        response = await client.post("/alerts/alertmanager", content=bodies[i])
                        results[i] = (i, response.status_code, response.json())
                    except (httpx.HTTPError, ValueError):
                        results[i] = (i, None, None)
                    if acked is not None and results[i][1] == 202:
                        acked.append(i)

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    asyncio.run(main())
    return results


def timeline(evidence: Path, incident_id: str) -> list[dict]:
    """The incident's external timeline entries, each entry once (the store merges identical re-appends)."""
    path = evidence / incident_id / "events.jsonl"
    if not path.exists():
        return []
    unique = {}
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        unique.setdefault((entry["at"], entry["kind"], entry["message"]), entry)
    return list(unique.values())


def check_every_ack(evidence: Path, answers: list[tuple[int, dict]], fingerprints: set[str]) -> None:
    """Each acknowledged alert has its run (new incident) or exactly one timeline entry listing it (joined)."""
    runs = flow_runs_for(fingerprints)
    run_incidents = Counter(r.parameters["incident_id"] for r in runs)
    assert len(runs) == len(fingerprints), f"{len(runs)} runs for {len(fingerprints)} distinct alerts"
    assert set(Counter(r.parameters["alert"]["fingerprint"] for r in runs).values()) == {1}
    joined: dict[str, set[str]] = {}
    for _, answer in answers:
        outcome = answer["alerts"][0]
        if outcome["outcome"] == "new_incident":
            assert run_incidents[outcome["incident_id"]] == 1
        else:
            assert outcome["outcome"] == "joined"
            joined.setdefault(outcome["incident_id"], set()).add(answer["delivery_id"])
    for incident_id, deliveries in joined.items():
        assert run_incidents[incident_id] == 1
        listed = [d for entry in timeline(evidence, incident_id) for d in entry["data"]["deliveries"]]
        assert len(listed) == len(set(listed)), "a delivery recorded twice on the timeline"
        assert deliveries <= set(listed), f"{len(deliveries - set(listed))} acknowledged repeats missing"


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
