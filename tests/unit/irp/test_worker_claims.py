"""irp worker's economies on the Prefect server: one claim per run among the workers of a host, and the
server's default result storage read once a minute instead of twice per run."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from uuid import uuid4

import prefect.results as results
import pytest

from irp.prefect_clients import _Remembered, remember_result_storage
from irp.worker import DUE_BATCH, InProcessWorker, LocalClaims


class TestLocalClaims:
    def test_one_worker_asks_while_the_other_holds_the_run(self, tmp_path: Path) -> None:
        mine, theirs = LocalClaims(tmp_path), LocalClaims(tmp_path)
        run = uuid4()
        with mine.first(run) as first:
            assert first
            with theirs.first(run) as second:
                assert not second
            with theirs.first(uuid4()) as other_run:  # another run is not held
                assert other_run
        assert not (tmp_path / str(run)).exists()  # removed once the server answered
        with theirs.first(run) as again:  # a run due again (resumed) is claimed afresh
            assert again

    def test_a_dead_holder_frees_the_run(self, tmp_path: Path) -> None:
        run = str(uuid4())
        script = ("import fcntl, sys, time; h = open(sys.argv[1], 'a'); fcntl.flock(h, fcntl.LOCK_EX); "
                  "print('held', flush=True); time.sleep(60)")
        holder = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / run)], stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "held"
            with LocalClaims(tmp_path).first(run) as first:
                assert not first
            holder.kill()
            holder.wait(10)
            with LocalClaims(tmp_path).first(run) as first:
                assert first
        finally:
            holder.kill()
            holder.wait(10)

    def test_held_lists_the_runs_being_claimed_and_clears_what_a_dead_worker_left(self, tmp_path: Path) -> None:
        claims, claiming, left = LocalClaims(tmp_path), uuid4(), uuid4()
        (tmp_path / str(left)).touch()  # its worker died between the file and the server's answer
        (tmp_path / "notes.txt").touch()
        with claims.first(claiming):
            assert claims.held() == [claiming]
        assert not (tmp_path / str(left)).exists() and claims.held() == []

    def test_an_unusable_folder_leaves_the_claim_to_the_server(self, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
        (tmp_path / "file").write_text("not a folder")
        with caplog.at_level(logging.WARNING, logger="irp.worker"):
            claims = LocalClaims(tmp_path / "file" / "claims")
        assert "claims are settled by the server only" in caplog.text
        with claims.first(uuid4()) as first, claims.first(uuid4()) as second:
            assert first and second


class _Client:
    """The one server call a claim makes."""

    def __init__(self, answer: str) -> None:
        self.answer, self.claims = answer, []

    def set_flow_run_state(self, run_id, state):  # noqa: ANN001, ANN201
        self.claims.append((run_id, state.type.value))
        return SimpleNamespace(status=SimpleNamespace(value=self.answer))


class TestClaim:
    @pytest.fixture
    def worker(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> InProcessWorker:
        worker = InProcessWorker(pool="p", max_runs=2, name="w")
        worker.claims = LocalClaims(tmp_path)
        monkeypatch.setattr(worker, "_execute", lambda run, entrypoint: worker.executed.append(run.id))
        worker.executed = []
        return worker

    def test_the_holder_of_the_run_claims_it_at_the_server_and_runs_it(self, worker: InProcessWorker) -> None:
        run, client = SimpleNamespace(id=uuid4()), _Client("ACCEPT")
        worker.active.add(run.id)
        worker._claim(client, run, "flows/x.py:f")
        assert client.claims == [(run.id, "PENDING")] and worker.executed == [run.id]

    def test_a_run_another_worker_of_the_host_holds_costs_no_request(self, worker: InProcessWorker,
                                                                     tmp_path: Path) -> None:
        run, client = SimpleNamespace(id=uuid4()), _Client("ACCEPT")
        worker.active.add(run.id)
        with LocalClaims(tmp_path).first(run.id):
            worker._claim(client, run, "flows/x.py:f")
        assert client.claims == [] and worker.executed == [] and run.id not in worker.active

    def test_a_run_the_server_gave_to_another_host_is_let_go(self, worker: InProcessWorker) -> None:
        run, client = SimpleNamespace(id=uuid4()), _Client("REJECT")
        worker.active.add(run.id)
        worker._claim(client, run, "flows/x.py:f")
        assert len(client.claims) == 1 and worker.executed == [] and run.id not in worker.active


class _Due:
    """A server with `due` scheduled runs: answers the worker's read as Prefect would (filter, limit)."""

    def __init__(self, due: int) -> None:
        self.runs = [SimpleNamespace(id=uuid4(), deployment_id="d") for _ in range(due)]
        self.reads = []

    def read_flow_runs(self, flow_run_filter, limit, **_):  # noqa: ANN001, ANN201
        excluded = set(flow_run_filter.id.not_any_ or []) if flow_run_filter.id else set()
        self.reads.append((len(excluded), limit))
        return [run for run in self.runs if run.id not in excluded][:limit]

    def read_work_pool(self, name):  # noqa: ANN001, ANN201
        return SimpleNamespace(is_paused=False, concurrency_limit=None)

    def read_work_queues(self, work_pool_name):  # noqa: ANN001, ANN201
        return []


