"""The backlog: outbox items and runs waiting for a worker, their age in /metrics, and /healthz degraded past the limit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from service_fixtures import intake_request

from irp.intake.approvals import PrefectRuns
from irp.intake.backlog import RUNS_READ_EVERY, BacklogMonitor
from irp.intake.service import IntakeService
from irp.settings import Settings

TOKEN = "backlog-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class StoppedWorkers(PrefectRuns):
    """The Prefect server's answer when no worker takes the runs: every run created is still waiting."""

    def __init__(self) -> None:
        self.created: list[datetime] = []
        self.reads = 0

    def waiting(self, tag: str = "irp-intake") -> tuple[int, datetime | None]:
        self.reads += 1
        return len(self.created), (min(self.created) if self.created else None)


@pytest.fixture
def stopped(tmp_path: Path) -> Iterator[tuple[IntakeService, StoppedWorkers, Clock]]:
    runs = StoppedWorkers()

    def create_run(payload: dict) -> str:
        runs.created.append(datetime.fromtimestamp(clock.now, UTC))
        return f"run-{len(runs.created)}"

    clock = Clock(datetime.now(UTC).timestamp())
    settings = Settings(webhook_token=TOKEN, intake_journal=str(tmp_path / "journal.sqlite3"),
                        intake_backlog_max_age_seconds=60)
    service = IntakeService(settings, create_run=create_run, append_event=lambda incident, entry: None, runs=runs)
    service.backlog = BacklogMonitor(service.journal, runs.waiting, clock=clock)
    yield service, runs, clock
    service.journal.close()


def _post(service: IntakeService, n: int) -> None:
    for i in range(n):
        answer = intake_request(service, "POST", "/alerts/generic", headers=AUTH,
                                json={"title": f"burst {i}", "fingerprint": f"burst-{i}",
                                      "labels": {"incident_type": "human_error"}})
        assert answer.status_code == 202, answer.text


def _metric(text: str, name: str) -> float:
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_runs_waiting_for_a_stopped_worker_turn_health_degraded_past_the_limit(stopped) -> None:
    service, runs, clock = stopped
    _post(service, 3)
    assert service.backlog.read().items["run"] == 3  # acknowledged and journaled, nothing created yet
    deadline = time.monotonic() + 20
    while service.journal.backlog()["run"]:
        assert time.monotonic() < deadline
        service.outbox.drain_once()
        time.sleep(0.05)
    service.outbox.stop()
    assert len(runs.created) == 3
    clock.now += RUNS_READ_EVERY  # the work pool's reading is reused for a few seconds
    health = intake_request(service, "GET", "/healthz", headers=AUTH).json()
    assert health["status"] == "ok" and health["runs_waiting"] == {"count": 3, "oldest_seconds": RUNS_READ_EVERY}

    clock.now += 61  # the worker is still stopped a minute later
    health = intake_request(service, "GET", "/healthz", headers=AUTH).json()
    assert health["status"] == "degraded" and health["runs_waiting"]["count"] == 3
    assert health["late"] == ["3 run(s) waiting for a worker, the oldest for 66 s (is `irp worker` running?)"]
    assert intake_request(service, "GET", "/healthz").json() == {"status": "degraded"}  # no detail without the token
    metrics = intake_request(service, "GET", "/metrics").text
    assert _metric(metrics, "irp_intake_runs_waiting ") == 3
    assert _metric(metrics, "irp_intake_runs_waiting_age_seconds") == pytest.approx(66, abs=1)


def test_an_outbox_that_cannot_create_runs_shows_its_age(stopped) -> None:
    service, _runs, clock = stopped
    _post(service, 2)  # the outbox not started: the items stay queued
    clock.now += 90
    metrics = intake_request(service, "GET", "/metrics").text
    assert _metric(metrics, 'irp_intake_journal_backlog{kind="run"}') == 2
    assert _metric(metrics, 'irp_intake_journal_backlog_age_seconds{kind="run"}') == pytest.approx(90, abs=5)
    health = intake_request(service, "GET", "/healthz", headers=AUTH).json()
    assert health["status"] == "degraded" and health["late"][0].startswith("run items queued in the outbox for")


def test_the_work_pool_is_read_at_most_every_few_seconds_and_a_silent_server_is_unknown(stopped) -> None:
    service, runs, clock = stopped
    for _ in range(5):
        service.backlog.read()
    assert runs.reads == 1
    clock.now += RUNS_READ_EVERY
    service.backlog.read()
    assert runs.reads == 2

    def down() -> tuple[int, datetime | None]:
        raise httpx.ConnectError("connection refused")

    monitor = BacklogMonitor(service.journal, down, clock=clock)
    backlog = monitor.read()
    assert backlog.runs_waiting is None and backlog.too_old(1) == []
