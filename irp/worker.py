"""An in-process worker for the irp pool: runs start within a second of being scheduled.

Prefect's process worker starts a new Python process per run (2–4 s of imports here before the
first task). This worker claims each due run of the pool by moving it to Pending (the server
refuses a second claim, so several workers can share a pool) and runs it in a thread of this
long-lived process, where Prefect, the flows and the checked playbooks are already loaded (at
start-up, not by the first run). `irp worker` starts it; `irp stack` uses it unless told
`--process-worker`.

When to look: the worker listens to the server's event stream, and the event of a run of its pool
entering a Scheduled-type state wakes it at once. It also looks every 2 s (runs scheduled ahead of
time, a missed event), or every `poll_seconds` (a quarter second) while the stream is down.

Who asks: every worker of the pool reads the same due runs, and the server accepts the first claim of
a run and refuses the others, each refusal a write in SQLite's single line (102 of 222 claims in a
burst of 100 incidents, with two workers). Workers sharing a `PREFECT_HOME` (one host) settle it
among themselves first: the worker holding the run's file lock (`LocalClaims`) asks, the others pass.
Workers on other hosts are still settled by the server. A read asks for `DUE_BATCH` runs at most, leaving
out those a worker of this host is claiming (the server builds every run it returns: in a burst, reads
of every due run returned 30 times more runs than were started), and a full batch is followed by the
next read at once.

How to look: with a read (`read_flow_runs`). Prefect's own poll, `get_scheduled_flow_runs`, also
writes: every call records the pool's queues and deployments as polled, two write transactions on
the server. Four polls a second per worker kept SQLite's single write lock busy, and requests that
read before they write (creating a run, taking a concurrency slot) failed with "database is
locked", each retried by the client 2, 4, 8… s later. So while the pool and its queues are neither
paused nor concurrency-limited (read every 2 s when runs are due), due runs are claimed straight
from the read; otherwise Prefect's poll decides which may start, called when the read shows a run
it has not offered yet and every 2 s while it holds some back. Prefect's poll also runs once per
heartbeat, keeping the pool, queues and deployments Ready.

Limits: a run cancelled from the UI is marked Cancelled but its thread finishes the step it is
in; runs of one worker share its memory, so a runaway action affects the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterNextScheduledStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
    WorkPoolFilter,
    WorkPoolFilterName,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import Pause
from prefect.flow_engine import load_flow_from_entrypoint, run_flow
from prefect.states import Pending

from irp.evidence import anchors, open_store
from irp.prefect_clients import remember_result_storage, share_tls_context
from irp.settings import get_settings

log = logging.getLogger("irp.worker")

HEARTBEAT_SECONDS = 15
POOL_CHECK_SECONDS = 2  # how often to read whether the pool or a queue is paused or limited
LISTENING_POLL_SECONDS = 2.0  # the periodic look while the event stream wakes the worker
DUE_BATCH = 8  # due runs read at once (a full batch: read again at once); each one read costs the server ~1 ms
DUE_STATES = ("Scheduled", "Late", "AwaitingRetry", "AwaitingConcurrencySlot", "Resuming")  # Scheduled-type


def without_suspension_observer() -> None:
    """Run this process's flows without Prefect's observer of suspensions asked from outside the run.

    Prefect (3.9) gives every deployed run a thread with its own event loop, client and event-stream
    subscription that waits for someone to suspend the run from the UI or the API, and its server filters
    every event once per subscriber: in a burst of 100 incidents, 100 subscriptions. irp's runs suspend
    themselves when they wait for people (irp/engine/waits.py); nothing in irp suspends a run from outside.
    Suspending a running irp run from the UI all the same takes effect when the run next changes state.
    """
    import prefect.flow_engine as flow_engine

    if hasattr(flow_engine, "observe_flow_run_suspension"):
        flow_engine.observe_flow_run_suspension = _no_observer


@contextlib.contextmanager
def _no_observer(*args: Any, **kwargs: Any) -> Iterator[None]:
    yield


class LocalClaims:
    """Which worker of this host asks the server to claim a run: the one that holds the run's file lock.

    A lock, not a mark: the kernel drops it when its worker dies, and it is removed once the server has
    answered, so a run that becomes due again (resumed) is claimed afresh. A folder that cannot be used
    leaves every run to the server's own refusal.
    """

    def __init__(self, folder: Path | None = None):
        if folder is None:
            from prefect.settings import PREFECT_HOME

            folder = Path(PREFECT_HOME.value()) / "irp-claims"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self.folder: Path | None = folder
        except OSError as exc:
            log.warning("claims are settled by the server only: cannot use %s: %s", folder, exc)
            self.folder = None

    def held(self) -> list[UUID]:
        """The runs some worker of this host is claiming now (a file left by a dead worker is removed)."""
        if self.folder is None:
            return []
        held = []
        for path in self.folder.iterdir():
            try:
                run_id = UUID(path.name)
                fd = os.open(path, os.O_RDWR)
            except (ValueError, OSError):
                continue
            try:
                if not _try_lock(fd):
                    held.append(run_id)
                else:  # nobody holds it: its worker died before the server answered
                    with contextlib.suppress(OSError):
                        path.unlink()
            finally:
                os.close(fd)
        return held

    @contextlib.contextmanager
    def first(self, run_id: UUID | str) -> Iterator[bool]:
        """True while this worker holds the run's lock (and should ask the server), False if another does."""
        if self.folder is None:
            yield True
            return
        path = self.folder / str(run_id)
        try:
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        except OSError:
            yield True
            return
        try:
            if not _try_lock(fd):
                yield False
                return
            try:
                yield True
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        finally:
            os.close(fd)


