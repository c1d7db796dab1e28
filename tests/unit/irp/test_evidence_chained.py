"""Events and records against the chain (irp/evidence/chained.py): each change is named; legacy incidents read as before."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from irp.evidence import LocalEvidenceStore, open_store
from irp.evidence.chained import vouched
from irp.evidence.custody import GENESIS, entry_hash
from irp.models import TimelineEntry

INC = "INC-20261207-EVENTS"


@pytest.fixture
def store(evidence_root: Path) -> LocalEvidenceStore:
    opened = open_store(f"file://{evidence_root}")
    for n in range(4):
        opened.append_event(INC, TimelineEntry(kind="note", message=f"note {n}"))
    return opened


def _lines(store: LocalEvidenceStore) -> list[bytes]:
    return (store.root / INC / "events.jsonl").read_bytes().splitlines()


def _write(store: LocalEvidenceStore, lines: list[bytes]) -> None:
    (store.root / INC / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")


def _found(store: LocalEvidenceStore) -> list[tuple[str, str, str]]:
    return [(p.kind, p.subject, p.detail.split(":")[0]) for p in store.check(INC).problems]


def test_each_event_has_its_entry_and_an_intact_log_checks_clean(store: LocalEvidenceStore) -> None:
    assert [e.event for e in store.custody(INC)] == ["event_appended"] * 4
    assert store.check(INC).problems == []


@pytest.mark.parametrize(("change", "expected"), [
    (lambda ls: [ls[0], ls[2], ls[3]], [("missing", "events.jsonl line 2", "removed")]),
    (lambda ls: [ls[0], ls[1], ls[3], ls[2]], [("altered", "events.jsonl line 3", "reordered")]),
    (lambda ls: [*ls, ls[1]], [("unexpected", "events.jsonl line 5", "duplicated")]),
    (lambda ls: [ls[0], ls[1].replace(b"note 1", b"note X"), ls[2], ls[3]],
     [("altered", "events.jsonl line 2", "edited")]),
    (lambda ls: [ls[0], ls[1], b'{"kind": "note", "message": "forged"}', ls[2], ls[3]],
     [("unexpected", "events.jsonl line 3", "added out of band")]),
])
def test_each_change_to_the_event_lines_is_named(store: LocalEvidenceStore, change, expected) -> None:
    _write(store, change(_lines(store)))
    assert _found(store) == expected


def test_unchained_events_are_left_out_when_read(store: LocalEvidenceStore, caplog) -> None:
    forged = TimelineEntry(kind="notification", message="client notified").model_dump_json().encode()
    _write(store, [*_lines(store), forged])
    with caplog.at_level(logging.WARNING):
        events = store._events_for_verify(INC)
        kept = vouched(INC, events, [json.loads(line) for line in (store.root / INC / "custody.jsonl").read_bytes()
                                     .splitlines()])
    assert [json.loads(r.text)["message"] for r in kept] == [f"note {n}" for n in range(4)]
    assert "events.jsonl line 5 is not in the custody chain" in caplog.text


def test_an_incident_whose_chain_began_before_v2_reads_every_event(evidence_root: Path) -> None:
    store = open_store(f"file://{evidence_root}")
    folder = evidence_root / INC
    folder.mkdir(parents=True)
    legacy = {"seq": 1, "at": "2026-11-01T00:00:00+00:00", "event": "verified", "incident_id": INC, "actor": "a",
              "object": None, "sha256": None, "details": {}, "prev": GENESIS}
    legacy["hash"] = entry_hash(legacy)
    (folder / "custody.jsonl").write_text(json.dumps(legacy) + "\n")
    old = TimelineEntry(kind="note", message="written by an older irp").model_dump_json()
    (folder / "events.jsonl").write_text(old + "\n")
    store.append_event(INC, TimelineEntry(kind="note", message="written now"))
    assert store.check(INC).problems == []  # the older line has no entry, as expected for that incident
    lines = _lines(store)
    _write(store, [lines[0], lines[1].replace(b"written now", b"forged")])
    assert _found(store) == [("altered", "events.jsonl line 2", "edited")]
