"""The Prefect server as `irp stack` runs it: Prefect's own app, served by uvicorn as `prefect server start`
does, with one gate in front when its database is SQLite.

SQLite has one write lock, and Prefect's request transactions read before they write: when another
connection commits in between, the write fails at once with "database is locked" (a busy timeout
cannot help: the transaction's snapshot is stale), the server answers 503, and Prefect's client
asks again 2, 4, 8… s later — a flow run whose concurrency slot is refused five times in a row
crashes. Under a burst of incidents most run creations met the lock. So, on SQLite:

- write requests (every method but GET, HEAD and OPTIONS, except the POST routes that only read:
  …/filter, …/count, …/paginate, …/history, /ui/…) enter the application one at a time. They
  would take the database's write lock one at a time anyway; in line here, they wait
  milliseconds instead of failing. Reads, websockets (the event stream) and the server's own
  services are not held;
- the line has an order: a new run first (`create_flow_run`), then what starts a run (its claim and
  `Running`, the engine's update of its record, a concurrency slot), then its other state changes and
  its name and tags, then the rest (logs, inputs). In a burst, a new incident's run is not created
  behind the logs of the runs already going, nor started behind the suspensions of the others;
- a 503 that still happens (a service's write met a request's) carries `Retry-After` of a few
  tens of milliseconds, which Prefect's client honours instead of its exponential back-off;
- every `REPORT_SECONDS` while writes come, the log says how busy the line was and, since the start,
  how many writes of each rank it served and for how long (bench/bench_burst.py reads it): when the
  line is busy all the time, it is what paces the runs, and on SQLite it cannot go faster.

On PostgreSQL the app is served unchanged. `python -m irp.prefect_server --host H --port P`.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

__all__ = ["WriteGate", "is_write", "main", "priority"]

log = logging.getLogger("irp.prefect_server")

RETRY_AFTER_SECONDS = "0.05"
REPORT_SECONDS = 10.0
RANKS = 4
_READ_ROUTES = re.compile(r"/(filter|count|paginate|history)/?$|^/api/ui/")
_FIRST = re.compile(r"/create_flow_run/?$")
_STATE = re.compile(r"/set_state/?$")
_RUN_RECORD = re.compile(r"^/api/flow_runs/[^/]+/?$")
_SLOTS = re.compile(r"/concurrency_limits/")
_STARTING = {"PENDING", "RUNNING"}
_LABELS = {"name", "tags"}


def is_write(method: str, path: str) -> bool:
    """Whether a request may write to the database (POST routes that only read are not writes)."""
    if method in ("GET", "HEAD", "OPTIONS"):
        return False
    return not (method == "POST" and _READ_ROUTES.search(path))


def priority(path: str, body: bytes = b"") -> int:
    """A write's place in the line: 0 creates a run; 1 starts one (Pending, Running, the engine's update of its
    record, a concurrency slot); 2 its other states, its name and tags; 3 the rest (logs, inputs, …)."""
    if _FIRST.search(path):
        return 0
    if _SLOTS.search(path):
        return 1
    if _STATE.search(path):
        state = _json(body).get("state")
        return 1 if isinstance(state, dict) and str(state.get("type")) in _STARTING else 2
    if _RUN_RECORD.search(path):
        fields = _json(body)
        return 2 if fields and set(fields) <= _LABELS else 1
    return 3


def _ranked_by_body(path: str) -> bool:
    """Whether the place of a write depends on its body (read before it enters the line)."""
    return bool(_STATE.search(path) or _RUN_RECORD.search(path))


def _json(body: bytes) -> dict:
    try:
        value = json.loads(body) if body else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class _Line:
    """One holder at a time; when it leaves, the waiter of the lowest priority number (then the earliest) enters."""

    def __init__(self) -> None:
        self._held = False
        self._waiting: list[tuple[int, int, asyncio.Future]] = []
        self._count = itertools.count()

    async def enter(self, rank: int) -> None:
        if not self._held and not self._waiting:
            self._held = True
            return
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (rank, next(self._count), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # the turn came as the request was cancelled: pass it on
                self.leave()
            raise

    def leave(self) -> None:
        while self._waiting:
            _, _, future = heapq.heappop(self._waiting)
            if not future.done():
                future.set_result(None)  # the turn passes on: still held
                return
        self._held = False


class _Occupancy:
    """How long the line was held, by rank since the start and in all since the last report."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.writes, self.seconds = [0] * RANKS, [0.0] * RANKS
        self._since, self._busy = clock(), 0.0

    def add(self, rank: int, seconds: float) -> str | None:
        """Count one write; the report when one is due."""
        self.writes[rank] += 1
        self.seconds[rank] += seconds
        self._busy += seconds
        return self.report() if self.clock() - self._since >= REPORT_SECONDS else None

    def report(self) -> str:
        """The line's use since the last report and, by rank, since the start; starts a new period."""
        now = self.clock()
        report = (f"write line: busy {self._busy:.1f} s of the last {now - self._since:.1f} s; since the start, "
                  "by rank (writes, seconds): " + "; ".join(
                      f"{rank}: {self.writes[rank]} {self.seconds[rank]:.2f}" for rank in range(RANKS)))
        self._since, self._busy = now, 0.0
        return report


