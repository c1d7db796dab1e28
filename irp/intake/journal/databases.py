"""Where the journal lives: one SQLite file owned by one intake, or PostgreSQL shared by replicas.

- `SQLiteJournal`: one file (WAL, synchronous=FULL), owned by one intake process (a lock file
  says so to a second one);
- `PostgresJournal`: one database shared by several intake replicas. Each transaction first takes
  transaction-level advisory locks on the groups it touches, in a fixed order, so replicas never
  deadlock.
"""

from __future__ import annotations

import fcntl
import hashlib
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from irp.intake.journal.dedup import AlertJournal
from irp.intake.journal.outbox_table import LEASE_SECONDS
from irp.intake.journal.records import JournalError

SCHEMA_VERSION = 3

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
    last_seen {real} NOT NULL,
    incident_open INTEGER NOT NULL DEFAULT 1
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
CREATE TABLE IF NOT EXISTS used_links (
    id TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL,
    used_at {real} NOT NULL
);
"""


class SQLiteJournal(AlertJournal):
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
            if 1 <= version <= 2:
                conn.execute("ALTER TABLE groups ADD COLUMN incident_open INTEGER NOT NULL DEFAULT 1")
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


class PostgresJournal(AlertJournal):
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
                conn.execute("ALTER TABLE groups ADD COLUMN IF NOT EXISTS incident_open INTEGER NOT NULL DEFAULT 1")
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


def open_journal(location: str | Path, dedup_window: float, lease_seconds: float = LEASE_SECONDS) -> AlertJournal:
    """The journal at `location`: a postgresql:// URL, or the path of a SQLite file."""
    text = str(location)
    if text.split("://", 1)[0].split("+", 1)[0] in ("postgresql", "postgres"):
        return PostgresJournal(text, dedup_window, lease_seconds)
    return SQLiteJournal(Path(text.removeprefix("sqlite://")), dedup_window, lease_seconds)
