"""The journal's group commit: one writer thread runs every queued operation and commits them together.

Concurrent requests share one fsync. Each group runs optimistically in one transaction; when an
operation fails, the group runs again with each operation in a savepoint, so one bad operation
does not sink the others. Reads run on a connection per thread.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from irp.intake.journal.records import JournalError

_BATCH_MAX = 512


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


class _OpFailed(Exception):
    """An operation failed in a group run without savepoints: run the group again with them."""


class GroupCommitWriter:
    """One writer thread committing queued operations in groups; a backend says how to connect and begin.

    Statements are written with `?` placeholders; `_sql` adapts them to the driver.
    """

    location: str  # where the journal is, for people (no password)
    errors: tuple[type[BaseException], ...] = ()  # the driver's errors

    def __init__(self) -> None:
        self._statements: dict[str, str] = {}
        self._writer = self._open()
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._local = threading.local()
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
