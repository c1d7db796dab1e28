"""Several intake replicas on one PostgreSQL journal (the topology beyond one machine).

A storm split over two replicas starts exactly one run per distinct alert; a replica SIGKILLed
mid-storm loses nothing: the other carries out the outbox items it held once their lease expires,
and the alerts it did not acknowledge, resent to the other, join their incidents. With the database
unreachable the intake answers 503 (retry), never 5xx for a client's fault nor a lost alert, and
resumes by itself. Real `irp webhook`
processes, the session's Prefect server, PostgreSQL from IRP_TEST_POSTGRES_URL; 127.0.0.1 only.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from intake_harness import Intake, Relay, bearer, check_every_ack, distinct_alerts, fingerprint, make_intake, storm

pytestmark = pytest.mark.timeout(600)
LEASE_SECONDS = 3


@pytest.fixture
def replicas(deployments: str, postgres_databases, tmp_path: Path):
    """Start n replicas sharing one fresh journal database and one evidence store."""
    started: list[Intake] = []
    shared = {"IRP_INTAKE_JOURNAL": postgres_databases(), "IRP_EVIDENCE_URL": f"file://{tmp_path / 'evidence'}",
              "IRP_INTAKE_LEASE_SECONDS": str(LEASE_SECONDS)}

    def start(n: int) -> list[Intake]:
        for _ in range(n):
            started.append(make_intake(tmp_path, deployments, **shared).start())
        return started[-n:]

    yield start
    for intake in started:
        intake.stop()


def replica_through(relay: Relay, url: str) -> str:
    """The journal URL with the database reached through the relay."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.port}", f":{relay.port}")))


def storms(targets: list[tuple[Intake, list[bytes]]], acked: list[list[int]]) -> tuple[list, list[threading.Thread]]:
    """One storm per (replica, bodies), all at once; results[k] is the k-th storm's result list."""
    results: list = [None] * len(targets)

    def run(k: int) -> None:
        intake, bodies = targets[k]
        results[k] = storm(intake.url, bodies, 8, acked[k])

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(targets))]
    for thread in threads:
        thread.start()
    return results, threads


def test_two_replicas_split_a_storm_and_start_exactly_one_run_per_alert(replicas, tmp_path: Path) -> None:
    first, second = replicas(2)
    alerts = distinct_alerts(20)
    bodies = [alerts[i % 20] for i in range(6_000)]
    results, threads = storms([(first, bodies[0::2]), (second, bodies[1::2])], [[], []])
    for thread in threads:
        thread.join(300)
    answers = [answer for result in results for _, status, answer in result if status == 202]
    assert len(answers) == 6_000
    assert Counter(a["alerts"][0]["outcome"] for a in answers) == {"new_incident": 20, "joined": 5_980}
    first.wait_drained(timeout=180)
    check_every_ack(tmp_path / "evidence", list(enumerate(answers)), {fingerprint(b) for b in alerts})
    runs = sum(intake.metric("irp_intake_runs_created_total") for intake in (first, second))
    assert runs == 20
    assert first.health()["journal"].startswith("postgresql://") and "irp-ci" not in first.health()["journal"]


def test_a_replica_killed_mid_storm_loses_nothing(replicas, tmp_path: Path) -> None:
    first, second = replicas(2)
    alerts = distinct_alerts(20)
    bodies = [alerts[i % 20] for i in range(4_000)]
    mine, theirs = bodies[0::2], bodies[1::2]
    acked: list[list[int]] = [[], []]
    results, threads = storms([(first, mine), (second, theirs)], acked)
    deadline = time.monotonic() + 120
    while len(acked[0]) < 600:
        assert time.monotonic() < deadline and threads[0].is_alive(), f"only {len(acked[0])} acks"
        time.sleep(0.01)
    first.kill()
    for thread in threads:
        thread.join(300)
    answers = [(i, a) for result in results for i, status, a in result if status == 202]
    unacked = [i for i, status, _ in results[0] if status != 202]
    assert unacked, "the kill should interrupt the first replica's storm"
    assert all(status == 202 for _, status, _ in results[1])

    resent = storm(second.url, [mine[i] for i in unacked], 8)  # senders retry what was not acknowledged
    assert Counter(status for _, status, _ in resent) == {202: len(unacked)}
    second.wait_drained(timeout=180)  # includes what the dead replica held, once its lease expired
    answers += [(i, a) for i, _, a in resent]
    check_every_ack(tmp_path / "evidence", answers, {fingerprint(b) for b in alerts})
    print(f"SIGKILL after {len(acked[0])} acks on the first replica; {len(unacked)} resent to the second")


def test_database_outage_answers_retry_later_and_resumes(deployments: str, postgres_databases, tmp_path: Path) -> None:
    url = postgres_databases()
    relay = Relay(urlsplit(url).port)  # the intake reaches PostgreSQL only through the relay
    relay.up()
    intake = make_intake(tmp_path, deployments, IRP_INTAKE_JOURNAL=replica_through(relay, url),
                         IRP_EVIDENCE_URL=f"file://{tmp_path / 'evidence'}").start()
    alerts = distinct_alerts(3)
    try:
        assert httpx.post(f"{intake.url}/alerts/alertmanager", content=alerts[0], headers=bearer()).status_code == 202
        relay.down()
        during = httpx.post(f"{intake.url}/alerts/alertmanager", content=alerts[1], headers=bearer(), timeout=60)
        assert (during.status_code, during.headers.get("retry-after")) == (503, "10")
        assert "journal cannot record" in during.json()["detail"]
        assert httpx.get(f"{intake.url}/healthz").status_code == 503
        assert httpx.get(f"{intake.url}/metrics").status_code == 503
        relay.up()
        deadline = time.monotonic() + 60
        while (after := httpx.post(f"{intake.url}/alerts/alertmanager", content=alerts[1], headers=bearer(),
                                   timeout=60)).status_code == 503:  # a sender retries after Retry-After
            assert time.monotonic() < deadline, after.text
            time.sleep(0.5)
        assert after.status_code == 202
        intake.wait_drained(timeout=120)
        answers = [(0, a) for a in (httpx.post(f"{intake.url}/alerts/alertmanager", content=body, headers=bearer())
                                   .json() for body in alerts[:2])]
        assert [a["alerts"][0]["outcome"] for _, a in answers] == ["joined", "joined"]
        intake.wait_drained(timeout=120)
        check_every_ack(tmp_path / "evidence", answers, {fingerprint(b) for b in alerts[:2]})
        log = intake.log.read_text()
        assert "Traceback" not in log and "journal" in log
        assert not urlsplit(url).password or urlsplit(url).password not in log
    finally:
        intake.stop()
        relay.down()
