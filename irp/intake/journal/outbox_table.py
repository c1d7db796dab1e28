"""The journal's outbox table: work queued with each decision, leased by one intake, retried, marked done.

Outbox items are leased for LEASE_SECONDS (`FOR UPDATE SKIP LOCKED` on PostgreSQL), so each is
carried out by one intake, and the items of an intake that died are taken over when their lease
expires. The worker that carries them out is irp.intake.outbox.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from typing import Any

import orjson

from irp.intake.journal.records import OutboxItem
from irp.intake.journal.writer import GroupCommitWriter

LEASE_SECONDS = 30.0  # how long an outbox item taken by one intake is left alone by the others
_FLOW_RUNS_CACHED = 10_000
_ITEM_COLUMNS = "id, kind, incident_id, payload, state, attempts, batch_id, created_at"
_DUE = "state IN ('pending', 'claimed') AND next_attempt_at <= ?"


def _item(row: tuple) -> OutboxItem:
    return OutboxItem(row[0], row[1], row[2], orjson.loads(row[3]), row[4], row[5], row[6], row[7])


def _marks(values: list) -> str:
    return ", ".join("?" * len(values))


class OutboxTable(GroupCommitWriter):
    """The outbox's statements: due items, leases, batches of timeline entries, done and failed."""

    skip_locked = ""  # appended to the lease's SELECT where the database has row locks

    def __init__(self, lease_seconds: float = LEASE_SECONDS) -> None:
        self.lease_seconds = lease_seconds
        self._flow_runs: dict[str, str] = {}  # incident id → its flow run, once known (it never changes)
        super().__init__()

    def _remember(self, incident_id: str, flow_run_id: str) -> str:
        if len(self._flow_runs) >= _FLOW_RUNS_CACHED:
            self._flow_runs.clear()
        self._flow_runs[incident_id] = flow_run_id
        return flow_run_id

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

    def backlog(self) -> dict[str, int]:
        """Outbox items not done, by kind."""
        counts = {"run": 0, "event": 0, "confirm": 0}
        counts.update(self._read("SELECT kind, COUNT(*) FROM outbox WHERE state != 'done' GROUP BY kind"))
        return counts

    def backlog_since(self) -> dict[str, float]:
        """When the oldest outbox item not done of each kind was queued (epoch seconds), for kinds with one."""
        return dict(self._read("SELECT kind, MIN(created_at) FROM outbox WHERE state != 'done' GROUP BY kind"))

    def last_error(self) -> str | None:
        """The newest error of an item not done yet."""
        rows = self._read("SELECT kind, last_error FROM outbox WHERE state != 'done' AND last_error IS NOT NULL "
                          "ORDER BY id DESC LIMIT 1")
        return f"{rows[0][0]}: {rows[0][1]}" if rows else None
