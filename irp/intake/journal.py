"""The intake's journal: every accepted delivery, the dedup state and the outbox, durably recorded.

An alert is acknowledged only after the transaction that records it is committed and fsync'd.
In the same transaction the dedup decision is taken and the work it implies is queued in the
outbox: create a run (new incident), append a timeline entry (repeat, resolved, update) or confirm
an SNS subscription. The outbox worker (irp.intake.outbox) carries the work out, with retries.

`Journal` is the interface; `SQLiteJournal` keeps it in one SQLite file (WAL, synchronous=FULL)
and commits in groups: one writer thread takes every queued operation, runs each in a savepoint
and commits them together, so concurrent requests share one fsync. A PostgreSQL journal (several
intake replicas) implements the same interface.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import queue
import random
import sqlite3
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    "SQLiteJournal",
    "idempotency_key",
]

SCHEMA_VERSION = 1
_BATCH_MAX = 512
_ids = random.Random()  # seeded from os.urandom once; ids need to be unique, not secret


def new_delivery_id() -> str:
    """A random (version 4) UUID, without a system call per request."""
    return str(uuid.UUID(int=_ids.getrandbits(128), version=4))


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


class Journal(ABC):
    """What the intake needs from its journal."""

    @abstractmethod
    def accept(self, delivery: Delivery) -> Future[AcceptResult]:
        """Record the delivery and decide each alert; the future resolves once durable."""

    async def accept_async(self, delivery: Delivery) -> AcceptResult:
        """`accept` for the event loop: returns once the delivery is durable."""
        return await asyncio.wrap_future(self.accept(delivery))

    @abstractmethod
    def due(self, now: float, limit: int = 200) -> list[OutboxItem]:
        """Outbox items whose next attempt is due (pending, or claimed and not finished)."""

    @abstractmethod
    def next_due(self) -> float | None:
        """When the next pending outbox item is due, or None."""

    @abstractmethod
    def run_created(self, item: OutboxItem, flow_run_id: str) -> Future[None]:
        """Mark a run item done and remember the incident's flow run."""

    @abstractmethod
    def claim_events(self, batches: list[tuple[str, list[OutboxItem], str]]) -> Future[list[int]]:
        """Tie each (incident_id, items, entry_json) to the one entry that records them; returns batch ids."""

    @abstractmethod
    def batch_entry(self, batch_id: int) -> tuple[str, str]:
        """(incident_id, entry_json) of a claimed batch."""

    @abstractmethod
    def batch_done(self, batch_ids: list[int]) -> Future[None]:
        """Mark batches and their items done."""

    @abstractmethod
    def done(self, item: OutboxItem, result: str = "") -> Future[None]:
        """Mark an item done."""

    @abstractmethod
    def failed(self, items: list[OutboxItem], error: str, retry_at: float) -> Future[None]:
        """Record a failed attempt; the items are due again at retry_at."""

    @abstractmethod
    def backlog(self) -> dict[str, int]:
        """Outbox items not done, by kind."""

    @abstractmethod
    def delivery(self, delivery_id: str) -> AcceptResult | None:
        """A recorded delivery's outcomes, flow runs refreshed."""

    @abstractmethod
    def unrouted(self, limit: int = 100) -> list[dict[str, Any]]:
        """Alerts no route matched, most recent first."""

    @abstractmethod
    def purge(self, older_than: float, window_start: float) -> Future[None]:
        """Forget delivered deliveries received before older_than and dedup groups idle since window_start."""

    @abstractmethod
    def close(self) -> None:
        """Finish queued operations and close."""


@dataclass
class _Op:
    fn: Callable[[sqlite3.Connection], Any]
    future: Future | asyncio.Future
    after: Callable[[Any], None] | None = None  # applied to the in-memory state once committed
    loop: asyncio.AbstractEventLoop | None = None  # set when `future` belongs to this event loop


def _settle(outcomes: list[tuple[asyncio.Future, Any, BaseException | None]]) -> None:
    """Resolve event-loop futures of one commit (called in their loop, once per commit)."""
    for future, value, exc in outcomes:
        if future.done():
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(value)


