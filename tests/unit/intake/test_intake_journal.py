"""The SQLite journal: dedup decisions, replays, durability across reopen, concurrent group commit."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from irp.intake.journal import Delivery, SQLiteJournal, idempotency_key
from irp.intake.routing import Routed
from irp.models import Alert, AlertSource, IncidentType, Severity

ROUTE = Routed("r", IncidentType.malware, Severity.major, "")


def _alert(fp: str, status: str = "firing") -> tuple[Alert, Routed, str]:
    alert = Alert(source=AlertSource.alertmanager, fingerprint=fp, title=f"alert {fp}", status=status)
    return alert, Routed(ROUTE.route, ROUTE.incident_type, ROUTE.severity, f"alertmanager:{fp}"), status


def _deliver(journal: SQLiteJournal, *alerts, key: str | None = None, repeat: str = "reject", at: float = 0):
    delivery = Delivery("alertmanager", b"{}", list(alerts), delivery_key=key, repeat=repeat)
    if at:
        delivery.received_at = at
    return journal.accept(delivery).result(timeout=10)


@pytest.fixture
def journal(tmp_path: Path):
    j = SQLiteJournal(tmp_path / "j.sqlite3", dedup_window=60)
    yield j
    j.close()


class TestDecisions:
    def test_first_opens_then_repeats_join(self, journal: SQLiteJournal) -> None:
        first = _deliver(journal, _alert("a")).outcomes[0]
        second = _deliver(journal, _alert("a")).outcomes[0]
        assert (first.outcome, first.deduplicated) == ("new_incident", False)
        assert (second.outcome, second.deduplicated, second.incident_id) == ("joined", True, first.incident_id)
        kinds = [i.kind for i in journal.due(time.time() + 1)]
        assert kinds == ["run", "event"]
        run = journal.due(time.time() + 1)[0]
        assert run.payload["deployment"] == "malware/respond"
        assert run.payload["parameters"]["incident_id"] == first.incident_id
        assert run.payload["parameters"]["severity_hint"] == "major"
        assert run.payload["idempotency_key"] == idempotency_key("alertmanager:a", first.incident_id)

    def test_resolved_joins_and_resolved_alone_opens_nothing(self, journal: SQLiteJournal) -> None:
        assert _deliver(journal, _alert("b", "resolved")).outcomes[0].outcome == "no_incident"
        opened = _deliver(journal, _alert("b")).outcomes[0]
        resolved = _deliver(journal, _alert("b", "resolved")).outcomes[0]
        assert (resolved.outcome, resolved.incident_id) == ("resolved", opened.incident_id)

    def test_window_expiry_opens_a_new_incident(self, journal: SQLiteJournal) -> None:
        now = time.time()
        first = _deliver(journal, _alert("c"), at=now - 200).outcomes[0]
        again = _deliver(journal, _alert("c"), at=now).outcomes[0]
        assert again.outcome == "new_incident" and again.incident_id != first.incident_id

    def test_same_alert_twice_in_one_request(self, journal: SQLiteJournal) -> None:
        outcomes = _deliver(journal, _alert("d"), _alert("d")).outcomes
        assert [o.outcome for o in outcomes] == ["new_incident", "joined"]

    def test_unrouted_recorded_and_counted(self, journal: SQLiteJournal) -> None:
        alert = Alert(source=AlertSource.generic, fingerprint="u", title="nobody's", labels={"x": "1"})
        for _ in range(3):
            assert _deliver(journal, (alert, None, "firing")).outcomes[0].outcome == "unrouted"
        [row] = journal.unrouted()
        assert (row["fingerprint"], row["count"], row["labels"]) == ("u", 3, {"x": "1"})
        assert journal.due(time.time() + 1) == []


class TestDeliveryKeys:
    def test_replayed_key_rejected(self, journal: SQLiteJournal) -> None:
        first = _deliver(journal, _alert("e"), key="webhook-id:1")
        again = _deliver(journal, _alert("e"), key="webhook-id:1")
        assert not first.replay and again.replay and again.outcomes == []
        assert len(journal.due(time.time() + 1)) == 1

    def test_resent_key_gets_the_first_answer(self, journal: SQLiteJournal) -> None:
        first = _deliver(journal, _alert("f"), key="sns:1", repeat="same")
        again = _deliver(journal, _alert("f"), key="sns:1", repeat="same")
        assert again.repeat_delivery and again.delivery_id == first.delivery_id
        assert again.outcomes[0].incident_id == first.outcomes[0].incident_id
        assert len(journal.due(time.time() + 1)) == 1


def test_state_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    journal = SQLiteJournal(path, dedup_window=60)
    opened = _deliver(journal, _alert("g")).outcomes[0]
    run = journal.due(time.time() + 1)[0]
    journal.run_created(run, "flow-run-1").result()
    journal.close()
    reopened = SQLiteJournal(path, dedup_window=60)
    try:
        again = _deliver(reopened, _alert("g")).outcomes[0]
        assert (again.outcome, again.incident_id, again.flow_run_id) == ("joined", opened.incident_id, "flow-run-1")
        assert reopened.delivery(again_id := _deliver(reopened, _alert("g")).delivery_id).delivery_id == again_id
    finally:
        reopened.close()


def test_wal_and_full_sync(tmp_path: Path) -> None:
    journal = SQLiteJournal(tmp_path / "j.sqlite3", dedup_window=60)
    try:
        conn = journal._writer
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        journal.close()


def test_concurrent_storm_one_incident_per_fingerprint(journal: SQLiteJournal) -> None:
    """16 threads × 250 deliveries of 20 fingerprints: exactly 20 runs, every other alert one event."""
    errors: list[BaseException] = []

    def sender(n: int) -> None:
        try:
            for i in range(250):
                _deliver(journal, _alert(f"fp{(n * 250 + i) % 20}"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rows = sqlite3.connect(journal.path).execute("SELECT kind, COUNT(*) FROM outbox GROUP BY kind").fetchall()
    assert dict(rows) == {"run": 20, "event": 4000 - 20}
    incidents = {json.loads(p)["parameters"]["alert"]["fingerprint"] for (p,) in sqlite3.connect(journal.path)
                 .execute("SELECT payload FROM outbox WHERE kind = 'run'")}
    assert incidents == {f"fp{i}" for i in range(20)}
