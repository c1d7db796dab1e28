"""The intake's journal: every accepted delivery, the dedup state and the outbox, durably recorded.

An alert is acknowledged only after the transaction that records it is committed and fsync'd.
In the same transaction the dedup decision is taken and the work it implies is queued in the
outbox: create a run (new incident), append a timeline entry (repeat, resolved, update) or confirm
an SNS subscription. The outbox worker (irp.intake.outbox) carries the work out, with retries.

`Journal` holds the logic, in SQL both databases run: the dedup decision is one upsert on the
alert's group, so it is atomic however many intakes share the database. It commits in groups: one
writer thread takes every queued operation, runs each in a savepoint and commits them together, so
concurrent requests share one fsync. Two backends:

- `SQLiteJournal`: one file (WAL, synchronous=FULL), owned by one intake process (a lock file
  says so to a second one);
- `PostgresJournal`: one database shared by several intake replicas. Each transaction first takes
  transaction-level advisory locks on the groups it touches, in a fixed order, so replicas never
  deadlock; outbox items are leased (`FOR UPDATE SKIP LOCKED`), so each is carried out by one
  replica, and the items of a replica that died are taken over when their lease expires.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from irp.errors import IrpError
from irp.intake.routing import Routed
from irp.models import Alert, new_incident_id

__all__ = [
    "AcceptResult",
    "Delivery",
    "Journal",
    "JournalError",
    "OutboxItem",
    "Outcome",
    "PostgresJournal",
    "SQLiteJournal",
    "idempotency_key",
    "open_journal",
]

SCHEMA_VERSION = 2
LEASE_SECONDS = 30.0  # how long an outbox item taken by one intake is left alone by the others
_BATCH_MAX = 512
_ids = random.Random()  # seeded from os.urandom once; ids need to be unique, not secret
os.register_at_fork(after_in_child=_ids.seed)  # a forked worker must not repeat its parent's ids
_UUID7_VARIANT = 0x8000 << 48  # RFC 9562 variant bits
_FLOW_RUNS_CACHED = 10_000


def new_delivery_id() -> str:
    """A time-ordered (version 7) UUID: the journal's index on it grows at one end, as a random id's
    would not (a random id lands on a random index page, and each page a commit touches is written again)."""
    ms = time.time_ns() // 1_000_000
    h = f"{ms << 80 | 0x7 << 76 | _ids.getrandbits(12) << 64 | _UUID7_VARIANT | _ids.getrandbits(62):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class JournalError(IrpError):
    """Raised when the journal cannot record (disk full, file unwritable): nothing was acknowledged."""


@dataclass
class Delivery:
    """One accepted request, with its alerts already routed."""

    source: str
    body: bytes
    alerts: list[tuple[Alert, Routed | None, str]]  # (alert, route or None, event: firing/resolved/update)
    delivery_key: str | None = None
    repeat: str = "reject"  # what a second delivery with the same key gets: "reject" (replay) or "same" (retry)
    confirm_url: str | None = None
    replays: tuple[str, str, str] | None = None  # (source, fingerprint, delivery id) of the unrouted alert it routes
    id: str = field(default_factory=new_delivery_id)
    received_at: float = field(default_factory=time.time)


@dataclass
class Outcome:
    """What became of one alert (the response's AlertOutcome)."""

    fingerprint: str
    status: str
    outcome: str
    deduplicated: bool
    incident_id: str | None = None
    incident_type: str | None = None
    route: str | None = None
    severity_hint: str | None = None
    flow_run_id: str | None = None


@dataclass
class AcceptResult:
    delivery_id: str
    outcomes: list[Outcome]
    replay: bool = False
    repeat_delivery: bool = False


@dataclass
class OutboxItem:
    id: int
    kind: str  # run, event, confirm
    incident_id: str | None
    payload: dict[str, Any]
    state: str
    attempts: int
    batch_id: int | None
    created_at: float


def idempotency_key(group_key: str, incident_id: str) -> str:
    """The run's idempotency key: the alert's grouping key and the incident it opened."""
    digest = hashlib.sha256(group_key.encode()).hexdigest()[:24]
    return f"irp-intake:{incident_id}:{digest}"



@dataclass
class _Op:
    fn: Callable[[Any], Any]
    future: Future | asyncio.Future
    loop: asyncio.AbstractEventLoop | None = None  # set when `future` belongs to this event loop
    keys: tuple[str, ...] = ()  # the groups it decides on, locked first by a shared database


def _settle(outcomes: list[tuple[asyncio.Future, Any, BaseException | None]]) -> None:
    """Resolve event-loop futures of one commit (called in their loop, once per commit)."""
    for future, value, exc in outcomes:
        if future.done():
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(value)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    received_at {real} NOT NULL,
    delivery_key TEXT UNIQUE,
    sha256 TEXT NOT NULL,
    body {blob} NOT NULL,
    outcomes TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_received ON deliveries(received_at);
CREATE TABLE IF NOT EXISTS groups (
    key TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL,
    incident_type TEXT NOT NULL,
    route TEXT NOT NULL,
    severity_hint TEXT,
    last_seen {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    incident_type TEXT NOT NULL,
    group_key TEXT NOT NULL,
    created_at {real} NOT NULL,
    flow_run_id TEXT
);
CREATE TABLE IF NOT EXISTS outbox (
    id {serial},
    kind TEXT NOT NULL,
    incident_id TEXT,
    delivery_id TEXT,
    payload TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    batch_id INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at {real} NOT NULL,
    lease_until {real},
    last_error TEXT,
    result TEXT,
    created_at {real} NOT NULL,
    done_at {real}
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbox_batch ON outbox(batch_id) WHERE batch_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS batches (
    id {serial},
    incident_id TEXT NOT NULL,
    entry TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'claimed',
    created_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS unrouted (
    source TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    title TEXT NOT NULL,
    labels TEXT NOT NULL,
    count INTEGER NOT NULL,
    first_seen {real} NOT NULL,
    last_seen {real} NOT NULL,
    last_delivery_id TEXT NOT NULL,
    PRIMARY KEY (source, fingerprint)
);
"""

_ITEM_COLUMNS = "id, kind, incident_id, payload, state, attempts, batch_id, created_at"
_DUE = "state IN ('pending', 'claimed') AND next_attempt_at <= ?"


def _item(row: tuple) -> OutboxItem:
    return OutboxItem(row[0], row[1], row[2], orjson.loads(row[3]), row[4], row[5], row[6], row[7])


def _marks(values: list) -> str:
    return ", ".join("?" * len(values))


class _OpFailed(Exception):
    """An operation failed in a group run without savepoints: run the group again with them."""


class Journal:
    """The journal's logic; a backend says how to connect and how to start a transaction.

    Statements are written with `?` placeholders; `_sql` adapts them to the driver.
    """

    location: str  # where the journal is, for people (no password)
    errors: tuple[type[BaseException], ...] = ()  # the driver's errors
    skip_locked = ""  # appended to the lease's SELECT where the database has row locks

    def __init__(self, dedup_window: float, lease_seconds: float = LEASE_SECONDS) -> None:
        self.window = dedup_window
        self.lease_seconds = lease_seconds
        self._statements: dict[str, str] = {}
        self._writer = self._open()
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._local = threading.local()
        self._flow_runs: dict[str, str] = {}  # incident id → its flow run, once known (it never changes)
        self._closed = False
        self.on_commit: Callable[[], None] | None = None  # the outbox's wake-up
        self._thread = threading.Thread(target=self._run, name="irp-journal-writer", daemon=True)
        self._thread.start()

    # --- what a backend provides ---

    def _open(self) -> Any:
        """Create the schema if needed; return the writer's connection."""
        raise NotImplementedError

    def _connect(self) -> Any:
        raise NotImplementedError

    def _begin(self, conn: Any, keys: list[str]) -> None:
        """Start the writer's transaction, holding what it needs to decide on `keys`."""
        raise NotImplementedError

    def _retryable(self, exc: BaseException) -> bool:
        """A transaction that failed with exc may be run again as it is."""
        return False

    def _sql(self, statement: str) -> str:
        return statement

    def _usable(self, conn: Any) -> bool:
        """False once the connection is lost (the database restarted)."""
        return True

    # --- running statements ---

    def _x(self, conn: Any, statement: str, params: tuple | list = ()) -> Any:
        sql = self._statements.get(statement)
        if sql is None:
            sql = self._statements[statement] = self._sql(statement)
        return conn.execute(sql, params)

    def _reader(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def _read(self, statement: str, params: tuple = ()) -> list[tuple]:
        """Rows of one query on this thread's connection; JournalError if the database is unreachable."""
        return self._reading(lambda conn: self._x(conn, statement, params).fetchall())

    def _reading(self, fn: Callable[[Any], Any]) -> Any:
        """fn(this thread's connection); JournalError if the database is unreachable."""
        try:
            return fn(self._reader())
        except self.errors as exc:
            conn, self._local.conn = getattr(self._local, "conn", None), None
            if conn is not None:
                try:
                    conn.close()
                except Exception:
                    pass
            raise JournalError(f"{self.location}: cannot read: {exc}") from None

    # --- the writer thread: group commit ---

    def _submit(self, fn: Callable[[Any], Any], loop: asyncio.AbstractEventLoop | None = None,
                keys: tuple[str, ...] = ()) -> Future | asyncio.Future:
        future: Future | asyncio.Future = loop.create_future() if loop is not None else Future()
        if self._closed:
            future.set_exception(JournalError("the journal is closed"))
            return future
        self._queue.put(_Op(fn, future, loop, keys))
        return future

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            ops = [first]
            while len(ops) < _BATCH_MAX:
                try:
                    op = self._queue.get_nowait()
                except queue.Empty:
                    break
                if op is None:
                    stop = True
                    break
                ops.append(op)
            self._commit(ops)

    def _commit(self, ops: list[_Op]) -> None:
        keys = sorted({key for op in ops for key in op.keys})
        isolate = False
        for attempt in range(5):
            try:
                results = self._transaction(ops, keys, isolate)
                break
            except _OpFailed:
                self._rollback()
                isolate = True
            except self.errors as exc:
                self._rollback()
                if self._retryable(exc) and attempt < 4:
                    continue
                error = JournalError(f"{self.location}: cannot record: {exc}")
                self._resolve([(op, None, error) for op in ops])
                return
        self._resolve(results)
        if self.on_commit is not None:
            self.on_commit()

    def _transaction(self, ops: list[_Op], keys: list[str],
                     isolate: bool) -> list[tuple[_Op, Any, BaseException | None]]:
        """Run the ops in one transaction. Optimistically first; when one fails, the group is run
        again with each op in a savepoint (isolate), so one bad operation does not sink the others."""
        conn = self._writer
        self._begin(conn, keys)
        results: list[tuple[_Op, Any, BaseException | None]] = []
        for op in ops:
            if isolate:
                conn.execute("SAVEPOINT op")
            try:
                value = op.fn(conn)
            except Exception as exc:
                if isinstance(exc, self.errors) and self._retryable(exc):
                    raise
                if not isolate:
                    raise _OpFailed from exc
                conn.execute("ROLLBACK TO SAVEPOINT op")
                conn.execute("RELEASE SAVEPOINT op")
                results.append((op, None, exc))
                continue
            if isolate:
                conn.execute("RELEASE SAVEPOINT op")
            results.append((op, value, None))
        conn.execute("COMMIT")
        return results

    def _rollback(self) -> None:
        try:
            self._writer.execute("ROLLBACK")
        except Exception:  # no transaction, or no connection any more
            if not self._usable(self._writer):
                self._reopen_writer()

    def _reopen_writer(self) -> None:
        try:
            self._writer.close()
        except Exception:
            pass
        try:
            self._writer = self._connect()
        except Exception:  # still down: the next commit tries again
            pass

    @staticmethod
    def _resolve(results: list[tuple[_Op, Any, BaseException | None]]) -> None:
        """Thread futures now; event-loop futures with one wake-up per loop and commit."""
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for op, value, exc in results:
            if op.loop is not None:
                by_loop.setdefault(op.loop, []).append((op.future, value, exc))
            elif not op.future.done():
                if exc is not None:
                    op.future.set_exception(exc)
                else:
                    op.future.set_result(value)
        for loop, outcomes in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, outcomes)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

    def close(self) -> None:
        """Finish queued operations and close."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)
        self._writer.close()

    # --- accepting deliveries ---

    def accept(self, delivery: Delivery) -> Future[AcceptResult]:
        """Record the delivery and decide each alert; the future resolves once durable."""
        return self._accept(delivery, None)

    async def accept_async(self, delivery: Delivery) -> AcceptResult:
        """`accept` for the event loop: returns once the delivery is durable."""
        return await self._accept(delivery, asyncio.get_running_loop())

    def _accept(self, delivery: Delivery, loop: asyncio.AbstractEventLoop | None):
        keys = [routed.group_key if routed else f"unrouted:{alert.source.value}:{alert.fingerprint}"
                for alert, routed, _event in delivery.alerts]
        if delivery.delivery_key is not None:
            keys.append(f"delivery:{delivery.delivery_key}")

        def fn(conn: Any) -> AcceptResult:
            if delivery.delivery_key is not None:
                row = self._x(conn, "SELECT id, outcomes FROM deliveries WHERE delivery_key = ?",
                              (delivery.delivery_key,)).fetchone()
                if row is not None:
                    if delivery.repeat == "reject":
                        return AcceptResult(row[0], [], replay=True)
                    outcomes = [Outcome(**o) for o in json.loads(row[1])]
                    return AcceptResult(row[0], self._refresh(conn, outcomes), repeat_delivery=True)
            outcomes = [self._decide(conn, delivery, alert, routed, event) for alert, routed, event in delivery.alerts]
            if delivery.confirm_url:
                self._outbox(conn, "confirm", None, delivery, {"url": delivery.confirm_url})
            if delivery.replays is not None:  # routed now: no longer listed (unless it came again since)
                self._x(conn, "DELETE FROM unrouted WHERE source = ? AND fingerprint = ? AND last_delivery_id = ?",
                        delivery.replays)
            self._x(conn,
                    "INSERT INTO deliveries (id, source, received_at, delivery_key, sha256, body, outcomes) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (delivery.id, delivery.source, delivery.received_at, delivery.delivery_key,
                     hashlib.sha256(delivery.body).hexdigest(), delivery.body,
                     orjson.dumps(outcomes).decode()))
            return AcceptResult(delivery.id, outcomes)

        return self._submit(fn, loop, tuple(keys))

    def _decide(self, conn: Any, delivery: Delivery, alert: Alert, routed: Routed | None, event: str) -> Outcome:
        now = delivery.received_at
        base = {"fingerprint": alert.fingerprint, "status": event}
        if routed is None:
            self._x(conn,
                    "INSERT INTO unrouted (source, fingerprint, title, labels, count, first_seen, last_seen, "
                    "last_delivery_id) VALUES (?, ?, ?, ?, 1, ?, ?, ?) ON CONFLICT (source, fingerprint) DO UPDATE "
                    "SET count = unrouted.count + 1, last_seen = excluded.last_seen, title = excluded.title, "
                    "labels = excluded.labels, last_delivery_id = excluded.last_delivery_id",
                    (alert.source.value, alert.fingerprint, alert.title, json.dumps(alert.labels), now, now,
                     delivery.id))
            return Outcome(**base, outcome="unrouted", deduplicated=False)
        opened_before = now - self.window
        # The writer holds the group's key (one writer per SQLite file; advisory locks on PostgreSQL),
        # so nobody else decides on this group between the two statements.
        rows = self._x(conn,
                       "UPDATE groups SET last_seen = CASE WHEN last_seen < ? THEN ? ELSE last_seen END "
                       "WHERE key = ? AND last_seen >= ? RETURNING incident_id, incident_type, route, severity_hint",
                       (now, now, routed.group_key, opened_before)).fetchall()
        if rows:  # an open incident: the alert joins it (a timeline entry, no run)
            group = rows[0]
            kind = {"firing": "repeat", "resolved": "resolved"}.get(event, "update")
            self._outbox(conn, "event", group[0], delivery, {
                "event": kind, "source": alert.source.value, "fingerprint": alert.fingerprint,
                "title": alert.title, "status": event, "observed_at": alert.observed_at.isoformat(),
                "received_at": now, "delivery_id": delivery.id, "route": group[2],
                "description": alert.description[:2000] if kind == "update" else "",
            })
            return Outcome(**base, outcome="joined" if kind == "repeat" else kind, deduplicated=True,
                           incident_id=group[0], incident_type=group[1], route=group[2], severity_hint=group[3],
                           flow_run_id=self._flow_run(conn, group[0]))
        if event != "firing":  # resolved or updated with no open incident: nothing to open
            return Outcome(**base, outcome="no_incident", deduplicated=False, route=routed.route)
        incident_id = new_incident_id()
        hint = routed.severity.value if routed.severity else None
        self._x(conn,
                "INSERT INTO groups (key, incident_id, incident_type, route, severity_hint, last_seen) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET incident_id = excluded.incident_id, "
                "incident_type = excluded.incident_type, route = excluded.route, "
                "severity_hint = excluded.severity_hint, last_seen = excluded.last_seen",
                (routed.group_key, incident_id, routed.incident_type.value, routed.route, hint, now))
        self._outbox(conn, "run", incident_id, delivery, {
            "deployment": f"{routed.incident_type.value}/respond",
            "parameters": {"alert": alert.model_dump(mode="json"), "incident_id": incident_id,
                           "severity_hint": hint, **({"clients": routed.run_clients()} if routed.clients else {})},
            "idempotency_key": idempotency_key(routed.group_key, incident_id),
            "flow_run_name": f"{incident_id} {routed.incident_type.value}",
            "tags": ["irp-intake", f"source:{alert.source.value}", f"route:{routed.route}"],
        })
        self._x(conn, "INSERT INTO incidents (id, incident_type, group_key, created_at) VALUES (?, ?, ?, ?)",
                (incident_id, routed.incident_type.value, routed.group_key, now))
        return Outcome(**base, outcome="new_incident", deduplicated=False, incident_id=incident_id,
                       incident_type=routed.incident_type.value, route=routed.route, severity_hint=hint)

    def _flow_run(self, conn: Any, incident_id: str) -> str | None:
        found = self._flow_runs.get(incident_id)
        if found is None:
            row = self._x(conn, "SELECT flow_run_id FROM incidents WHERE id = ?", (incident_id,)).fetchone()
            if row and row[0]:
                found = self._remember(incident_id, row[0])
        return found

    def _remember(self, incident_id: str, flow_run_id: str) -> str:
        if len(self._flow_runs) >= _FLOW_RUNS_CACHED:
            self._flow_runs.clear()
        self._flow_runs[incident_id] = flow_run_id
        return flow_run_id

    def _outbox(self, conn: Any, kind: str, incident_id: str | None, delivery: Delivery, payload: dict) -> None:
        self._x(conn,
                "INSERT INTO outbox (kind, incident_id, delivery_id, payload, next_attempt_at, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (kind, incident_id, delivery.id, orjson.dumps(payload).decode(), delivery.received_at,
                 delivery.received_at))

    def _refresh(self, conn: Any, outcomes: list[Outcome]) -> list[Outcome]:
        for outcome in outcomes:
            if outcome.incident_id and not outcome.flow_run_id:
                outcome.flow_run_id = self._flow_run(conn, outcome.incident_id)
        return outcomes

    # --- the outbox ---

    def due(self, now: float, limit: int = 200) -> list[OutboxItem]:
        """Outbox items whose next attempt is due (pending, or claimed and not finished), leased or not."""
        return [_item(r) for r in self._read(
            f"SELECT {_ITEM_COLUMNS} FROM outbox WHERE {_DUE} ORDER BY id LIMIT ?", (now, limit))]

    def lease(self, now: float, limit: int = 200) -> list[OutboxItem]:
        """Take the due items nobody holds for `lease_seconds`: this intake carries them out."""
        rows = self._submit(lambda conn: self._x(
            conn, f"UPDATE outbox SET lease_until = ? WHERE id IN (SELECT id FROM outbox WHERE {_DUE} "
                  f"AND (lease_until IS NULL OR lease_until <= ?) ORDER BY id LIMIT ?{self.skip_locked}) "
                  f"RETURNING {_ITEM_COLUMNS}", (now + self.lease_seconds, now, now, limit)).fetchall()).result()
        return sorted((_item(r) for r in rows), key=lambda item: item.id)  # decoded here, not on the writer

    def renew(self, ids: list[int], now: float) -> Future[None]:
        """Extend the leases of items this intake is still carrying out."""
        return self._submit(lambda conn: self._x(
            conn, f"UPDATE outbox SET lease_until = ? WHERE lease_until IS NOT NULL AND id IN ({_marks(ids)})",
            [now + self.lease_seconds, *ids]) and None)

    def release(self, items: list[OutboxItem]) -> Future[None]:
        """Give back leased items this intake will not carry out now."""
        ids = [item.id for item in items]
        return self._submit(lambda conn: self._x(
            conn, f"UPDATE outbox SET lease_until = NULL WHERE id IN ({_marks(ids)})", ids) and None)

    def next_due(self) -> float | None:
        """When the next pending outbox item is due (its lease included), or None."""
        return self._read(
            "SELECT MIN(CASE WHEN lease_until > next_attempt_at THEN lease_until ELSE next_attempt_at END) "
            "FROM outbox WHERE state IN ('pending', 'claimed')")[0][0]

    def run_created(self, item: OutboxItem, flow_run_id: str) -> Future[None]:
        """Mark a run item done and remember the incident's flow run."""
        def fn(conn: Any) -> None:
            self._x(conn, "UPDATE outbox SET state = 'done', result = ?, done_at = ?, attempts = attempts + 1, "
                          "lease_until = NULL WHERE id = ?", (flow_run_id, time.time(), item.id))
            self._x(conn, "UPDATE incidents SET flow_run_id = ? WHERE id = ?", (flow_run_id, item.incident_id))
            if item.incident_id:
                self._remember(item.incident_id, flow_run_id)

        return self._submit(fn)

    def claim_events(self, batches: list[tuple[str, list[OutboxItem], str]]) -> Future[list[int | None]]:
        """Tie each (incident_id, items, entry_json) to the one entry that records them; returns batch ids.

        None for a batch some of whose items another intake claimed meanwhile: they stay pending.
        """
        def fn(conn: Any) -> list[int | None]:
            ids: list[int | None] = []
            for incident_id, items, entry_json in batches:
                batch_id = self._x(conn, "INSERT INTO batches (incident_id, entry, created_at) VALUES (?, ?, ?) "
                                         "RETURNING id", (incident_id, entry_json, time.time())).fetchall()[0][0]
                item_ids = [item.id for item in items]
                claimed = self._x(conn, "UPDATE outbox SET state = 'claimed', batch_id = ? WHERE state = 'pending' "
                                        f"AND id IN ({_marks(item_ids)})", [batch_id, *item_ids]).rowcount
                if claimed != len(items):
                    self._x(conn, "UPDATE outbox SET state = 'pending', batch_id = NULL WHERE batch_id = ?",
                            (batch_id,))
                    self._x(conn, "DELETE FROM batches WHERE id = ?", (batch_id,))
                    batch_id = None
                ids.append(batch_id)
            return ids

        return self._submit(fn)

    def batch_entry(self, batch_id: int) -> tuple[str, str]:
        """(incident_id, entry_json) of a claimed batch."""
        row = self._read("SELECT incident_id, entry FROM batches WHERE id = ?", (batch_id,))[0]
        return row[0], row[1]

    def batch_done(self, batch_ids: list[int]) -> Future[None]:
        """Mark batches and their items done."""
        def fn(conn: Any) -> None:
            now = time.time()
            for batch_id in batch_ids:
                self._x(conn, "UPDATE batches SET state = 'done' WHERE id = ?", (batch_id,))
                self._x(conn, "UPDATE outbox SET state = 'done', done_at = ?, attempts = attempts + 1, "
                              "lease_until = NULL WHERE batch_id = ?", (now, batch_id))

        return self._submit(fn)

    def done(self, item: OutboxItem, result: str = "") -> Future[None]:
        """Mark an item done."""
        return self._submit(lambda conn: self._x(
            conn, "UPDATE outbox SET state = 'done', result = ?, done_at = ?, attempts = attempts + 1, "
                  "lease_until = NULL WHERE id = ?", (result, time.time(), item.id)) and None)

    def failed(self, items: list[OutboxItem], error: str, retry_at: float) -> Future[None]:
        """Record a failed attempt; the items are due again at retry_at."""
        def fn(conn: Any) -> None:
            for item in items:
                self._x(conn, "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?, "
                              "lease_until = NULL WHERE id = ?", (error[:2000], retry_at, item.id))

        return self._submit(fn)

    # --- reading ---

    def backlog(self) -> dict[str, int]:
        """Outbox items not done, by kind."""
        counts = {"run": 0, "event": 0, "confirm": 0}
        counts.update(self._read("SELECT kind, COUNT(*) FROM outbox WHERE state != 'done' GROUP BY kind"))
        return counts

    def last_error(self) -> str | None:
        """The newest error of an item not done yet."""
        rows = self._read("SELECT kind, last_error FROM outbox WHERE state != 'done' AND last_error IS NOT NULL "
                          "ORDER BY id DESC LIMIT 1")
        return f"{rows[0][0]}: {rows[0][1]}" if rows else None

    def delivery(self, delivery_id: str) -> AcceptResult | None:
        """A recorded delivery's outcomes, flow runs refreshed."""
        rows = self._read("SELECT outcomes FROM deliveries WHERE id = ?", (delivery_id,))
        if not rows:
            return None
        outcomes = [Outcome(**o) for o in json.loads(rows[0][0])]
        return AcceptResult(delivery_id, self._reading(lambda conn: self._refresh(conn, outcomes)))

    def delivery_body(self, delivery_id: str) -> tuple[str, bytes] | None:
        """(source, body) of a recorded delivery; None once purged."""
        rows = self._read("SELECT source, body FROM deliveries WHERE id = ?", (delivery_id,))
        return (rows[0][0], bytes(rows[0][1])) if rows else None

    def unrouted(self, limit: int = 100) -> list[dict[str, Any]]:
        """Alerts no route matched, most recent first."""
        rows = self._read(
            "SELECT source, fingerprint, title, labels, count, first_seen, last_seen, last_delivery_id "
            "FROM unrouted ORDER BY last_seen DESC LIMIT ?", (limit,))
        return [{"source": r[0], "fingerprint": r[1], "title": r[2], "labels": json.loads(r[3]), "count": r[4],
                 "first_seen": r[5], "last_seen": r[6], "last_delivery_id": r[7]} for r in rows]

    def purge(self, older_than: float, window_start: float) -> Future[None]:
        """Forget delivered deliveries received before older_than and dedup groups idle since window_start."""
        def fn(conn: Any) -> None:
            self._x(conn, "DELETE FROM deliveries WHERE received_at < ? AND id NOT IN "
                          "(SELECT delivery_id FROM outbox WHERE state != 'done' AND delivery_id IS NOT NULL)",
                    (older_than,))
            self._x(conn, "DELETE FROM outbox WHERE state = 'done' AND created_at < ?", (older_than,))
            self._x(conn, "DELETE FROM batches WHERE state = 'done' AND created_at < ?", (older_than,))
            self._x(conn, "DELETE FROM groups WHERE last_seen < ?", (window_start,))

        return self._submit(fn)


class SQLiteJournal(Journal):
    """The journal in one SQLite file (WAL, synchronous=FULL), owned by one intake process."""

    errors = (sqlite3.Error,)

    def __init__(self, path: Path, dedup_window: float, lease_seconds: float = LEASE_SECONDS) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        super().__init__(dedup_window, lease_seconds)

    def _open(self) -> sqlite3.Connection:
        path = self.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = open(f"{path}.lock", "a+")
        except OSError as exc:
            raise JournalError(f"{path}: cannot open the journal: {exc}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise JournalError(
                f"{path} is in use by another intake process; several intakes share a PostgreSQL journal "
                "(IRP_INTAKE_JOURNAL=postgresql://...)") from None
        try:
            conn = self._connect()
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise JournalError(f"{path}: cannot use WAL mode (got {mode}); put the journal on a local disk")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise JournalError(f"{path}: journal format {version} is newer than this irp ({SCHEMA_VERSION})")
            if version == 1:
                conn.execute("ALTER TABLE outbox ADD COLUMN lease_until REAL")
            conn.executescript(_SCHEMA.format(real="REAL", blob="BLOB", serial="INTEGER PRIMARY KEY AUTOINCREMENT"))
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("UPDATE outbox SET lease_until = NULL WHERE lease_until IS NOT NULL")  # leases of a dead process
        except (sqlite3.Error, JournalError) as exc:
            self._lock.close()
            if isinstance(exc, JournalError):
                raise
            raise JournalError(f"{path}: cannot open the journal: {exc}") from None
        return conn

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _begin(self, conn: sqlite3.Connection, keys: list[str]) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def close(self) -> None:
        super().close()
        self._lock.close()


def _lock_id(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


class PostgresJournal(Journal):
    """The journal in a PostgreSQL database, shared by several intake replicas."""

    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str, dedup_window: float, lease_seconds: float = LEASE_SECONDS) -> None:
        import psycopg

        self.errors = (psycopg.Error,)
        self._deadlocks = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
        scheme, rest = url.split("://", 1)
        self.url = f"{scheme.split('+', 1)[0]}://{rest}"  # postgresql+psycopg://, postgresql+asyncpg:// too
        parts = urlsplit(self.url)
        netloc = parts.netloc if parts.password is None else parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        self.location = urlunsplit(parts._replace(netloc=netloc))
        super().__init__(dedup_window, lease_seconds)

    def _open(self) -> Any:
        try:
            conn = self._connect()
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_id("irp-journal-schema"),))
                conn.execute(_SCHEMA.format(real="DOUBLE PRECISION", blob="BYTEA",
                                            serial="BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"))
                conn.execute("CREATE TABLE IF NOT EXISTS journal_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                row = conn.execute("SELECT value FROM journal_meta WHERE key = 'version'").fetchone()
                if row is not None and int(row[0]) > SCHEMA_VERSION:
                    raise JournalError(f"{self.location}: journal format {row[0]} is newer than this irp "
                                       f"({SCHEMA_VERSION})")
                conn.execute("INSERT INTO journal_meta (key, value) VALUES ('version', %s) ON CONFLICT (key) "
                             "DO UPDATE SET value = excluded.value", (str(SCHEMA_VERSION),))
        except self.errors as exc:
            raise JournalError(f"{self.location}: cannot open the journal: {exc}") from None
        return conn

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.url, autocommit=True, connect_timeout=10, application_name="irp-intake")

    def _begin(self, conn: Any, keys: list[str]) -> None:
        conn.execute("BEGIN")
        if keys:  # in one order for everybody: two replicas never wait for each other in a cycle
            conn.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k",
                         (sorted({_lock_id(key) for key in keys}),))

    def _retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, self._deadlocks)

    def _usable(self, conn: Any) -> bool:
        return not (conn.closed or conn.broken)

    def _sql(self, statement: str) -> str:
        return statement.replace("%", "%%").replace("?", "%s")


def open_journal(location: str | Path, dedup_window: float, lease_seconds: float = LEASE_SECONDS) -> Journal:
    """The journal at `location`: a postgresql:// URL, or the path of a SQLite file."""
    text = str(location)
    if text.split("://", 1)[0].split("+", 1)[0] in ("postgresql", "postgres"):
        return PostgresJournal(text, dedup_window, lease_seconds)
    return SQLiteJournal(Path(text.removeprefix("sqlite://")), dedup_window, lease_seconds)