def _try_lock(fd: int) -> bool:
    """Take an exclusive flock on `fd` without waiting; False when another open file holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class InProcessWorker:
    """Poll a work pool, claim scheduled runs, execute them in threads of this process."""

    def __init__(self, pool: str = "irp", poll_seconds: float = 0.25, max_runs: int = 16, name: str | None = None):
        share_tls_context()  # each run creates several Prefect clients: one TLS context, not one each
        remember_result_storage()
        without_suspension_observer()
        self.pool = pool
        self.poll_seconds = poll_seconds
        self.name = name or f"irp-inprocess-{socket.gethostname()}-{os.getpid()}"
        self.executor = ThreadPoolExecutor(max_workers=max_runs, thread_name_prefix="irp-run")
        self.max_runs = max_runs
        self.claims = LocalClaims()
        self.active: set[UUID] = set()
        self.flows: dict[str, Flow] = {}
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._last_prefect_poll = 0.0
        self._passed_over: set[UUID] = set()  # due runs Prefect's last poll held back (paused, limited)
        self._pool_checked = -POOL_CHECK_SECONDS
        self._open = False  # pool and queues neither paused nor limited: every due run may start
        self._wake = threading.Event()
        self.listening = threading.Event()  # the event stream is connected
        self._listener: tuple[asyncio.AbstractEventLoop, asyncio.Task] | None = None

    def _flow(self, entrypoint: str) -> Flow:
        if entrypoint not in self.flows:
            self.flows[entrypoint] = load_flow_from_entrypoint(entrypoint)
        return self.flows[entrypoint]

    def warm_up(self, client: Any, entrypoints: dict[UUID, str]) -> None:
        """Load the flows of the pool's deployments and check the playbooks now, not in the first run."""
        deployments = client.read_deployments(work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[self.pool])))
        for deployment in deployments:
            entrypoints[deployment.id] = deployment.entrypoint
            try:
                self._flow(deployment.entrypoint)
            except Exception as exc:  # the run reports it when it starts
                log.warning("cannot load flow %s: %s", deployment.entrypoint, exc)
        from irp.engine.respond import check_playbooks

        for problem in check_playbooks():  # each run of that type will report it too
            log.warning("playbook: %s", problem)

    def _execute(self, flow_run: FlowRun, entrypoint: str) -> None:
        try:
            flow = self._flow(entrypoint)
            state = run_flow(flow, flow_run=flow_run, parameters=flow_run.parameters, return_type="state")
            log.info("flow run %s (%s) finished: %s", flow_run.name, flow_run.id, getattr(state, "name", state))
        except Pause:  # suspended, waiting for people (irp/engine/waits.py): resumed later, by any worker
            log.info("flow run %s (%s) suspended", flow_run.name, flow_run.id)
        except BaseException as exc:  # report and keep the worker alive; the engine recorded the state
            log.error("flow run %s (%s) crashed in the worker: %s: %s", flow_run.name, flow_run.id,
                      type(exc).__name__, exc)
        finally:
            with self._lock:
                self.active.discard(flow_run.id)

    def _due(self, client: Any, room: int) -> list[FlowRun]:
        """The pool's scheduled runs due within a second that this worker does not hold, earliest first: one read,
        no write on the server."""
        held = set(self.claims.held())  # the folder is read outside the worker's lock
        with self._lock:
            held |= self.active
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(not_any_=list(held)) if held else None,
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
                next_scheduled_start_time=FlowRunFilterNextScheduledStartTime(
                    before_=datetime.now(UTC) + timedelta(seconds=1)),
            ),
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[self.pool])),
            sort=FlowRunSort.NEXT_SCHEDULED_START_TIME_ASC,
            limit=min(room, DUE_BATCH),
        )

    def _pool_open(self, client: Any) -> bool:
        """Whether Prefect's poll would offer every due run: no pause and no concurrency limit on the pool or a queue."""
        if time.monotonic() - self._pool_checked >= POOL_CHECK_SECONDS:
            pool = client.read_work_pool(self.pool)
            queues = client.read_work_queues(work_pool_name=self.pool)
            self._open = not pool.is_paused and pool.concurrency_limit is None and all(
                not queue.is_paused and queue.concurrency_limit is None for queue in queues)
            self._pool_checked = time.monotonic()
        return self._open

    def _prefect_poll(self, client: Any) -> list[FlowRun]:
        """Prefect's poll: the runs the pool may start now; records the pool's queues and deployments as polled."""
        self._last_prefect_poll = time.monotonic()
        offered = client.get_scheduled_flow_runs_for_work_pool(
            self.pool, scheduled_before=datetime.now(UTC) + timedelta(seconds=1))
        return [response.flow_run for response in offered]

    def poll_once(self, client: Any, entrypoints: dict[UUID, str]) -> int:
        """Hand every run due now to a thread that claims and runs it; returns how many were handed over."""
        with self._lock:
            room = self.max_runs - len(self.active)
        if room <= 0:
            return 0
        since, full = time.monotonic() - self._last_prefect_poll, False
        if since >= HEARTBEAT_SECONDS:
            runs = self._prefect_poll(client)
            self._passed_over = set()
        else:
            due = self._due(client, room)
            runs = [run for run in due if run.id not in self.active]
            if not runs:
                return 0
            full = len(due) == min(room, DUE_BATCH)
            if not self._pool_open(client):
                due = {run.id for run in runs}
                self._passed_over &= due
                if not due - self._passed_over and since < POOL_CHECK_SECONDS:
                    return 0  # Prefect's poll held these back a moment ago
                runs = self._prefect_poll(client)
                self._passed_over = due - {run.id for run in runs}
        started = 0
        for flow_run in runs[:room]:
            if flow_run.id in self.active or flow_run.deployment_id is None:
                continue
            if flow_run.deployment_id not in entrypoints:
                entrypoints[flow_run.deployment_id] = client.read_deployment(flow_run.deployment_id).entrypoint
            with self._lock:
                self.active.add(flow_run.id)
            self.executor.submit(self._claim, client, flow_run, entrypoints[flow_run.deployment_id])
            started += 1
        if full and started == len(runs):  # a whole batch handed over: more may be due, look again at once
            self._wake.set()
        return started

    def _claim(self, client: Any, flow_run: FlowRun, entrypoint: str) -> None:
        """Claim the run (Pending) and execute it, in the run's own thread: a burst's claims go out together,
        not one server round trip after another."""
        claimed = False
        with self.claims.first(flow_run.id) as first:
            try:
                claimed = first and client.set_flow_run_state(flow_run.id, Pending()).status.value == "ACCEPT"
            except Exception as exc:  # the next poll offers it again
                log.warning("could not claim flow run %s: %s", flow_run.id, exc)
        if claimed:
            self._execute(flow_run, entrypoint)
            return
        with self._lock:  # another worker claims it
            self.active.discard(flow_run.id)

    async def _subscribe(self) -> None:
        """Wake the poll loop at each event of a run of this pool becoming due; reconnect until cancelled."""
        from prefect.events.clients import get_events_subscriber
        from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

        while True:
            try:
                async with get_client() as client:
                    pool_id = (await client.read_work_pool(self.pool)).id
                events_filter = EventFilter(
                    event=EventNameFilter(name=[f"prefect.flow-run.{state}" for state in DUE_STATES]),
                    related=EventRelatedFilter(id=[f"prefect.work-pool.{pool_id}"]),
                )
                async with get_events_subscriber(filter=events_filter, reconnect_on_clean_close=True) as events:
                    self.listening.set()
                    self._wake.set()  # look once now: runs may have been scheduled before the stream was up
                    async for _event in events:
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the server may restart: the periodic look goes on meanwhile
                log.warning("event stream of work pool %s lost, polling every %.2f s until it is back: %s",
                            self.pool, self.poll_seconds, exc)
            finally:
                self.listening.clear()
            await asyncio.sleep(5)

    def _listen(self) -> None:
        loop = asyncio.new_event_loop()
        task = loop.create_task(self._subscribe())
        self._listener = (loop, task)
        if self.stopping.is_set():
            task.cancel()
        try:
            loop.run_until_complete(task)
        except asyncio.CancelledError:
            pass
        finally:
            loop.close()

    def run(self) -> None:
        """Poll until stop() is called, then wait for the runs in progress."""
        entrypoints: dict[UUID, str] = {}
        last_heartbeat = 0.0
        listener = threading.Thread(target=self._listen, name="irp-worker-events", daemon=True)
        with get_client(sync_client=True) as client:
            try:
                self.warm_up(client, entrypoints)
            except Exception as exc:  # the server may not be up yet: runs load what they need
                log.warning("warm-up failed: %s", exc)
            listener.start()
            while not self.stopping.is_set():
                self._wake.clear()
                try:
                    if time.monotonic() - last_heartbeat > HEARTBEAT_SECONDS:
                        client.send_worker_heartbeat(self.pool, self.name, heartbeat_interval_seconds=HEARTBEAT_SECONDS)
                        last_heartbeat = time.monotonic()
                    self.poll_once(client, entrypoints)
                except Exception as exc:  # the server may restart: keep polling
                    log.warning("polling work pool %s failed: %s", self.pool, exc)
                    self.stopping.wait(2)
                listening = self.listening.is_set()
                self._wake.wait(max(self.poll_seconds, LISTENING_POLL_SECONDS) if listening else self.poll_seconds)
        if self._listener:
            loop, task = self._listener
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # the listener's loop already ended
                pass
        listener.join(10)
        self.executor.shutdown(wait=True)

    def stop(self) -> None:
        self.stopping.set()
        self._wake.set()


def serve(pool: str, poll_seconds: float, max_runs: int) -> None:
    """Run a worker until SIGINT or SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    worker = InProcessWorker(pool=pool, poll_seconds=poll_seconds, max_runs=max_runs)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: worker.stop())
    log.info("worker %s polling pool %s every %.2f s (up to %d runs at once)", worker.name, pool, poll_seconds, max_runs)
    store = open_store(get_settings().evidence_url)
    anchors.check_anchor(store)  # refuses an anchor bucket without Object Lock
    stop_anchoring = anchors.start_periodic(store, get_settings().evidence_anchor_interval_seconds)
    try:
        worker.run()
    finally:
        stop_anchoring.set()
