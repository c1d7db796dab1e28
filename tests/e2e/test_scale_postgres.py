"""Beyond one machine: the Prefect server on PostgreSQL, two workers on the pool, runs spread over them.

Needs IRP_TEST_POSTGRES_URL (a role allowed to create databases); .ci/run starts Debian's
PostgreSQL and sets it. The module gets a fresh database.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from lifecycle_fixtures import EVERYONE_AGREES

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_database(postgres_databases) -> str:
    """A fresh database for this module."""
    return postgres_databases()


class Processes:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env, self.running = root, env, []

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "wb")
        process = subprocess.Popen(args, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.running.append(process)
        return process

    def run(self, args: list[str]) -> None:
        result = subprocess.run(args, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    def stop(self) -> None:
        for process in reversed(self.running):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.running:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def server_on_postgres(postgres_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Processes]]:
    root = tmp_path_factory.mktemp("pg-stack")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(root / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_DATABASE_CONNECTION_URL=postgres_database.replace("postgresql://", "postgresql+asyncpg://"),
        PREFECT_API_URL=api,
        PREFECT_UI_API_URL=api,
        PREFECT_WORKER_QUERY_SECONDS="1",
        IRP_EVIDENCE_URL=f"file://{root / 'evidence'}",
    )
    processes = Processes(root, env)
    processes.start("server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)])
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                if httpx.get(f"{api}/health", timeout=2).is_success:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (root / "server.log").read_text()[-3000:]
            time.sleep(1)
        processes.run([str(BIN / "prefect"), "work-pool", "create", "irp", "--type", "process", "--overwrite"])
        processes.run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"])
        for index in range(2):
            processes.start(f"worker-{index}", [str(BIN / "prefect"), "worker", "start", "--pool", "irp",
                                                "--name", f"worker-{index}", "--type", "process"])
        yield api, processes
    finally:
        processes.stop()


def test_runs_complete_on_a_postgres_backed_server_with_two_workers(
        server_on_postgres: tuple[str, Processes], postgres_database: str) -> None:
    api, processes = server_on_postgres
    alert = json.loads((REPO / "playbooks" / "samples" / "human_error.json").read_text())
    deployment = httpx.get(f"{api}/deployments/name/human_error/respond", timeout=10).json()
    ids = []
    for index in range(4):
        response = httpx.post(f"{api}/deployments/{deployment['id']}/create_flow_run", timeout=10,
                              json={"parameters": {"alert": {**alert, "fingerprint": f"pg-{index}"},
                                                   "decisions": EVERYONE_AGREES.model_dump(mode="json")}})
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    deadline = time.monotonic() + 600
    while True:
        runs = [httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json() for run_id in ids]
        states = [run["state_type"] for run in runs]
        if all(state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for state in states):
            break
        assert time.monotonic() < deadline, f"runs did not finish: {states}"
        time.sleep(2)
    assert states == ["COMPLETED"] * 4

    async def stored() -> tuple[int, set[str]]:
        connection = await asyncpg.connect(postgres_database)
        try:
            count = await connection.fetchval("SELECT count(*) FROM flow_run WHERE id = ANY($1::uuid[])", ids)
            names = await connection.fetch("SELECT name FROM flow_run WHERE id = ANY($1::uuid[])", ids)
            return count, {row["name"].split()[0] for row in names}
        finally:
            await connection.close()

    count, incident_ids = asyncio.run(stored())
    assert count == 4 and len(incident_ids) == 4 and all(i.startswith("INC-") for i in incident_ids)
    workers = {
        name for name in ("worker-0", "worker-1")
        if b"submitting flow run" in (processes.root / f"{name}.log").read_bytes()
    }
    assert workers, "no worker picked up a run"
