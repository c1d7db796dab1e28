"""The custody chain: every removed, inserted, reordered or altered entry is named."""

from __future__ import annotations

import hashlib
import json

import rfc8785

from irp.evidence import EvidenceItem
from irp.evidence.custody import GENESIS, check_chain, cross_check, encode, entry_hash, seal
from irp.evidence.models import RawEntry

INC = "INC-20261129-BBBBBB"


def _chain(n: int) -> list[dict]:
    records, prev = [], GENESIS
    for seq in range(1, n + 1):
        record = seal(INC, seq, prev, "archived", actor="t", object=f"o{seq}", sha256=f"{seq:064x}")
        records.append(record)
        prev = record["hash"]
    return records


def _raws(records: list[dict]) -> list[RawEntry]:
    return [RawEntry(label=f"line {n}", text=encode(r)) for n, r in enumerate(records, start=1)]


def _subjects(records: list[dict]) -> list[str]:
    return [p.subject for p in check_chain(INC, _raws(records))[1]]


class TestSeal:
    def test_hash_covers_every_field_but_itself(self) -> None:
        record = seal(INC, 1, GENESIS, "collected", actor="a", details={"k": [1, 2]})
        assert record["hash"] == entry_hash(record)
        for field, value in [("actor", "b"), ("details", {"k": [1]}), ("at", "2000-01-01T00:00:00+00:00"),
                             ("prev", "1" * 64), ("event", "accessed")]:
            assert entry_hash({**record, field: value}) != record["hash"], field

    def test_new_entries_hash_rfc8785_canonical_json(self) -> None:
        record = seal(INC, 1, GENESIS, "verified", actor="a", details={"n": 1.0, "big": 1e21, "é": "\u2028"})
        assert record["v"] == 2
        # RFC 8785 writes 1.0 as 1 and 1e21 as 1e+21; json.dumps would write 1.0 and 1e+21
        body = {k: v for k, v in record.items() if k != "hash"}
        assert record["hash"] == hashlib.sha256(rfc8785.dumps(body)).hexdigest()
        assert b'"n":1,' in rfc8785.dumps(body)

    def test_entries_written_before_v2_still_verify(self) -> None:
        legacy = {"seq": 1, "at": "2026-11-01T00:00:00+00:00", "event": "verified", "incident_id": INC, "actor": "a",
                  "object": None, "sha256": None, "details": {"n": 1.0}, "prev": GENESIS}
        legacy["hash"] = hashlib.sha256(json.dumps(legacy, sort_keys=True, separators=(",", ":"),
                                                   ensure_ascii=False).encode()).hexdigest()
        nxt = seal(INC, 2, legacy["hash"], "accessed", actor="a")
        assert check_chain(INC, _raws([legacy, nxt]))[1] == []
        assert [p.subject for p in check_chain(INC, _raws([{**legacy, "details": {"n": 2}}, nxt]))[1]] == ["line 1"]

    def test_stored_text_round_trips(self) -> None:
        record = seal(INC, 1, GENESIS, "verified", actor="a", details={"é": "ü", "n": 1.5})
        assert entry_hash(json.loads(encode(record))) == record["hash"]


class TestCheckChain:
    def test_intact_chain_has_no_problem(self) -> None:
        entries, problems = check_chain(INC, _raws(_chain(5)))
        assert problems == [] and [e.seq for e in entries] == [1, 2, 3, 4, 5]

    def test_edited_entry_is_named(self) -> None:
        records = _chain(5)
        records[2] = {**records[2], "actor": "mallory"}
        entries, problems = check_chain(INC, _raws(records))
        assert [p.subject for p in problems] == ["line 3"]
        assert "entry 3 altered" in problems[0].detail
        assert [e.seq for e in entries] == [1, 2, 4, 5]

    def test_edited_entry_with_a_recomputed_hash_breaks_the_next_link(self) -> None:
        records = _chain(5)
        forged = {**records[2], "sha256": "f" * 64}
        forged["hash"] = entry_hash(forged)
        records[2] = forged
        problems = check_chain(INC, _raws(records))[1]
        assert [p.subject for p in problems] == ["line 4"]
        assert "does not chain to the entry before it (line 3)" in problems[0].detail

    def test_removed_entry_is_named(self) -> None:
        records = _chain(5)
        del records[1]
        problems = check_chain(INC, _raws(records))[1]
        assert [p.subject for p in problems] == ["line 2"]
        assert "sequence 3 where 2 was expected" in problems[0].detail

    def test_reordered_entries_are_named(self) -> None:
        records = _chain(5)
        records[1], records[2] = records[2], records[1]
        assert _subjects(records) == ["line 2", "line 3", "line 4"]

    def test_inserted_entry_is_named(self) -> None:
        records = _chain(3)
        records.insert(1, seal(INC, 2, records[0]["hash"], "accessed", actor="mallory"))
        assert _subjects(records)[0] == "line 3"

    def test_garbage_and_missing_entries_are_named(self) -> None:
        raws = _raws(_chain(3))
        raws[1] = RawEntry(label="line 2", text=b"{not json")
        raws.append(RawEntry(label="custody/00000004.json", text=None, note="deleted out of band"))
        problems = check_chain(INC, raws)[1]
        assert [(p.subject, p.detail) for p in problems] == [
            ("line 2", "not a valid custody entry"), ("custody/00000004.json", "deleted out of band")]


class TestCrossCheck:
    def _item(self, name: str, sha: str) -> EvidenceItem:
        return EvidenceItem(name=name, size=1, sha256=sha, content_type="x")

    def test_manifest_and_custody_agree(self) -> None:
        entries, _ = check_chain(INC, _raws(_chain(2)))
        items = [self._item("o1", f"{1:064x}"), self._item("o2", f"{2:064x}")]
        assert cross_check(items, entries) == []

    def test_disagreements_are_named(self) -> None:
        entries, _ = check_chain(INC, _raws(_chain(2)))
        items = [self._item("o1", "e" * 64), self._item("o3", f"{3:064x}")]
        problems = {(p.kind, p.subject) for p in cross_check(items, entries)}
        assert problems == {("altered", "o1"), ("broken", "custody of o3"), ("missing", "o2")}
