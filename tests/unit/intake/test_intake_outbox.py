"""The outbox worker: retries, one timeline entry per batch of repeats, re-append after a crash."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from irp.intake.journal import AlertDelivery, SQLiteJournal
from irp.intake.outbox import BUSY_DELAY, BUSY_RETRIES, Outbox, ServerBusy
from irp.intake.routing import Routed
from irp.models import Alert, AlertSource, IncidentType, TimelineEntry


def _deliver(journal: SQLiteJournal, fp: str, status: str = "firing"):
    alert = Alert(source=AlertSource.grafana, fingerprint=fp, title=f"alert {fp}", status=status)
    routed = Routed("r", IncidentType.cyberattack, None, f"grafana:{fp}")
    return journal.accept(AlertDelivery("grafana", b"{}", [(alert, routed, status)])).result(timeout=10)


class Recorder:
    """Stands in for Prefect and the evidence store at the I/O boundary; can fail on demand."""

    def __init__(self) -> None:
        self.runs: list[dict] = []
        self.events: list[tuple[str, TimelineEntry]] = []
        self.fail_runs = 0

    def create_run(self, payload: dict) -> str:
        if self.fail_runs:
            self.fail_runs -= 1
            raise ConnectionError("prefect down")
        self.runs.append(payload)
        return f"run-{len(self.runs)}"

    def append_event(self, incident_id: str, entry: TimelineEntry) -> None:
        self.events.append((incident_id, entry))


@pytest.fixture
def journal(tmp_path: Path):
    j = SQLiteJournal(tmp_path / "j.sqlite3", dedup_window=600)
    yield j
    j.close()


def _drain(outbox: Outbox, journal: SQLiteJournal, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while any(journal.backlog().values()):
        assert time.monotonic() < deadline, journal.backlog()
        outbox.drain_once()
        time.sleep(0.05)


def test_repeats_are_gathered_and_runs_retried(journal: SQLiteJournal) -> None:
    rec = Recorder()
    rec.fail_runs = 2
    outbox = Outbox(journal, rec.create_run, rec.append_event, confirm=lambda url: None, retry_max=0.1)
    opened = _deliver(journal, "a").outcomes[0]
    for _ in range(30):
        _deliver(journal, "a")
    _deliver(journal, "a", "resolved")
    _drain(outbox, journal)
    outbox.stop()
    assert len(rec.runs) == 1 and rec.runs[0]["parameters"]["incident_id"] == opened.incident_id
    entries = [entry for _, entry in rec.events]
    assert sorted((e.data["event"], e.data["count"]) for e in entries) == [("repeat", 30), ("resolved", 1)]
    assert entries[0].message.startswith("grafana alert repeated 30 times")
    later = _deliver(journal, "a")
    assert later.outcomes[0].flow_run_id == "run-1"
    assert journal.delivery(later.delivery_id).outcomes[0].flow_run_id == "run-1"


def test_claimed_entry_is_appended_again_identically_after_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    journal = SQLiteJournal(path, dedup_window=600)
    _deliver(journal, "b")
    _deliver(journal, "b")

    class Crash(Exception):
        pass

    def crash(incident_id: str, entry: TimelineEntry) -> None:
        rec.events.append((incident_id, entry))
        raise Crash  # appended, then the process dies before marking it done

    rec = Recorder()
    first = Outbox(journal, rec.create_run, crash, confirm=lambda url: None)
    first.drain_once()
    first.stop()
    journal.close()

    journal = SQLiteJournal(path, dedup_window=600)
    second = Outbox(journal, rec.create_run, rec.append_event, confirm=lambda url: None, retry_max=0.1)
    time.sleep(0.6)
    _drain(second, journal)
    second.stop()
    journal.close()
    appended = [entry for _, entry in rec.events]
    assert len(appended) == 2 and appended[0] == appended[1]  # the store keeps an identical entry once


class BusyServer(Recorder):
    """A Prefect server that answers busy (503) `busy` times before it creates the run."""

    def __init__(self, busy: int) -> None:
        super().__init__()
        self.busy = busy

    def create_run(self, payload: dict) -> str:
        if self.busy:
            self.busy -= 1
            raise ServerBusy("database is locked")
        return super().create_run(payload)


def test_a_busy_server_is_asked_again_within_milliseconds_not_seconds(journal: SQLiteJournal) -> None:
    server, pauses, busy_seen = BusyServer(busy=5), [], []
    outbox = Outbox(journal, server.create_run, server.append_event, confirm=lambda url: None,
                    sleep=pauses.append, on_busy=lambda: busy_seen.append(1))
    _deliver(journal, "a")
    outbox.drain_once()
    outbox.stop()
    assert len(server.runs) == 1 and not any(journal.backlog().values())  # created in the same pass
    assert len(pauses) == len(busy_seen) == 5
    assert all(BUSY_DELAY[0] <= pause <= BUSY_DELAY[1] for pause in pauses)  # jittered tens of milliseconds
    assert len(set(pauses)) > 1


def test_a_server_busy_for_longer_leaves_the_run_to_the_outbox_retries(journal: SQLiteJournal) -> None:
    server, pauses = BusyServer(busy=BUSY_RETRIES + 1), []
    outbox = Outbox(journal, server.create_run, server.append_event, confirm=lambda url: None,
                    sleep=pauses.append, retry_max=0.1)
    _deliver(journal, "a")
    outbox.drain_once()
    outbox.stop()
    assert server.runs == [] and journal.backlog()["run"] == 1  # kept, due again later: nothing lost
    assert len(pauses) == BUSY_RETRIES and "ServerBusy" in journal.last_error()
