"""Admission in a burst: a freed place goes to the earliest stage waiting, then to the incident that came first."""

from __future__ import annotations

import contextvars
import threading
import time

import pytest

from irp.engine import admission
from irp.settings import get_settings


@pytest.fixture
def one_place(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("IRP_WORKER_ACTIVE_STAGES", "1")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _queue(entered: list[str], name: str, rank: int, arrived_first: threading.Event | None = None) -> threading.Thread:
    """A run (its own context, as a flow run has) that arrives, then asks a place at `rank`."""
    def run() -> None:
        admission.arrived()
        if arrived_first is not None:
            arrived_first.set()
        with admission.admitted(rank):
            entered.append(name)

    thread = threading.Thread(target=contextvars.Context().run, args=(run,))
    thread.start()
    return thread


def _until_waiting(count: int) -> None:
    deadline = time.monotonic() + 5
    while len(admission._places._waiting) < count:
        assert time.monotonic() < deadline, "the runs never queued"
        time.sleep(0.01)


def test_a_new_incidents_detect_goes_before_an_earlier_incidents_containment(one_place) -> None:
    entered: list[str] = []
    with admission.admitted(admission.RANKS[admission.Stage.review]):  # the one place is taken
        contain = _queue(entered, "older incident: contain", admission.RANKS[admission.Stage.contain])
        _until_waiting(1)
        detect = _queue(entered, "newer incident: detect", admission.RANKS[admission.Stage.detect])
        _until_waiting(2)
    contain.join(5)
    detect.join(5)
    assert entered == ["newer incident: detect", "older incident: contain"]


def test_at_the_same_stage_the_incident_that_came_first_goes_first(one_place) -> None:
    entered: list[str] = []
    first_arrived = threading.Event()
    with admission.admitted(admission.RANKS[admission.Stage.review]):
        runs = []
        older_arrived = threading.Event()
        # the older incident arrives first but asks its place second
        gate = threading.Event()

        def older() -> None:
            admission.arrived()
            older_arrived.set()
            gate.wait(5)
            with admission.admitted(admission.RANKS[admission.Stage.analyse]):
                entered.append("older")

        runs.append(threading.Thread(target=contextvars.Context().run, args=(older,)))
        runs[0].start()
        older_arrived.wait(5)
        runs.append(_queue(entered, "newer", admission.RANKS[admission.Stage.analyse], first_arrived))
        _until_waiting(1)
        gate.set()
        _until_waiting(2)
    for thread in runs:
        thread.join(5)
    assert entered == ["older", "newer"]


def test_waiting_for_people_gives_the_place_back(one_place) -> None:
    entered: list[str] = []
    with admission.admitted(admission.RANKS[admission.Stage.contain]):
        other = _queue(entered, "other", admission.RANKS[admission.Stage.contain])
        _until_waiting(1)
        with admission.stepped_out():  # an approval gate waits for people
            other.join(5)
            assert entered == ["other"]
        assert admission._local.held is not None  # the place is this thread's again


def test_a_thread_that_holds_a_place_does_not_ask_a_second(one_place) -> None:
    with admission.admitted(0), admission.admitted(1):  # the stage task inside the run's own place
        assert admission._places._taken == 1
    assert admission._places._taken == 0


def test_zero_places_means_no_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRP_WORKER_ACTIVE_STAGES", "0")
    get_settings.cache_clear()
    try:
        with admission.admitted(0):
            assert admission._places._taken == 0
    finally:
        get_settings.cache_clear()
