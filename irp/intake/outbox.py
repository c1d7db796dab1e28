"""The outbox worker: carries out what the journal queued, retrying until it succeeds.

- run: `run_deployment("<type>/respond", parameters, idempotency_key=K, timeout=0)`; the key is
  stored with the item, so a retry after a crash or an outage returns the run already created.
  A server busy for a moment (`ServerBusy`: Prefect on SQLite answering 503 "database is locked"
  while another connection writes) is asked again after tens of milliseconds, with jitter, up to
  `BUSY_RETRIES` times, instead of the Prefect client's 2, 4, 8… s back-off; past that, the
  item is retried like any failure.
- event: repeats, resolutions and updates of one incident are gathered into one timeline entry
  (`store.append_event`). The entry is written to the journal before it is appended, so after a
  crash the very same entry is appended again, and the store keeps each entry once.
- confirm: GET the SubscribeURL of an SNS subscription confirmation.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from irp.intake.journal import AlertJournal, JournalError, OutboxItem
from irp.models import TimelineEntry

__all__ = ["Outbox", "ServerBusy", "timeline_entry"]

log = logging.getLogger("irp.intake")
_EVENTS_PER_ENTRY = 500
MIN_PASS_INTERVAL = 0.25  # under load, let work gather: fewer, larger timeline entries and commits
BUSY_RETRIES = 40  # quick attempts of a run creation while the server is busy (~2 s in all)
BUSY_DELAY = (0.02, 0.08)  # seconds between them, drawn uniformly: the competing writers spread out


class ServerBusy(Exception):  # noqa: N818 (a condition, retried at once)
    """The Prefect server could not take the request this moment (503); asking again shortly will do."""


def timeline_entry(items: list[OutboxItem]) -> TimelineEntry:
    """One entry recording alerts of the same kind for the same fingerprint of one incident."""
    first = items[0].payload
    source, title, event = first["source"], first["title"], first["event"]
    received = [item.payload["received_at"] for item in items]
    if event == "repeat":
        count = len(items)
        message = f"{source} alert repeated{f' {count} times' if count > 1 else ''}: {title}"
    elif event == "resolved":
        message = f"{source} alert resolved: {title}"
    else:
        message = f"{source} update ({first['status']}): {title}"
        if first.get("description"):
            message += f" — {first['description'].splitlines()[0][:300]}"
    return TimelineEntry(
        at=datetime.fromtimestamp(min(received), UTC),
        kind="alert",
        message=message,
        actor="irp-intake",
        data={
            "event": event,
            "source": source,
            "fingerprint": first["fingerprint"],
            "route": first.get("route"),
            "count": len(items),
            "first_received_at": datetime.fromtimestamp(min(received), UTC).isoformat(),
            "last_received_at": datetime.fromtimestamp(max(received), UTC).isoformat(),
            "deliveries": [item.payload["delivery_id"] for item in items],
            "outbox_ids": [item.id for item in items],
        },
    )


class Outbox:
    """A thread that drains the journal's outbox, and a small pool for the slow calls."""

    def __init__(
        self,
        journal: AlertJournal,
        create_run: Callable[[dict], str],
        append_event: Callable[[str, TimelineEntry], None],
        confirm: Callable[[str], None],
        retry_max: float = 30.0,
        on_run: Callable[[bool], None] | None = None,
        workers: int = 4,
        sleep: Callable[[float], None] = time.sleep,
        on_busy: Callable[[], None] | None = None,
    ) -> None:
        self.journal = journal
        self.create_run = create_run
        self.append_event = append_event
        self.confirm = confirm
        self.retry_max = retry_max
        self.on_run = on_run or (lambda ok: None)
        self.sleep = sleep
        self.on_busy = on_busy or (lambda: None)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="irp-outbox")
        self._in_flight: set[int] = set()
        self._lock = threading.Lock()
        self._runs_paused_until = 0.0  # after a failed run creation, one probe at a time until then
        self._kind_of: dict[int, str] = {}
        self._renewed = time.monotonic()
        self._probe = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="irp-outbox", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _retry_at(self, attempts: int) -> float:
        delay = min(self.retry_max, 0.5 * 2 ** min(attempts, 16))
        return time.time() + delay * random.uniform(0.8, 1.0)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            started = time.monotonic()
            try:
                self.drain_once()
            except JournalError as exc:  # the database is unreachable: say so once a second, no traceback
                log.warning("outbox: %s", exc)
                self._stop.wait(1.0)
            except Exception:  # a bug here must not stop the worker: log, wait, go on
                log.exception("outbox pass failed")
                self._stop.wait(1.0)
            self._renew_leases()
            nxt = None
            try:
                nxt = self.journal.next_due()
            except JournalError:
                pass  # reported by the pass above
            except Exception:
                log.exception("outbox: cannot read the journal")
            wait = 1.0 if nxt is None else max(0.0, min(1.0, nxt - time.time()))
            if wait > 0:
                self._wake.wait(wait)
            rest = MIN_PASS_INTERVAL - (time.monotonic() - started)
            if rest > 0:
                self._stop.wait(rest)

    def _renew_leases(self) -> None:
        """Keep the items in flight ours: only the items of an intake that stopped are taken over."""
        if time.monotonic() - self._renewed < self.journal.lease_seconds / 3:
            return
        self._renewed = time.monotonic()
        with self._lock:
            busy = list(self._in_flight)
        if busy:
            try:
                self.journal.renew(busy, time.time()).result()
            except JournalError as exc:
                log.warning("outbox: cannot renew leases: %s", exc)

    def drain_once(self) -> int:
        """Start every due item once; returns how many were started."""
        with self._lock:  # snapshot first: an item leaves the set only after its outcome is committed
            busy = set(self._in_flight)
        items = [i for i in self.journal.lease(time.time(), limit=1000) if i.id not in busy]
        events: dict[tuple, list[OutboxItem]] = defaultdict(list)
        claimed: dict[int, list[OutboxItem]] = defaultdict(list)
        waiting: list[OutboxItem] = []
        for item in items:
            if item.kind == "event":
                if item.state == "claimed" and item.batch_id is not None:
                    claimed[item.batch_id].append(item)
                else:
                    p = item.payload
                    events[(item.incident_id, p["event"], p["source"], p["fingerprint"])].append(item)
            else:
                if item.kind == "run" and not self._may_start_run(busy):
                    waiting.append(item)
                    continue
                with self._lock:
                    self._in_flight.add(item.id)
                    self._kind_of[item.id] = item.kind
                    busy.add(item.id)
                self._pool.submit(self._one, item)
        if waiting:  # due again at the next pass, here or in another intake
            self.journal.release(waiting).result()
        recovered = []
        for batch_id, batch_items in claimed.items():  # entries written before a crash: append them again
            incident_id, entry_json = self.journal.batch_entry(batch_id)
            recovered.append((batch_id, incident_id, TimelineEntry.model_validate_json(entry_json), batch_items))
        fresh = []
        for (incident_id, _event, _source, _fp), group in events.items():
            for start in range(0, len(group), _EVENTS_PER_ENTRY):
                chunk = group[start:start + _EVENTS_PER_ENTRY]
                fresh.append((incident_id, timeline_entry(chunk), chunk))
        if fresh:  # one commit records every entry of this pass before any is appended
            ids = self.journal.claim_events([(i, c, e.model_dump_json()) for i, e, c in fresh]).result()
            recovered += [(b, i, e, c) for b, (i, e, c) in zip(ids, fresh, strict=True) if b is not None]
        done = [batch_id for batch_id, incident_id, entry, chunk in recovered
                if self._append(incident_id, entry, chunk)]
        if done:
            self.journal.batch_done(done).result()
        return len(items)

    def _may_start_run(self, busy: set[int]) -> bool:
        """While the Prefect server keeps failing, probe with one run at a time instead of all of them."""
        if time.time() >= self._runs_paused_until:
            return True
        return not any(kind == "run" for kind in self._kinds(busy))

    def _kinds(self, ids: set[int]) -> list[str]:
        return [self._kind_of.get(i, "") for i in ids]

    def _append(self, incident_id: str, entry: TimelineEntry, items: list[OutboxItem]) -> bool:
        try:
            self.append_event(incident_id, entry)
        except Exception as exc:
            log.warning("outbox: timeline entry for %s failed, will retry: %s", incident_id, exc)
            self.journal.failed(items, f"{type(exc).__name__}: {exc}", self._retry_at(max(i.attempts for i in items)))
            return False
        return True

    def _create_run(self, payload: dict) -> str:
        """`create_run`, asked again after a short random pause while the server answers it is busy."""
        for _ in range(BUSY_RETRIES):
            try:
                return self.create_run(payload)
            except ServerBusy:
                self.on_busy()
                self.sleep(random.uniform(*BUSY_DELAY))
        return self.create_run(payload)

    def _one(self, item: OutboxItem) -> None:
        probing = False
        try:
            if item.kind == "run" and time.time() < self._runs_paused_until:
                probing = self._probe.acquire(blocking=False)
                if not probing:  # another run is probing the server: this one waits for the next pass
                    self.journal.release([item]).result()
                    return
            if item.kind == "run":
                flow_run_id = self._create_run(item.payload)
                self._runs_paused_until = 0.0
                self.journal.run_created(item, flow_run_id).result()
                self.on_run(True)
            elif item.kind == "confirm":
                self.confirm(item.payload["url"])
                self.journal.done(item, "confirmed").result()
            else:
                self.journal.done(item, f"unknown kind {item.kind}").result()
        except Exception as exc:
            if item.kind == "run":
                self.on_run(False)
                self._runs_paused_until = self._retry_at(item.attempts)
            log.warning("outbox: %s item %s failed (attempt %s), will retry: %s",
                        item.kind, item.id, item.attempts + 1, exc)
            try:
                self.journal.failed([item], f"{type(exc).__name__}: {exc}", self._retry_at(item.attempts)).result()
            except Exception:
                log.exception("outbox: cannot record the failure of item %s", item.id)
        finally:
            if probing:
                self._probe.release()
            with self._lock:
                self._in_flight.discard(item.id)
                self._kind_of.pop(item.id, None)
            self._wake.set()