class WriteGate:
    """ASGI middleware: write requests one at a time (when `serialize`), and Retry-After on every 503."""

    def __init__(self, app: Any, serialize: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.app, self.serialize = app, serialize
        self._line = _Line()
        self.refused = 0  # 503 answers, for the log
        self.occupancy = _Occupancy(clock)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan" and self.serialize:
            await self.app(scope, receive, self._reporting_at_shutdown(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def answer(message: dict) -> None:
            if message["type"] == "http.response.start" and message["status"] == 503:
                self.refused += 1
                log.info("503 to %s %s (%d so far): asked to retry after %s s", scope["method"], scope["path"],
                         self.refused, RETRY_AFTER_SECONDS)
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"retry-after", RETRY_AFTER_SECONDS.encode())]}
            await send(message)

        if self.serialize and is_write(scope["method"], scope["path"]):
            body = b""
            if _ranked_by_body(scope["path"]):
                body, receive = await _read_body(receive)
            rank = priority(scope["path"], body)
            await self._line.enter(rank)
            entered = self.occupancy.clock()
            try:
                await self.app(scope, receive, answer)
            finally:
                self._line.leave()
                report = self.occupancy.add(rank, self.occupancy.clock() - entered)
                if report:
                    log.info(report)
        else:
            await self.app(scope, receive, answer)

    def _reporting_at_shutdown(self, send: Any) -> Any:
        async def reporting(message: dict) -> None:
            if message.get("type") == "lifespan.shutdown.complete":
                log.info(self.occupancy.report())
            await send(message)

        return reporting


async def _read_body(receive: Any) -> tuple[bytes, Any]:
    """The request's body, and a `receive` that hands the same messages to the application."""
    messages, more = [], True
    while more:
        message = await receive()
        messages.append(message)
        more = message.get("type") == "http.request" and message.get("more_body", False)
    body = b"".join(m.get("body", b"") for m in messages if m.get("type") == "http.request")
    pending = iter(messages)

    async def replay() -> dict:
        return next(pending, None) or await receive()

    return body, replay


def main(argv: list[str] | None = None) -> None:
    import uvicorn
    from prefect.server.api.server import create_app
    from prefect.settings import (
        PREFECT_API_DATABASE_CONNECTION_URL,
        PREFECT_SERVER_API_KEEPALIVE_TIMEOUT,
        PREFECT_SERVER_API_WEBSOCKET_PING_INTERVAL,
        PREFECT_SERVER_API_WEBSOCKET_PING_TIMEOUT,
        PREFECT_SERVER_LOGGING_LEVEL,
    )

    parser = argparse.ArgumentParser(prog="python -m irp.prefect_server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4200)
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sqlite = (PREFECT_API_DATABASE_CONNECTION_URL.value() or "sqlite").startswith("sqlite")
    log.info("Prefect server on %s: write requests %s", "SQLite" if sqlite else "PostgreSQL",
             "one at a time" if sqlite else "unchanged")
    app = create_app(final=True)
    log.setLevel(logging.INFO)  # Prefect's logging setup puts the root logger at WARNING
    uvicorn.run(WriteGate(app, serialize=sqlite), host=options.host, port=options.port,
                timeout_keep_alive=PREFECT_SERVER_API_KEEPALIVE_TIMEOUT.value(),
                ws_ping_interval=PREFECT_SERVER_API_WEBSOCKET_PING_INTERVAL.value(),
                ws_ping_timeout=PREFECT_SERVER_API_WEBSOCKET_PING_TIMEOUT.value(),
                log_level=PREFECT_SERVER_LOGGING_LEVEL.value().lower())


if __name__ == "__main__":
    main()