@dataclass
class _Group:
    incident_id: str
    incident_type: str
    route: str
    last_seen: float
    severity_hint: str | None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    received_at REAL NOT NULL,
    delivery_key TEXT UNIQUE,
    sha256 TEXT NOT NULL,
    body BLOB NOT NULL,
    outcomes TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_received ON deliveries(received_at);
CREATE TABLE IF NOT EXISTS groups (
    key TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL,
    incident_type TEXT NOT NULL,
    route TEXT NOT NULL,
    severity_hint TEXT,
    last_seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    incident_type TEXT NOT NULL,
    group_key TEXT NOT NULL,
    created_at REAL NOT NULL,
    flow_run_id TEXT
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    incident_id TEXT,
    delivery_id TEXT,
    payload TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    batch_id INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    result TEXT,
    created_at REAL NOT NULL,
    done_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbox_batch ON outbox(batch_id) WHERE batch_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id TEXT NOT NULL,
    entry TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'claimed',
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS unrouted (
    source TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    title TEXT NOT NULL,
    labels TEXT NOT NULL,
    count INTEGER NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    last_delivery_id TEXT NOT NULL,
    PRIMARY KEY (source, fingerprint)
);
"""


class SQLiteJournal(Journal):
    """The journal in one SQLite file: WAL, synchronous=FULL, group commit by one writer thread."""

    def __init__(self, path: Path, dedup_window: float) -> None:
        self.path = path
        self.window = dedup_window
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = self._connect()
            mode = self._writer.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise JournalError(f"{path}: cannot use WAL mode (got {mode}); put the journal on a local disk")
            version = self._writer.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise JournalError(f"{path}: journal format {version} is newer than this irp ({SCHEMA_VERSION})")
            self._writer.executescript(_SCHEMA)
            self._writer.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise JournalError(f"{path}: cannot open the journal: {exc}") from None
        self._groups: dict[str, _Group] = {}
        self._flow_runs: dict[str, str] = {}
        self._load_state()
        self._queue: queue.Queue[_Op | None] = queue.Queue()
        self._local = threading.local()
        self._closed = False
        self.on_commit: Callable[[], None] | None = None  # the outbox's wake-up
        self._thread = threading.Thread(target=self._run, name="irp-journal-writer", daemon=True)
        self._thread.start()

    # --- connections and the writer thread ---

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def _load_state(self) -> None:
        since = time.time() - self.window
        self._groups = {
            key: _Group(incident_id, incident_type, route, last_seen, hint)
            for key, incident_id, incident_type, route, hint, last_seen in self._writer.execute(
                "SELECT key, incident_id, incident_type, route, severity_hint, last_seen FROM groups "
                "WHERE last_seen >= ?", (since,))
        }
        self._flow_runs = dict(self._writer.execute(
            "SELECT id, flow_run_id FROM incidents WHERE flow_run_id IS NOT NULL AND created_at >= ?",
            (since - 86400,)))

    def _submit(self, fn: Callable[[sqlite3.Connection], Any], after: Callable[[Any], None] | None = None,
                loop: asyncio.AbstractEventLoop | None = None) -> Future | asyncio.Future:
        future: Future | asyncio.Future = loop.create_future() if loop is not None else Future()
        if self._closed:
            future.set_exception(JournalError("the journal is closed"))
            return future
        self._queue.put(_Op(fn, future, after, loop))
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
        conn = self._writer
        results: list[tuple[_Op, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in ops:
                conn.execute("SAVEPOINT op")
                try:
                    value = op.fn(conn)
                except Exception as exc:  # one bad operation must not sink the others of the group
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    results.append((op, None, exc))
                    continue
                conn.execute("RELEASE op")
                if op.after is not None:
                    op.after(value)
                results.append((op, value, None))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self._load_state()  # forget decisions that were not committed
            error = JournalError(f"{self.path}: cannot record: {exc}")
            self._resolve([(op, None, error) for op in ops])
            return
        self._resolve(results)
        if self.on_commit is not None:
            self.on_commit()

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
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)
        self._writer.close()

    # --- accepting deliveries ---

    def accept(self, delivery: Delivery) -> Future[AcceptResult]:
        return self._accept(delivery, None)

    async def accept_async(self, delivery: Delivery) -> AcceptResult:
        return await self._accept(delivery, asyncio.get_running_loop())

    def _accept(self, delivery: Delivery, loop: asyncio.AbstractEventLoop | None):
        pending: dict[str, _Group] = {}

        def fn(conn: sqlite3.Connection) -> AcceptResult:
            pending.clear()
            if delivery.delivery_key is not None:
                row = conn.execute("SELECT id, outcomes FROM deliveries WHERE delivery_key = ?",
                                   (delivery.delivery_key,)).fetchone()
                if row is not None:
                    if delivery.repeat == "reject":
                        return AcceptResult(row[0], [], replay=True)
                    outcomes = [Outcome(**o) for o in json.loads(row[1])]
                    return AcceptResult(row[0], self._refresh(outcomes), repeat_delivery=True)
            outcomes = [self._decide(conn, delivery, alert, routed, event, pending)
                        for alert, routed, event in delivery.alerts]
            if delivery.confirm_url:
                self._outbox(conn, "confirm", None, delivery, {"url": delivery.confirm_url})
            conn.execute(
                "INSERT INTO deliveries (id, source, received_at, delivery_key, sha256, body, outcomes) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (delivery.id, delivery.source, delivery.received_at, delivery.delivery_key,
                 hashlib.sha256(delivery.body).hexdigest(), delivery.body,
                 json.dumps([vars(o) for o in outcomes])))
            return AcceptResult(delivery.id, outcomes)

        def after(_result: AcceptResult) -> None:
            self._groups.update(pending)

        return self._submit(fn, after, loop)

    def _group(self, key: str, pending: dict[str, _Group], now: float) -> _Group | None:
        group = pending.get(key) or self._groups.get(key)
        if group is None or now - group.last_seen > self.window:
            return None
        return group

    def _decide(self, conn: sqlite3.Connection, delivery: Delivery, alert: Alert, routed: Routed | None,
                event: str, pending: dict[str, _Group]) -> Outcome:
        now = delivery.received_at
        base = {"fingerprint": alert.fingerprint, "status": event}
        if routed is None:
            conn.execute(
                "INSERT INTO unrouted (source, fingerprint, title, labels, count, first_seen, last_seen, "
                "last_delivery_id) VALUES (?, ?, ?, ?, 1, ?, ?, ?) ON CONFLICT (source, fingerprint) DO UPDATE "
                "SET count = count + 1, last_seen = excluded.last_seen, title = excluded.title, "
                "labels = excluded.labels, last_delivery_id = excluded.last_delivery_id",
                (alert.source.value, alert.fingerprint, alert.title, json.dumps(alert.labels), now, now,
                 delivery.id))
            return Outcome(**base, outcome="unrouted", deduplicated=False)
        group = self._group(routed.group_key, pending, now)
        if group is not None:
            kind = {"firing": "repeat", "resolved": "resolved"}.get(event, "update")
            self._outbox(conn, "event", group.incident_id, delivery, {
                "event": kind, "source": alert.source.value, "fingerprint": alert.fingerprint,
                "title": alert.title, "status": event, "observed_at": alert.observed_at.isoformat(),
                "received_at": now, "delivery_id": delivery.id, "route": group.route,
                "description": alert.description[:2000] if kind == "update" else "",
            })
            updated = _Group(group.incident_id, group.incident_type, group.route, now, group.severity_hint)
            conn.execute("UPDATE groups SET last_seen = ? WHERE key = ?", (now, routed.group_key))
            pending[routed.group_key] = updated
            return Outcome(**base, outcome="joined" if kind == "repeat" else kind, deduplicated=True,
                           incident_id=group.incident_id, incident_type=group.incident_type, route=group.route,
                           severity_hint=group.severity_hint, flow_run_id=self._flow_runs.get(group.incident_id))
        if event != "firing":
            return Outcome(**base, outcome="no_incident", deduplicated=False, route=routed.route)
        incident_id = new_incident_id()
        hint = routed.severity.value if routed.severity else None
        self._outbox(conn, "run", incident_id, delivery, {
            "deployment": f"{routed.incident_type.value}/respond",
            "parameters": {"alert": alert.model_dump(mode="json"), "incident_id": incident_id,
                           "severity_hint": hint},
            "idempotency_key": idempotency_key(routed.group_key, incident_id),
            "flow_run_name": f"{incident_id} {routed.incident_type.value}",
            "tags": ["irp-intake", f"source:{alert.source.value}", f"route:{routed.route}"],
        })
        conn.execute(
            "INSERT INTO groups (key, incident_id, incident_type, route, severity_hint, last_seen) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET incident_id = excluded.incident_id, "
            "incident_type = excluded.incident_type, route = excluded.route, "
            "severity_hint = excluded.severity_hint, last_seen = excluded.last_seen",
            (routed.group_key, incident_id, routed.incident_type.value, routed.route, hint, now))
        conn.execute("INSERT INTO incidents (id, incident_type, group_key, created_at) VALUES (?, ?, ?, ?)",
                     (incident_id, routed.incident_type.value, routed.group_key, now))
        pending[routed.group_key] = _Group(incident_id, routed.incident_type.value, routed.route, now, hint)
        return Outcome(**base, outcome="new_incident", deduplicated=False, incident_id=incident_id,
                       incident_type=routed.incident_type.value, route=routed.route, severity_hint=hint)

    def _outbox(self, conn: sqlite3.Connection, kind: str, incident_id: str | None, delivery: Delivery,
                payload: dict) -> None:
        conn.execute(
            "INSERT INTO outbox (kind, incident_id, delivery_id, payload, next_attempt_at, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (kind, incident_id, delivery.id, json.dumps(payload), delivery.received_at, delivery.received_at))

    def _refresh(self, outcomes: list[Outcome]) -> list[Outcome]:
        for outcome in outcomes:
            if outcome.incident_id and not outcome.flow_run_id:
                outcome.flow_run_id = self._flow_runs.get(outcome.incident_id)
        return outcomes

    # --- the outbox ---

    def due(self, now: float, limit: int = 200) -> list[OutboxItem]:
        rows = self._reader().execute(
            "SELECT id, kind, incident_id, payload, state, attempts, batch_id, created_at FROM outbox "
            "WHERE state IN ('pending', 'claimed') AND next_attempt_at <= ? ORDER BY id LIMIT ?",
            (now, limit)).fetchall()
        return [OutboxItem(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6], r[7]) for r in rows]

    def next_due(self) -> float | None:
        row = self._reader().execute(
            "SELECT MIN(next_attempt_at) FROM outbox WHERE state IN ('pending', 'claimed')").fetchone()
        return row[0]

    def run_created(self, item: OutboxItem, flow_run_id: str) -> Future[None]:
        def fn(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE outbox SET state = 'done', result = ?, done_at = ?, attempts = attempts + 1 "
                         "WHERE id = ?", (flow_run_id, time.time(), item.id))
            conn.execute("UPDATE incidents SET flow_run_id = ? WHERE id = ?", (flow_run_id, item.incident_id))

        def after(_value: None) -> None:
            if item.incident_id:
                self._flow_runs[item.incident_id] = flow_run_id

        return self._submit(fn, after)

    def claim_events(self, batches: list[tuple[str, list[OutboxItem], str]]) -> Future[list[int]]:
        def fn(conn: sqlite3.Connection) -> list[int]:
            ids = []
            for incident_id, items, entry_json in batches:
                cursor = conn.execute("INSERT INTO batches (incident_id, entry, created_at) VALUES (?, ?, ?)",
                                      (incident_id, entry_json, time.time()))
                batch_id = cursor.lastrowid
                conn.executemany(
                    "UPDATE outbox SET state = 'claimed', batch_id = ? WHERE id = ? AND state = 'pending'",
                    [(batch_id, item.id) for item in items])
                ids.append(batch_id)
            return ids

        return self._submit(fn)

    def batch_entry(self, batch_id: int) -> tuple[str, str]:
        row = self._reader().execute("SELECT incident_id, entry FROM batches WHERE id = ?", (batch_id,)).fetchone()
        return row[0], row[1]

    def batch_done(self, batch_ids: list[int]) -> Future[None]:
        def fn(conn: sqlite3.Connection) -> None:
            now = time.time()
            conn.executemany("UPDATE batches SET state = 'done' WHERE id = ?", [(b,) for b in batch_ids])
            conn.executemany(
                "UPDATE outbox SET state = 'done', done_at = ?, attempts = attempts + 1 WHERE batch_id = ?",
                [(now, b) for b in batch_ids])

        return self._submit(fn)

    def done(self, item: OutboxItem, result: str = "") -> Future[None]:
        return self._submit(lambda conn: conn.execute(
            "UPDATE outbox SET state = 'done', result = ?, done_at = ?, attempts = attempts + 1 WHERE id = ?",
            (result, time.time(), item.id)) and None)

    def failed(self, items: list[OutboxItem], error: str, retry_at: float) -> Future[None]:
        def fn(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? WHERE id = ?",
                [(error[:2000], retry_at, item.id) for item in items])

        return self._submit(fn)

    # --- reading ---

    def backlog(self) -> dict[str, int]:
        counts = {"run": 0, "event": 0, "confirm": 0}
        for kind, count in self._reader().execute(
                "SELECT kind, COUNT(*) FROM outbox WHERE state != 'done' GROUP BY kind"):
            counts[kind] = count
        return counts

    def last_error(self) -> str | None:
        row = self._reader().execute(
            "SELECT kind, last_error FROM outbox WHERE state != 'done' AND last_error IS NOT NULL "
            "ORDER BY id DESC LIMIT 1").fetchone()
        return f"{row[0]}: {row[1]}" if row else None

    def delivery(self, delivery_id: str) -> AcceptResult | None:
        row = self._reader().execute("SELECT outcomes FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
        if row is None:
            return None
        outcomes = [Outcome(**o) for o in json.loads(row[0])]
        reader = self._reader()
        for outcome in outcomes:
            if outcome.incident_id and not outcome.flow_run_id:
                found = reader.execute("SELECT flow_run_id FROM incidents WHERE id = ?",
                                       (outcome.incident_id,)).fetchone()
                outcome.flow_run_id = found[0] if found else None
        return AcceptResult(delivery_id, outcomes)

    def unrouted(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._reader().execute(
            "SELECT source, fingerprint, title, labels, count, first_seen, last_seen, last_delivery_id "
            "FROM unrouted ORDER BY last_seen DESC LIMIT ?", (limit,)).fetchall()
        return [{"source": r[0], "fingerprint": r[1], "title": r[2], "labels": json.loads(r[3]), "count": r[4],
                 "first_seen": r[5], "last_seen": r[6], "last_delivery_id": r[7]} for r in rows]

    def purge(self, older_than: float, window_start: float) -> Future[None]:
        def fn(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM deliveries WHERE received_at < ? AND id NOT IN "
                         "(SELECT delivery_id FROM outbox WHERE state != 'done' AND delivery_id IS NOT NULL)",
                         (older_than,))
            conn.execute("DELETE FROM outbox WHERE state = 'done' AND created_at < ?", (older_than,))
            conn.execute("DELETE FROM batches WHERE state = 'done' AND created_at < ?", (older_than,))
            conn.execute("DELETE FROM groups WHERE last_seen < ?", (window_start,))

        def after(_value: None) -> None:
            for key in [k for k, g in self._groups.items() if g.last_seen < window_start]:
                del self._groups[key]

        return self._submit(fn, after)
