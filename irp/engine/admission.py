"""Which stages of a worker's runs go first when many incidents arrive at once.

A worker runs many incidents in threads of one process. Left alone they share its core (and the
Prefect server) evenly, so in a burst the hundredth incident's `detect` waits behind the
containment of the ninety-nine before it. Here at most `IRP_WORKER_ACTIVE_STAGES` stages of one
process run at once, and a freed place goes to the earliest stage of the policy waiting — a new
incident's opening and `detect` before another's `analyse`, before containment and notification,
before restore and review — then to the incident that arrived first. A stage that waits for
people (an approval gate) gives its place back while it waits.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from irp.models import Stage
from irp.settings import get_settings

__all__ = ["RANKS", "admitted", "arrived", "stepped_out"]

RANKS = {Stage.detect: 0, Stage.analyse: 1, Stage.contain: 2, Stage.notify: 2, Stage.restore: 3, Stage.review: 4}

_arrivals = itertools.count()
_arrival: ContextVar[int | None] = ContextVar("irp_arrival", default=None)
_local = threading.local()  # the place this thread holds: (rank, arrival)


class _Places:
    """`size` places; the waiter with the smallest (rank, arrival, turn) enters first."""

    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._waiting: list[tuple[int, int, int]] = []
        self._taken = 0
        self._turns = itertools.count()

    def enter(self, rank: int, arrival: int, size: int) -> None:
        key = (rank, arrival, next(self._turns))
        with self._ready:
            heapq.heappush(self._waiting, key)
            try:
                while not (self._taken < size and self._waiting[0] == key):
                    self._ready.wait()
            except BaseException:  # interrupted while waiting: out of the line, or it would hold it up
                self._waiting.remove(key)
                heapq.heapify(self._waiting)
                self._ready.notify_all()
                raise
            heapq.heappop(self._waiting)
            self._taken += 1
            self._ready.notify_all()  # the next in line may enter too while places are left

    def leave(self) -> None:
        with self._ready:
            self._taken -= 1
            self._ready.notify_all()


_places = _Places()


def _size() -> int:
    return get_settings().worker_active_stages


def arrived() -> None:
    """Mark the run this context executes as arrived now (its order among the process's runs)."""
    if _arrival.get() is None:
        _arrival.set(next(_arrivals))


@contextmanager
def admitted(rank: int) -> Iterator[None]:
    """Hold a place for the work inside; a thread that already holds one keeps it (no second place)."""
    size = _size()
    if size <= 0 or getattr(_local, "held", None) is not None:
        yield
        return
    arrival = _arrival.get()
    held = (rank, next(_arrivals) if arrival is None else arrival)
    _places.enter(*held, size)
    _local.held = held
    try:
        yield
    finally:
        _local.held = None
        _places.leave()


@contextmanager
def stepped_out() -> Iterator[None]:
    """Give this thread's place back while it waits for people; take one again (same rank, same turn) after."""
    held = getattr(_local, "held", None)
    if held is None:
        yield
        return
    _local.held = None
    _places.leave()
    try:
        yield
    finally:
        _places.enter(*held, _size())
        _local.held = held
