"""The audit log: state changes and operator acts in the incident's hash chain; tampering is named."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from history_fixtures import build_incident, save
from typer.testing import CliRunner

from irp import audit
from irp.cli.audit import audit_app
from irp.errors import EvidenceError
from irp.evidence import LocalEvidenceStore
from irp.evidence.custody import GENESIS, canonical, entry_hash
from irp.models import IncidentStatus, Severity

runner = CliRunner()
T0 = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)


@pytest.fixture
def store(evidence_root: Path) -> LocalEvidenceStore:
    return LocalEvidenceStore(evidence_root)


@pytest.fixture
def incident(store: LocalEvidenceStore):
    incident = save(store, build_incident("INC-20261103-A1", detected=T0))
    audit.record(store, incident.id, "action_closed", actor="Alice", details={"action_id": "A-1"})
    audit.record(store, incident.id, "exported", actor="bob@host", details={"sha256": "0" * 64})
    return incident


def lines(store: LocalEvidenceStore, incident_id: str) -> list[str]:
    return (store.root / incident_id / "custody.jsonl").read_text().splitlines()


def write_lines(store: LocalEvidenceStore, incident_id: str, text: list[str]) -> None:
    (store.root / incident_id / "custody.jsonl").write_text("\n".join(text) + "\n")


def audit_line(store: LocalEvidenceStore, incident_id: str, act: str) -> int:
    """The 1-based line number of the first audit entry of `act`."""
    for n, line in enumerate(lines(store, incident_id), start=1):
        record = json.loads(line)
        if record["event"] == "audit" and record["details"]["act"] == act:
            return n
    raise AssertionError(act)


class TestRecording:
    def test_state_changes_and_acts_are_chained_with_the_custody_entries(self, store, incident) -> None:
        entries = audit.entries(store, incident.id)
        assert [e.details["act"] for e in entries] == ["opened", "updated", "action_closed", "exported"]
        assert entries[0].details["status"] == "detected" and entries[0].actor == "flow run test"
        assert entries[1].details["changes"]["status"] == ["detected", "closed"]
        assert len(entries[1].details["changes"]["stages"]) == 7
        as_stored = type(incident).model_validate_json(incident.model_dump_json())  # audited as a read returns it
        assert entries[1].sha256 == audit.record_digest(as_stored)
        assert entries[2].actor == "Alice"
        # one chain: the evidence entries (alert collected, archived) come first
        assert [e.event for e in store.custody(incident.id)][:2] == ["collected", "archived"]
        assert audit.verify(store).intact

    def test_a_save_that_changes_nothing_is_not_audited_again(self, store) -> None:
        records = audit.AuditedRecord(store, actor="x")
        incident = build_incident("INC-2", detected=T0)
        records.save(incident)
        records.save(incident.model_copy(update={"timeline": []}))  # only the timeline differs
        records.save(incident.model_copy(update={"severity": Severity.minor}))
        assert [e.details["act"] for e in audit.entries(store, "INC-2")] == ["opened", "updated"]
        assert audit.entries(store, "INC-2")[1].details["changes"] == {"severity": ["critical", "minor"]}

    def test_an_unknown_act_is_a_programming_error(self, store) -> None:
        with pytest.raises(ValueError, match="unknown audit act 'delete'; valid: opened"):
            audit.record(store, "INC-2", "delete")

    def test_the_engine_never_fails_over_an_audit_entry(self, store, caplog) -> None:
        class Refusing(LocalEvidenceStore):
            def record_custody(self, *args, **kwargs):
                raise EvidenceError("store unreachable")

        refusing = Refusing(store.root)
        assert audit.record(refusing, "INC-3", "opened", strict=False) is None
        assert "not recorded: store unreachable" in caplog.text
        with pytest.raises(EvidenceError):
            audit.record(refusing, "INC-3", "exported")


class TestTampering:
    def test_an_edited_entry_is_named(self, store, incident) -> None:
        text = lines(store, incident.id)
        n = audit_line(store, incident.id, "action_closed")
        text[n - 1] = text[n - 1].replace('"Alice"', '"Mallory"')
        write_lines(store, incident.id, text)
        result = audit.verify_incident(store, incident.id)
        assert result.problems[0].subject == f"custody.jsonl line {n}"
        assert "altered: its content does not match its hash" in result.problems[0].detail

    def test_a_deleted_entry_is_named_by_the_one_that_follows(self, store, incident) -> None:
        text = lines(store, incident.id)
        n = audit_line(store, incident.id, "updated")
        del text[n - 1]
        write_lines(store, incident.id, text)
        first = audit.verify_incident(store, incident.id).problems[0]
        assert first.subject == f"custody.jsonl line {n}"
        assert f"sequence {n + 1} where {n} was expected" in first.detail

    def test_reordered_entries_are_named(self, store, incident) -> None:
        text = lines(store, incident.id)
        n = audit_line(store, incident.id, "action_closed")
        text[n - 1], text[n] = text[n], text[n - 1]
        write_lines(store, incident.id, text)
        first = audit.verify_incident(store, incident.id).problems[0]
        assert first.subject == f"custody.jsonl line {n}"
        assert "removed, inserted or reordered" in first.detail

    def test_a_record_edited_outside_irp_no_longer_matches_its_last_audited_state(self, store, incident) -> None:
        path = store.root / incident.id / "incident.json"
        record = json.loads(path.read_text())
        record["stages"][3]["ended_at"] = record["stages"][2]["ended_at"]  # make restore look faster
        path.write_text(json.dumps(record))
        result = audit.verify_incident(store, incident.id)
        assert [(p.kind, p.subject) for p in result.problems] == [("altered", "incident.json")]
        n = audit_line(store, incident.id, "updated")
        assert f"differs from the last audited state (custody.jsonl line {n}" in result.problems[0].detail

    def test_a_record_written_before_a_field_existed_still_verifies_after_an_upgrade(self, store) -> None:
        """An older irp wrote records without the fields added since (waiting, review, closure…): not tampering."""
        incident = build_incident("INC-20261103-OLD1", detected=T0)
        older = json.loads(incident.model_dump_json())
        for added in ("waiting", "review", "closure"):
            del older[added]
        for item in older["notifications"]:
            del item["reviewed_by"], item["edits"]
        folder = store.root / incident.id
        folder.mkdir(parents=True)
        (folder / "incident.json").write_text(json.dumps(older))
        digest = hashlib.sha256(canonical({k: v for k, v in older.items() if k != "timeline"}, 1)).hexdigest()
        entry = {"seq": 1, "at": "2026-11-03T08:00:00+00:00", "event": "audit", "incident_id": incident.id,
                 "actor": "flow run old", "object": None, "sha256": digest, "prev": GENESIS,
                 "details": {"act": "updated", "status": "closed", "severity": "critical"}}
        entry["hash"] = entry_hash(entry)  # no "v": an entry of the former form, as the older irp wrote it
        (folder / "custody.jsonl").write_text(json.dumps(entry) + "\n")
        assert audit.verify_incident(store, incident.id).intact
        older["severity"] = "minor"  # and an edit is still one
        (store.root / incident.id / "incident.json").write_text(json.dumps(older))
        assert not audit.verify_incident(store, incident.id).intact

    def test_a_record_with_no_audited_state_is_reported(self, store) -> None:
        store.save_incident(build_incident("INC-9", detected=T0))
        result = audit.verify_incident(store, "INC-9")
        assert [(p.kind, p.subject) for p in result.problems] == [("missing", "incident.json")]


class TestCli:
    def test_verify_passes_on_an_intact_log(self, store, incident) -> None:
        result = runner.invoke(audit_app, ["verify"])
        assert result.exit_code == 0, result.output
        assert f"{incident.id}: intact (4 audit entries" in result.output
        assert "1 incident(s) checked" in result.output and "audit log intact" in result.output

    def test_verify_names_the_first_broken_entry_and_fails(self, store, incident) -> None:
        save(store, build_incident("INC-20261103-B2", detected=T0, status=IncidentStatus.closed))
        text = lines(store, incident.id)
        n = audit_line(store, incident.id, "updated")
        text[n - 1] = text[n - 1].replace('"closed"', '"reviewing"', 1)
        write_lines(store, incident.id, text)
        result = runner.invoke(audit_app, ["verify"])
        assert result.exit_code == 1
        assert f"{incident.id}: BROKEN at custody.jsonl line {n}: entry {n} altered" in result.output
        assert "INC-20261103-B2: intact" in result.output
        assert "2 incident(s) checked" in result.output and "1 broken" in result.output

    def test_verify_of_an_unknown_incident_is_an_error(self, store, incident) -> None:
        result = runner.invoke(audit_app, ["verify", "INC-NOPE"])
        assert result.exit_code == 1
        assert "no incident INC-NOPE in file://" in result.output

    def test_log_prints_the_acts_in_order(self, store, incident) -> None:
        result = runner.invoke(audit_app, ["log", incident.id])
        assert result.exit_code == 0, result.output
        acts = [line.split()[3] for line in result.output.splitlines()]
        assert acts == ["opened", "updated", "action_closed", "exported"]
