"""Workers of one pool share a burst's due runs: one claim per run, and a run nobody took is anyone's."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from prefect.client.schemas.objects import FlowRun

from irp.worker import SHARE_GRACE_SECONDS, InProcessWorker


def _runs(count: int, due: datetime) -> list[FlowRun]:
    return [FlowRun(id=uuid.uuid4(), flow_id=uuid.uuid4(), next_scheduled_start_time=due) for _ in range(count)]


def test_each_due_run_is_one_online_workers() -> None:
    runs = _runs(40, datetime.now(UTC))
    peers = ["worker-a", "worker-b"]
    taken = [InProcessWorker(name=name).mine(runs, peers) for name in peers]
    assert {r.id for r in taken[0]}.isdisjoint({r.id for r in taken[1]})
    assert len(taken[0]) + len(taken[1]) == 40 and taken[0] and taken[1]


def test_a_run_left_past_the_grace_is_anyones() -> None:
    runs = _runs(20, datetime.now(UTC) - timedelta(seconds=SHARE_GRACE_SECONDS + 1))
    assert InProcessWorker(name="worker-a").mine(runs, ["worker-a", "worker-b"]) == runs


def test_alone_or_unlisted_a_worker_takes_every_run() -> None:
    runs = _runs(10, datetime.now(UTC))
    assert InProcessWorker(name="worker-a").mine(runs, ["worker-a"]) == runs
    assert InProcessWorker(name="worker-c").mine(runs, ["worker-a", "worker-b"]) == runs
