"""Tampering with a local store is detected: `irp evidence verify` names each altered, missing or
unexpected object and each broken custody entry, and exits 1."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from irp.cli import app
from irp.errors import EvidenceError
from irp.evidence import LocalEvidenceStore, open_store

INC = "INC-20261129-CCCCCC"
runner = CliRunner()


@pytest.fixture
def store(evidence_root: Path) -> LocalEvidenceStore:
    opened = open_store(f"file://{evidence_root}")
    opened.put(INC, "logs/auth.log", b"auth\n")
    opened.put(INC, "alerts/a.json", b'{"a": 1}')
    opened.put(INC, "steps/detect/triage.json", b"{}")
    return opened


def _writable(path: Path) -> Path:
    path.chmod(0o640)
    return path


def _verify() -> tuple[int, list[str]]:
    result = runner.invoke(app, ["evidence", "verify", INC])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout.splitlines()


class TestVerify:
    def test_intact_store_exits_0_and_records_the_check(self, store: LocalEvidenceStore) -> None:
        code, lines = _verify()
        assert code == 0
        last = store.custody(INC)[-1]
        assert lines == [f"{INC}: intact: 3 objects match the manifest, 6 custody entries chain correctly "
                         f"({store.url})", f"chain head: entry 7 {last.hash}"]
        assert (last.event, last.details["intact"]) == ("verified", True)

    def test_each_tampering_is_named(self, store: LocalEvidenceStore, evidence_root: Path) -> None:
        folder = evidence_root / INC
        _writable(folder / "objects" / "logs" / "auth.log").write_bytes(b"nothing to see\n")  # overwrite
        _writable(folder / "objects" / "alerts" / "a.json").unlink()  # delete
        (folder / "objects" / "planted.sh").write_bytes(b"#!/bin/sh\n")  # add
        lines = (folder / "custody.jsonl").read_text().splitlines()
        entry = json.loads(lines[3])
        entry["actor"] = "someone else"  # edit a custody entry
        lines[3] = json.dumps(entry)
        (folder / "custody.jsonl").write_text("\n".join(lines) + "\n")

        code, out = _verify()
        assert code == 1
        assert [line.split(": ", 2)[:2] for line in out] == [
            ["altered", "logs/auth.log"],
            ["missing", "alerts/a.json"],
            ["unexpected", "planted.sh"],
            ["broken", "custody.jsonl line 4"],
        ]
        assert "entry 4 altered" in out[3]
        last = store.custody(INC)[-1]
        assert (last.event, last.details["intact"], len(last.details["problems"])) == ("verified", False, 4)

    def test_a_removed_custody_entry_is_named(self, store: LocalEvidenceStore, evidence_root: Path) -> None:
        path = evidence_root / INC / "custody.jsonl"
        lines = path.read_text().splitlines()
        del lines[1]
        path.write_text("\n".join(lines) + "\n")
        code, out = _verify()
        assert code == 1
        assert out[0].startswith("broken: custody.jsonl line 2: sequence 3 where 2 was expected")
        assert any(line.startswith("broken: custody of logs/auth.log") for line in out)  # its 'archived' is gone

    def test_a_manifest_edit_is_caught_by_the_custody_log(self, store: LocalEvidenceStore, evidence_root: Path) -> None:
        # The attacker replaces an object and fixes its manifest line to match: the custody log disagrees.
        folder = evidence_root / INC
        _writable(folder / "objects" / "logs" / "auth.log").write_bytes(b"forged\n")
        import hashlib

        lines = (folder / "manifest.jsonl").read_text().splitlines()
        item = json.loads(lines[0])
        item["sha256"], item["size"] = hashlib.sha256(b"forged\n").hexdigest(), 7
        lines[0] = json.dumps(item)
        (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
        code, out = _verify()
        assert code == 1
        assert out == [f"altered: logs/auth.log: manifest sha256 {item['sha256']} differs from the custody log's "
                       f"{store.custody(INC)[1].sha256} (entry 2)",
                       "altered: manifest entry of logs/auth.log: metadata edited: size 7 where entry 2 recorded 5"]

    def test_unknown_incident_is_one_clear_error(self, store: LocalEvidenceStore) -> None:
        result = runner.invoke(app, ["evidence", "verify", "INC-19990101-000000"])
        assert isinstance(result.exception, EvidenceError)
        assert str(result.exception) == f"no evidence for incident INC-19990101-000000 in {store.url}"


class TestCommands:
    def test_list_prints_the_manifest(self, store: LocalEvidenceStore) -> None:
        result = runner.invoke(app, ["evidence", "list", INC])
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines()[0] == f"{INC}: 3 items in {store.location(INC)}"
        assert "logs/auth.log" in result.stdout and store.manifest(INC)[0].sha256 in result.stdout
        as_json = runner.invoke(app, ["evidence", "list", INC, "--json"])
        assert [json.loads(line)["name"] for line in as_json.stdout.splitlines()] == [
            "logs/auth.log", "alerts/a.json", "steps/detect/triage.json"]
        assert runner.invoke(app, ["evidence", "list"]).stdout.split() == [INC]

    def test_custody_prints_one_line_per_entry(self, store: LocalEvidenceStore) -> None:
        result = runner.invoke(app, ["evidence", "custody", INC])
        assert result.exit_code == 0
        assert [line.split()[2] for line in result.stdout.splitlines()] == ["collected", "archived"] * 3

    def test_export_tar(self, store: LocalEvidenceStore, tmp_path: Path) -> None:
        result = runner.invoke(app, ["evidence", "export", INC, "--tar", str(tmp_path / "e.tar")])
        assert result.exit_code == 0, result.output
        assert "3 objects, manifest.jsonl, custody.jsonl" in result.stdout
        with tarfile.open(tmp_path / "e.tar") as tar:
            assert f"{INC}/objects/logs/auth.log" in tar.getnames()

    def test_export_without_tar_on_a_local_store_says_what_to_do(self, store: LocalEvidenceStore) -> None:
        result = runner.invoke(app, ["evidence", "export", INC])
        assert isinstance(result.exception, EvidenceError) and "--tar" in str(result.exception)

    def test_flush_on_a_local_store_has_nothing_to_do(self, store: LocalEvidenceStore) -> None:
        result = runner.invoke(app, ["evidence", "flush"])
        assert result.exit_code == 0 and result.stdout.startswith("0 spooled writes uploaded")