class TestDueRead:
    @pytest.fixture
    def worker(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> InProcessWorker:
        worker = InProcessWorker(pool="p", max_runs=20, name="w")
        worker.claims = LocalClaims(tmp_path)
        worker._last_prefect_poll = time.monotonic()  # not Prefect's poll this time
        monkeypatch.setattr(worker.executor, "submit", lambda *args: None)  # claims are tested above
        return worker

    def test_a_batch_at_a_time_without_the_runs_this_host_is_claiming(self, worker: InProcessWorker,
                                                                       tmp_path: Path) -> None:
        server, entrypoints = _Due(2 * DUE_BATCH + 4), {"d": "flows/x.py:f"}
        with LocalClaims(tmp_path).first(server.runs[0].id):  # another worker of the host is claiming it
            assert worker.poll_once(server, entrypoints) == DUE_BATCH
            assert server.reads == [(1, DUE_BATCH)] and server.runs[0].id not in worker.active
            assert worker._wake.is_set()  # a full batch: look again at once
            worker._wake.clear()
            assert worker.poll_once(server, entrypoints) == DUE_BATCH
            assert server.reads[-1] == (1 + DUE_BATCH, DUE_BATCH)  # its own runs left out of the read too
            worker._wake.clear()
            assert worker.poll_once(server, entrypoints) == 3  # the rest: not a full batch
            assert not worker._wake.is_set()
            assert worker.poll_once(server, entrypoints) == 0
        assert len(worker.active) == 2 * DUE_BATCH + 3


class TestResultStorage:
    def test_read_once_per_period_by_sync_and_async_readers(self) -> None:
        now, reads = [0.0], []
        memory = _Remembered(60, clock=lambda: now[0])

        def read() -> str:
            reads.append(now[0])
            return f"block read at {now[0]}"

        async def aread() -> str:
            return read()

        assert memory.get(read) == "block read at 0.0"
        now[0] = 59.9
        assert asyncio.run(memory.aget(aread)) == "block read at 0.0" and memory.get(read) == "block read at 0.0"
        now[0] = 60.0
        assert asyncio.run(memory.aget(aread)) == "block read at 60.0"
        assert reads == [0.0, 60.0]

    def test_prefect_asks_the_server_once_for_many_runs(self, monkeypatch: pytest.MonkeyPatch) -> None:
        asked = []
        monkeypatch.setattr(results, "_read_server_default_result_storage_block_id", lambda: asked.append(1))
        monkeypatch.setattr(results, "_aread_server_default_result_storage_block_id", _async_none)
        remember_result_storage()
        remember_result_storage()  # idempotent: not wrapped twice
        for _ in range(5):
            results._get_default_result_storage()
        assert asked == [1]


async def _async_none() -> None:
    return None
