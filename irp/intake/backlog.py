"""The backlog: alerts accepted whose response has not started yet, and how long the oldest has waited.

Two queues stand between an acknowledged alert and its first stage task:
- the journal's outbox: runs to create and timeline entries to append (a Prefect server down or busy);
- the work pool: runs created that no worker has started yet (workers stopped, or all busy).
Under a burst both grow and drain; the intake keeps acknowledging and journaling meanwhile, so
nothing is lost. /metrics shows each queue's size and age; /healthz turns `degraded` once the
oldest item of either has waited longer than IRP_INTAKE_BACKLOG_MAX_AGE_SECONDS.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["Backlog", "BacklogMonitor"]

log = logging.getLogger("irp.intake")
RUNS_READ_EVERY = 5.0  # seconds a reading of the work pool's queue is reused (it costs the server two reads)


@dataclass(frozen=True)
class Backlog:
    items: dict[str, int]  # outbox items not done, per kind
    ages: dict[str, float] = field(default_factory=dict)  # seconds the oldest of each kind has waited
    runs_waiting: int | None = None  # runs no worker has started (None: the Prefect server did not answer)
    runs_waiting_age: float | None = None  # seconds since the oldest of them was due

    def too_old(self, max_age: float) -> list[str]:
        """What has waited longer than `max_age` seconds, in words (empty: healthy)."""
        late = [f"{kind} items queued in the outbox for {age:.0f} s" for kind, age in sorted(self.ages.items())
                if age > max_age]
        if self.runs_waiting_age is not None and self.runs_waiting_age > max_age:
            late.append(f"{self.runs_waiting} run(s) waiting for a worker, the oldest for {self.runs_waiting_age:.0f} s "
                        "(is `irp worker` running?)")
        return late


class BacklogMonitor:
    """Reads the backlog: the journal every time (a cheap indexed query), the work pool at most every 5 s."""

    def __init__(self, journal, waiting: Callable[[], tuple[int, datetime | None] | None],
                 clock: Callable[[], float] = time.time) -> None:
        self.journal, self.waiting, self.clock = journal, waiting, clock
        self._lock = threading.Lock()
        self._runs: tuple[float, int | None, float | None] = (float("-inf"), None, None)  # read at, count, due at

    def read(self) -> Backlog:
        now = self.clock()
        items = self.journal.backlog()
        ages = {kind: max(0.0, now - since) for kind, since in self.journal.backlog_since().items()}
        count, due = self._waiting(now)
        return Backlog(items, ages, count, None if due is None else max(0.0, now - due))

    def _waiting(self, now: float) -> tuple[int | None, float | None]:
        with self._lock:
            read_at, count, due = self._runs
            if now - read_at < RUNS_READ_EVERY:
                return count, due
            try:
                found = self.waiting()
                count, oldest = found if found is not None else (None, None)
                due = oldest.timestamp() if oldest is not None else None
            except Exception as exc:  # the server down: the outbox's backlog shows it; say so once per reading
                log.warning("backlog: cannot read the runs waiting for a worker: %s", exc)
                count, due = None, None
            self._runs = (now, count, due)
            return count, due
