"""An in-process worker for the irp pool: runs start within a second of being scheduled.

Prefect's process worker starts a new Python process per run (2–4 s of imports here before the
first task). This worker polls the pool every quarter second, claims each scheduled run by moving
it to Pending (the server refuses a second claim, so several workers can share a pool), and runs
it in a thread of this long-lived process, where Prefect, the flows and the playbook loader are
already imported. `irp worker` starts it; `irp stack` uses it unless told `--process-worker`.

Limits: a run cancelled from the UI is marked Cancelled but its thread finishes the step it is
in; runs of one worker share its memory, so a runaway action affects the others.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.flow_engine import load_flow_from_entrypoint, run_flow
from prefect.states import Pending

log = logging.getLogger("irp.worker")

HEARTBEAT_SECONDS = 15


class InProcessWorker:
    """Poll a work pool, claim scheduled runs, execute them in threads of this process."""

    def __init__(self, pool: str = "irp", poll_seconds: float = 0.25, max_runs: int = 16, name: str | None = None):
        self.pool = pool
        self.poll_seconds = poll_seconds
        self.name = name or f"irp-inprocess-{socket.gethostname()}-{os.getpid()}"
        self.executor = ThreadPoolExecutor(max_workers=max_runs, thread_name_prefix="irp-run")
        self.max_runs = max_runs
        self.active: set[UUID] = set()
        self.flows: dict[str, Flow] = {}
        self.stopping = threading.Event()
        self._lock = threading.Lock()

    def _flow(self, entrypoint: str) -> Flow:
        if entrypoint not in self.flows:
            self.flows[entrypoint] = load_flow_from_entrypoint(entrypoint)
        return self.flows[entrypoint]

    def _execute(self, flow_run: FlowRun, entrypoint: str) -> None:
        try:
            flow = self._flow(entrypoint)
            state = run_flow(flow, flow_run=flow_run, parameters=flow_run.parameters, return_type="state")
            log.info("flow run %s (%s) finished: %s", flow_run.name, flow_run.id, getattr(state, "name", state))
        except BaseException as exc:  # report and keep the worker alive; the engine recorded the state
            log.error("flow run %s (%s) crashed in the worker: %s", flow_run.name, flow_run.id, exc)
        finally:
            with self._lock:
                self.active.discard(flow_run.id)

    def poll_once(self, client: Any, entrypoints: dict[UUID, str]) -> int:
        """Claim and start every run due now; returns how many started."""
        with self._lock:
            room = self.max_runs - len(self.active)
        if room <= 0:
            return 0
        due = client.get_scheduled_flow_runs_for_work_pool(
            self.pool, scheduled_before=datetime.now(UTC) + timedelta(seconds=1))
        started = 0
        for response in due[:room]:
            flow_run = response.flow_run
            if flow_run.id in self.active or flow_run.deployment_id is None:
                continue
            result = client.set_flow_run_state(flow_run.id, Pending())
            if result.status.value != "ACCEPT":
                continue  # another worker claimed it
            if flow_run.deployment_id not in entrypoints:
                entrypoints[flow_run.deployment_id] = client.read_deployment(flow_run.deployment_id).entrypoint
            with self._lock:
                self.active.add(flow_run.id)
            self.executor.submit(self._execute, flow_run, entrypoints[flow_run.deployment_id])
            started += 1
        return started

    def run(self) -> None:
        """Poll until stop() is called, then wait for the runs in progress."""
        entrypoints: dict[UUID, str] = {}
        last_heartbeat = 0.0
        with get_client(sync_client=True) as client:
            while not self.stopping.is_set():
                try:
                    if time.monotonic() - last_heartbeat > HEARTBEAT_SECONDS:
                        client.send_worker_heartbeat(self.pool, self.name, heartbeat_interval_seconds=HEARTBEAT_SECONDS)
                        last_heartbeat = time.monotonic()
                    self.poll_once(client, entrypoints)
                except Exception as exc:  # the server may restart: keep polling
                    log.warning("polling work pool %s failed: %s", self.pool, exc)
                    self.stopping.wait(2)
                self.stopping.wait(self.poll_seconds)
        self.executor.shutdown(wait=True)

    def stop(self) -> None:
        self.stopping.set()


def serve(pool: str, poll_seconds: float, max_runs: int) -> None:
    """Run a worker until SIGINT or SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    worker = InProcessWorker(pool=pool, poll_seconds=poll_seconds, max_runs=max_runs)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: worker.stop())
    log.info("worker %s polling pool %s every %.2f s (up to %d runs at once)", worker.name, pool, poll_seconds, max_runs)
    worker.run()
