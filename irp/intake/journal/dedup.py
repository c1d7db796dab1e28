"""The journal's dedup decision: each alert opens an incident, joins an open one, or is listed as unrouted.

The decision is one upsert on the alert's group, in SQL both databases run, so it is atomic however
many intakes share the database; the work it implies is queued in the outbox in the same transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from concurrent.futures import Future
from typing import Any

import orjson

from irp.deployments import respond_call, triage_call
from irp.intake.journal.outbox_table import LEASE_SECONDS, OutboxTable
from irp.intake.journal.records import AcceptResult, AlertDecision, AlertDelivery, idempotency_key
from irp.intake.routing import TRIAGE_ROUTE, Routed
from irp.models import Alert, new_incident_id

OPEN_GROUP_MAX_SECONDS = 180 * 86400  # an open incident keeps its alerts at most this long after the last one


class AlertJournal(OutboxTable):
    """Every accepted delivery, the dedup state and the outbox; a backend (databases.py) says where."""

    def __init__(self, dedup_window: float, lease_seconds: float = LEASE_SECONDS) -> None:
        self.window = dedup_window
        super().__init__(lease_seconds)

    def accept(self, delivery: AlertDelivery) -> Future[AcceptResult]:
        """Record the delivery and decide each alert; the future resolves once durable."""
        return self._accept(delivery, None)

    async def accept_async(self, delivery: AlertDelivery) -> AcceptResult:
        """`accept` for the event loop: returns once the delivery is durable."""
        return await self._accept(delivery, asyncio.get_running_loop())

    def _accept(self, delivery: AlertDelivery, loop: asyncio.AbstractEventLoop | None):
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
                    outcomes = [AlertDecision(**o) for o in json.loads(row[1])]
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

    def _decide(self, conn: Any, delivery: AlertDelivery, alert: Alert, routed: Routed | None, event: str) -> AlertDecision:
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
            return AlertDecision(**base, outcome="unrouted", deduplicated=False)
        opened_before = now - self.window
        # The writer holds the group's key (one writer per SQLite file; advisory locks on PostgreSQL),
        # so nobody else decides on this group between the two statements. An alert joins the group's
        # incident while it is recent (the window) or while the incident is still open (its response
        # goes on for days: `mark_ended` closes the group once the incident has ended).
        rows = self._x(conn,
                       "UPDATE groups SET last_seen = CASE WHEN last_seen < ? THEN ? ELSE last_seen END "
                       "WHERE key = ? AND (last_seen >= ? OR (incident_open = 1 AND last_seen >= ?)) "
                       "RETURNING incident_id, incident_type, route, severity_hint",
                       (now, now, routed.group_key, opened_before, now - OPEN_GROUP_MAX_SECONDS)).fetchall()
        if rows:  # an open incident: the alert joins it (a timeline entry, no run)
            group = rows[0]
            kind = {"firing": "repeat", "resolved": "resolved"}.get(event, "update")
            self._outbox(conn, "event", group[0], delivery, {
                "event": kind, "source": alert.source.value, "fingerprint": alert.fingerprint,
                "title": alert.title, "status": event, "observed_at": alert.observed_at.isoformat(),
                "received_at": now, "delivery_id": delivery.id, "route": group[2],
                "description": alert.description[:2000] if kind == "update" else "",
            })
            return AlertDecision(**base, outcome="joined" if kind == "repeat" else kind, deduplicated=True,
                           incident_id=group[0], incident_type=group[1], route=group[2], severity_hint=group[3],
                           flow_run_id=self._flow_run(conn, group[0]))
        if event != "firing":  # resolved or updated with no open incident: nothing to open
            return AlertDecision(**base, outcome="no_incident", deduplicated=False, route=routed.route)
        incident_id = new_incident_id()
        hint = routed.severity.value if routed.severity else None
        # No incident type: an unrouted alert its source marks severe, sent to triage (a person chooses the type).
        kind = routed.incident_type.value if routed.incident_type else TRIAGE_ROUTE
        self._x(conn,
                "INSERT INTO groups (key, incident_id, incident_type, route, severity_hint, last_seen, incident_open) "
                "VALUES (?, ?, ?, ?, ?, ?, 1) ON CONFLICT (key) DO UPDATE SET incident_id = excluded.incident_id, "
                "incident_type = excluded.incident_type, route = excluded.route, "
                "severity_hint = excluded.severity_hint, last_seen = excluded.last_seen, incident_open = 1",
                (routed.group_key, incident_id, kind, routed.route, hint, now))
        if routed.incident_type is None:
            deployment, parameters = triage_call(alert, incident_id, hint)
        else:
            deployment, parameters = respond_call(routed.incident_type, alert, incident_id, hint,
                                                  routed.run_clients() if routed.clients else None)
        self._outbox(conn, "run", incident_id, delivery, {
            "deployment": deployment,
            "parameters": parameters,
            "idempotency_key": idempotency_key(routed.group_key, incident_id),
            "flow_run_name": f"{incident_id} {kind}",
            "tags": ["irp-intake", f"source:{alert.source.value}", f"route:{routed.route}"],
        })
        self._x(conn, "INSERT INTO incidents (id, incident_type, group_key, created_at) VALUES (?, ?, ?, ?)",
                (incident_id, kind, routed.group_key, now))
        return AlertDecision(**base, outcome="new_incident", deduplicated=False, incident_id=incident_id,
                       incident_type=kind, route=routed.route, severity_hint=hint)

    def _flow_run(self, conn: Any, incident_id: str) -> str | None:
        found = self._flow_runs.get(incident_id)
        if found is None:
            row = self._x(conn, "SELECT flow_run_id FROM incidents WHERE id = ?", (incident_id,)).fetchone()
            if row and row[0]:
                found = self._remember(incident_id, row[0])
        return found

    def _outbox(self, conn: Any, kind: str, incident_id: str | None, delivery: AlertDelivery, payload: dict) -> None:
        self._x(conn,
                "INSERT INTO outbox (kind, incident_id, delivery_id, payload, next_attempt_at, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (kind, incident_id, delivery.id, orjson.dumps(payload).decode(), delivery.received_at,
                 delivery.received_at))

    def _refresh(self, conn: Any, outcomes: list[AlertDecision]) -> list[AlertDecision]:
        for outcome in outcomes:
            if outcome.incident_id and not outcome.flow_run_id:
                outcome.flow_run_id = self._flow_run(conn, outcome.incident_id)
        return outcomes

    def delivery(self, delivery_id: str) -> AcceptResult | None:
        """A recorded delivery's outcomes, flow runs refreshed."""
        rows = self._read("SELECT outcomes FROM deliveries WHERE id = ?", (delivery_id,))
        if not rows:
            return None
        outcomes = [AlertDecision(**o) for o in json.loads(rows[0][0])]
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
            self._x(conn, "DELETE FROM groups WHERE last_seen < ? AND (incident_open = 0 OR last_seen < ?)",
                    (window_start, time.time() - OPEN_GROUP_MAX_SECONDS))

        return self._submit(fn)

    def use_link(self, link_id: str, incident_id: str) -> Future[bool]:
        """Record an approval link as used: True the first time, False when it was used before (a replay)."""
        def fn(conn: Any) -> bool:
            cursor = self._x(conn, "INSERT INTO used_links (id, incident_id, used_at) VALUES (?, ?, ?) "
                                   "ON CONFLICT (id) DO NOTHING", (link_id, incident_id, time.time()))
            return cursor.rowcount == 1

        return self._submit(fn, keys=(f"link:{link_id}",))

    def link_used(self, link_id: str) -> bool:
        """Whether an approval link was used already."""
        return bool(self._read("SELECT 1 FROM used_links WHERE id = ?", (link_id,)))

    def forget_link(self, link_id: str) -> Future[None]:
        """Make a link usable again: its decision could not be delivered to the run."""
        def fn(conn: Any) -> None:
            self._x(conn, "DELETE FROM used_links WHERE id = ?", (link_id,))

        return self._submit(fn, keys=(f"link:{link_id}",))

    def quiet_open_groups(self, window_start: float) -> list[tuple[str, str]]:
        """(group key, incident id) of the groups past the window whose incident may still be open."""
        return [(r[0], r[1]) for r in self._read(
            "SELECT key, incident_id FROM groups WHERE incident_open = 1 AND last_seen < ?", (window_start,))]

    def mark_ended(self, groups: list[tuple[str, str]]) -> Future[None]:
        """The incidents of these groups have ended: their next alert opens a new incident."""
        def fn(conn: Any) -> None:
            for key, incident_id in groups:
                self._x(conn, "UPDATE groups SET incident_open = 0 WHERE key = ? AND incident_id = ?", (key, incident_id))

        return self._submit(fn, keys=tuple(key for key, _ in groups))
