"""The journal on SQLite and on PostgreSQL: dedup decisions, replays, durability across reopen,
concurrent group commit; and what only a shared database does: several intakes deciding together,
leases on outbox items, a claimed batch never recorded twice."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from irp.intake.journal import (
    AlertDelivery,
    AlertJournal,
    JournalError,
    PostgresJournal,
    SQLiteJournal,
    idempotency_key,
    new_delivery_id,
)
from irp.intake.routing import Routed
from irp.models import Alert, AlertSource, IncidentType, Severity

ROUTE = Routed("r", IncidentType.malware, Severity.major, "")


def _alert(fp: str, status: str = "firing") -> tuple[Alert, Routed, str]:
    alert = Alert(source=AlertSource.alertmanager, fingerprint=fp, title=f"alert {fp}", status=status)
    return alert, Routed(ROUTE.route, ROUTE.incident_type, ROUTE.severity, f"alertmanager:{fp}"), status


def _deliver(journal: AlertJournal, *alerts, key: str | None = None, repeat: str = "reject", at: float = 0):
    delivery = AlertDelivery("alertmanager", b"{}", list(alerts), delivery_key=key, repeat=repeat)
    if at:
        delivery.received_at = at
    return journal.accept(delivery).result(timeout=10)


@pytest.fixture(params=["sqlite", "postgres"])
def open_journal(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., AlertJournal]:
    """Opens a journal of the backend at one location; every one opened is closed at the end."""
    location = str(tmp_path / "j.sqlite3")
    if request.param == "postgres":
        location = request.getfixturevalue("postgres_databases")()
    opened: list[AlertJournal] = []

    def open_(window: float = 60, lease_seconds: float = 30) -> AlertJournal:
        kind = PostgresJournal if request.param == "postgres" else SQLiteJournal
        opened.append(kind(location, dedup_window=window, lease_seconds=lease_seconds))
        return opened[-1]

    yield open_
    for j in opened:
        j.close()


@pytest.fixture
def journal(open_journal: Callable[..., AlertJournal]) -> AlertJournal:
    return open_journal()


class TestDecisions:
    def test_first_opens_then_repeats_join(self, journal: AlertJournal) -> None:
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

    def test_clients_a_route_states_are_passed_to_the_run_as_trusted(self, journal: AlertJournal) -> None:
        alert, routed, status = _alert("c")
        _deliver(journal, (alert, Routed("acme-sns", routed.incident_type, None, routed.group_key, ("acme",)), status))
        _deliver(journal, _alert("d"))
        first, second = [i.payload["parameters"] for i in journal.due(time.time() + 1) if i.kind == "run"]
        [origin] = first["clients"]
        assert (origin["client"], origin["source"], origin["confirmed"], origin["by"]) == \
            ("acme", "routing", True, "route acme-sns")
        assert "clients" not in second  # a route that states none: the alert's own labels are not trusted

    def test_resolved_joins_and_resolved_alone_opens_nothing(self, journal: AlertJournal) -> None:
        assert _deliver(journal, _alert("b", "resolved")).outcomes[0].outcome == "no_incident"
        opened = _deliver(journal, _alert("b")).outcomes[0]
        resolved = _deliver(journal, _alert("b", "resolved")).outcomes[0]
        assert (resolved.outcome, resolved.incident_id) == ("resolved", opened.incident_id)

    def test_an_open_incident_keeps_its_alerts_past_the_window_until_it_ends(self, journal: AlertJournal) -> None:
        now = time.time()
        first = _deliver(journal, _alert("c"), at=now - 300).outcomes[0]
        later = _deliver(journal, _alert("c"), at=now - 200).outcomes[0]  # 100 s after: past the 60 s window
        assert (later.outcome, later.incident_id) == ("joined", first.incident_id)
        assert journal.quiet_open_groups(now - 60) == [("alertmanager:c", first.incident_id)]
        journal.mark_ended([("alertmanager:c", first.incident_id)]).result(timeout=10)
        assert journal.quiet_open_groups(now - 60) == []
        again = _deliver(journal, _alert("c"), at=now).outcomes[0]
        assert again.outcome == "new_incident" and again.incident_id != first.incident_id

    def test_the_sweep_ends_the_groups_of_ended_incidents_only(self, journal: AlertJournal, evidence_root) -> None:
        from types import SimpleNamespace

        from irp.evidence import open_store
        from irp.intake.service import IntakeService
        from irp.models import Incident, IncidentStatus, IncidentType, Severity
        from irp.settings import get_settings

        now = time.time()
        ids = {name: _deliver(journal, _alert(name), at=now - 300).outcomes[0].incident_id for name in ("g", "h")}
        store = open_store(get_settings().evidence_url)
        for name, status in (("g", IncidentStatus.closed), ("h", IncidentStatus.containing)):
            store.save_incident(Incident(id=ids[name], type=IncidentType.malware, severity=Severity.major, title=name,
                                         detected_at=datetime.now(UTC), status=status))
        service = SimpleNamespace(journal=journal, settings=get_settings())
        assert IntakeService.close_ended_groups(service, now - 60) == 1
        assert _deliver(journal, _alert("g"), at=now).outcomes[0].outcome == "new_incident"
        assert _deliver(journal, _alert("h"), at=now).outcomes[0].incident_id == ids["h"]  # still being handled

    def test_same_alert_twice_in_one_request(self, journal: AlertJournal) -> None:
        outcomes = _deliver(journal, _alert("d"), _alert("d")).outcomes
        assert [o.outcome for o in outcomes] == ["new_incident", "joined"]

    def test_unrouted_recorded_and_counted(self, journal: AlertJournal) -> None:
        alert = Alert(source=AlertSource.generic, fingerprint="u", title="nobody's", labels={"x": "1"})
        for _ in range(3):
            assert _deliver(journal, (alert, None, "firing")).outcomes[0].outcome == "unrouted"
        [row] = journal.unrouted()
        assert (row["fingerprint"], row["count"], row["labels"]) == ("u", 3, {"x": "1"})
        assert journal.due(time.time() + 1) == []


class TestDeliveryKeys:
    def test_replayed_key_rejected(self, journal: AlertJournal) -> None:
        first = _deliver(journal, _alert("e"), key="webhook-id:1")
        again = _deliver(journal, _alert("e"), key="webhook-id:1")
        assert not first.replay and again.replay and again.outcomes == []
        assert len(journal.due(time.time() + 1)) == 1

    def test_resent_key_gets_the_first_answer(self, journal: AlertJournal) -> None:
        first = _deliver(journal, _alert("f"), key="sns:1", repeat="same")
        again = _deliver(journal, _alert("f"), key="sns:1", repeat="same")
        assert again.repeat_delivery and again.delivery_id == first.delivery_id
        assert again.outcomes[0].incident_id == first.outcomes[0].incident_id
        assert len(journal.due(time.time() + 1)) == 1


def test_state_survives_reopen(open_journal: Callable[..., AlertJournal]) -> None:
    journal = open_journal()
    opened = _deliver(journal, _alert("g")).outcomes[0]
    run = journal.due(time.time() + 1)[0]
    journal.run_created(run, "flow-run-1").result()
    journal.close()
    reopened = open_journal()
    again = _deliver(reopened, _alert("g")).outcomes[0]
    assert (again.outcome, again.incident_id, again.flow_run_id) == ("joined", opened.incident_id, "flow-run-1")
    assert reopened.delivery(again_id := _deliver(reopened, _alert("g")).delivery_id).delivery_id == again_id


def test_wal_and_full_sync(tmp_path: Path) -> None:
    journal = SQLiteJournal(tmp_path / "j.sqlite3", dedup_window=60)
    try:
        conn = journal._writer
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        journal.close()


def _storm(journals: list[AlertJournal], threads: int = 16, per_thread: int = 250) -> list[BaseException]:
    """threads × per_thread deliveries of 20 fingerprints, thread n sending to journals[n % len]."""
    errors: list[BaseException] = []

    def sender(n: int) -> None:
        try:
            for i in range(per_thread):
                _deliver(journals[n % len(journals)], _alert(f"fp{(n * per_thread + i) % 20}"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=sender, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return errors


def _runs_and_events(journal: AlertJournal) -> tuple[Counter, set[str]]:
    items = journal.due(time.time() + 3600, limit=100_000)
    runs = {i.payload["parameters"]["alert"]["fingerprint"] for i in items if i.kind == "run"}
    return Counter(i.kind for i in items), runs


def test_concurrent_storm_one_incident_per_fingerprint(journal: AlertJournal) -> None:
    """16 threads × 250 deliveries of 20 fingerprints: exactly 20 runs, every other alert one event."""
    assert not _storm([journal])
    kinds, runs = _runs_and_events(journal)
    assert kinds == {"run": 20, "event": 4000 - 20}
    assert runs == {f"fp{i}" for i in range(20)}


def test_sqlite_journal_has_one_owner(tmp_path: Path) -> None:
    journal = SQLiteJournal(tmp_path / "j.sqlite3", dedup_window=60)
    try:
        with pytest.raises(JournalError, match="in use by another intake process.*postgresql://"):
            SQLiteJournal(tmp_path / "j.sqlite3", dedup_window=60)
    finally:
        journal.close()
    SQLiteJournal(tmp_path / "j.sqlite3", dedup_window=60).close()  # free again once closed


class TestSharedDatabase:
    """Several intakes on one PostgreSQL journal."""

    @pytest.fixture
    def url(self, postgres_databases) -> str:
        return postgres_databases()

    def test_two_intakes_open_one_incident_per_fingerprint(self, url: str) -> None:
        first, second = PostgresJournal(url, 60), PostgresJournal(url, 60)
        try:
            assert not _storm([first, second])
            kinds, runs = _runs_and_events(first)
            assert kinds == {"run": 20, "event": 4000 - 20}
            assert runs == {f"fp{i}" for i in range(20)}
        finally:
            first.close()
            second.close()

    def test_a_leased_item_is_left_alone_until_its_lease_expires(self, url: str) -> None:
        first, second = PostgresJournal(url, 60, lease_seconds=0.5), PostgresJournal(url, 60, lease_seconds=0.5)
        try:
            _deliver(first, _alert("h"))
            [taken] = first.lease(time.time())
            assert second.lease(time.time()) == []
            time.sleep(0.6)  # the first intake died holding it: the second takes it over
            assert [i.id for i in second.lease(time.time())] == [taken.id]
            second.release([taken]).result()
            assert [i.id for i in first.lease(time.time())] == [taken.id]
        finally:
            first.close()
            second.close()

    def test_items_claimed_by_another_intake_are_not_recorded_twice(self, url: str) -> None:
        first, second = PostgresJournal(url, 60), PostgresJournal(url, 60)
        try:
            _deliver(first, _alert("i"))
            repeats = [_deliver(first, _alert("i")) for _ in range(3)]
            items = [i for i in first.due(time.time() + 1) if i.kind == "event"]
            incident = repeats[0].outcomes[0].incident_id
            [mine] = first.claim_events([(incident, items, "{}")]).result()
            [theirs] = second.claim_events([(incident, items[1:], "{}")]).result()
            assert mine is not None and theirs is None
            assert {i.batch_id for i in first.due(time.time() + 1) if i.kind == "event"} == {mine}
        finally:
            first.close()
            second.close()

    def test_password_is_not_shown(self, url: str) -> None:
        journal = PostgresJournal(url.replace("://", "+psycopg://", 1), 60)
        try:
            assert "irp-ci" not in journal.location and "***" in journal.location
        finally:
            journal.close()


def test_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(JournalError, match=r"postgresql://irp:\*\*\*@127.0.0.1:9/irp: cannot open the journal"):
        PostgresJournal("postgresql://irp:secret@127.0.0.1:9/irp", 60)


def test_one_failing_operation_does_not_sink_its_commit_group(journal: AlertJournal) -> None:
    """Deliveries committed together: the one that fails (a duplicate id) fails alone."""
    gate = threading.Event()
    held = journal._submit(lambda conn: gate.wait(10))  # holds the writer while the group queues up
    deliveries = [AlertDelivery("alertmanager", b"{}", [_alert(f"grp{i}")]) for i in range(6)]
    deliveries[4].id = deliveries[3].id
    futures = [journal.accept(d) for d in deliveries]
    gate.set()
    held.result(timeout=10)
    assert isinstance(futures[4].exception(timeout=10), journal.errors)
    outcomes = [f.result(timeout=10).outcomes[0] for i, f in enumerate(futures) if i != 4]
    assert [o.outcome for o in outcomes] == ["new_incident"] * 5
    runs = {i.payload["parameters"]["alert"]["fingerprint"] for i in journal.due(time.time() + 1) if i.kind == "run"}
    assert runs == {"grp0", "grp1", "grp2", "grp3", "grp5"}


def test_a_forked_worker_draws_other_delivery_ids() -> None:
    """Servers that fork workers (gunicorn --preload) must not give two requests the same id."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then leave without running pytest's teardown
        os.write(write, ",".join(new_delivery_id() for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = set(os.read(read, 4096).decode().split(","))
    os.close(read)
    parent = {new_delivery_id() for _ in range(5)}
    assert len(child) == 5 and not child & parent


def test_delivery_ids_are_unique_version_7_uuids_in_time_order() -> None:
    """Time-ordered ids keep the journal's id index growing at one end (random ids rewrite random pages)."""
    earlier = [new_delivery_id() for _ in range(5000)]
    time.sleep(0.002)
    later = new_delivery_id()
    assert len(set(earlier)) == 5000
    assert all(uuid.UUID(i).version == 7 and uuid.UUID(i).variant == uuid.RFC_4122 for i in (*earlier, later))
    assert later > max(earlier)


class TestUsedApprovalLinks:
    def test_a_link_is_used_once_even_by_two_replicas_and_can_be_given_back(self, open_journal) -> None:
        first = open_journal()
        second = first if isinstance(first, SQLiteJournal) else open_journal()  # SQLite: one intake per file
        assert not first.link_used("jti-1")
        assert first.use_link("jti-1", "INC-1").result(timeout=10) is True
        assert second.use_link("jti-1", "INC-1").result(timeout=10) is False
        assert second.link_used("jti-1")
        second.forget_link("jti-1").result(timeout=10)
        assert first.use_link("jti-1", "INC-1").result(timeout=10) is True
