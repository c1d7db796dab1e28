"""Chain heads anchored outside the store (local store, anchors.jsonl beside it): an insider who rewrites the store
consistently is caught by `irp evidence verify` / `irp audit verify`; checkpoints are timestamped by a real RFC 3161
TSA on 127.0.0.1; an exported bundle is verified offline after the store is gone."""

from __future__ import annotations

import json
import logging
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rfc3161_client import VerifierBuilder, decode_timestamp_response
from tsa_fixtures import LocalTsa, tsa  # noqa: F401 (a fixture)
from typer.testing import CliRunner

from irp.cli import app
from irp.evidence import LocalEvidenceStore, open_store
from irp.evidence.anchors import FileAnchorLog, checkpoint_quietly, read_checkpoints, start_periodic
from irp.evidence.custody import GENESIS, entry_hash
from irp.evidence.timestamps import load_certificates
from irp.settings import get_settings

INC = "INC-20261207-A1A1A1"
OTHER = "INC-20261207-B2B2B2"
SECRET = b"exfiltrated customer list, 1234 rows\n"
runner = CliRunner()


@pytest.fixture
def timestamping(tsa: LocalTsa) -> LocalTsa:  # noqa: F811 (the imported fixture)
    """The local TSA (tsa_fixtures.py), IRP_TSA_URL and IRP_TSA_CERTIFICATES set."""
    return tsa


@pytest.fixture
def store(evidence_root: Path) -> LocalEvidenceStore:
    opened = open_store(f"file://{evidence_root}")
    opened.put(INC, "logs/export.csv", SECRET)
    opened.put(INC, "alerts/a.json", b'{"a": 1}')
    opened.put(OTHER, "alerts/b.json", b'{"b": 2}')
    with opened.open(INC, "logs/export.csv") as handle:  # an `accessed` entry: the last one, not an `archived`
        handle.read()
    return opened


def _irp(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def _anchor() -> str:
    code, out = _irp("evidence", "anchor")
    assert code == 0, out
    return out


def _rechain(path: Path, edit: Callable[[list[dict[str, Any]]], None]) -> None:
    """Edit custody entries, then recompute every link and hash, as an insider with the code would."""
    path.chmod(0o640)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    edit(records)
    prev = GENESIS
    for seq, record in enumerate(records, 1):
        record["seq"], record["prev"] = seq, prev
        record["hash"] = prev = entry_hash(record)
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


class TestCheckpoints:
    def test_anchor_lists_every_incident_head_beside_the_store(self, store: LocalEvidenceStore,
                                                                evidence_root: Path) -> None:
        out = _anchor()
        assert "checkpoint 1: 2 incidents' chain heads" in out and "no trusted timestamp" in out
        [(_, line)] = FileAnchorLog(evidence_root.parent / "anchors.jsonl").read()
        checkpoint = json.loads(line)
        assert checkpoint["heads"][INC] == {"seq": store.custody(INC)[-1].seq, "hash": store.custody(INC)[-1].hash}
        assert set(checkpoint["heads"]) == {INC, OTHER} and checkpoint["prev"] == GENESIS
        _anchor()
        assert json.loads(FileAnchorLog(evidence_root.parent / "anchors.jsonl").read()[1][1])["prev"] == checkpoint["hash"]

    def test_nothing_changed_writes_no_periodic_checkpoint(self, store: LocalEvidenceStore) -> None:
        assert checkpoint_quietly(store) is not None
        assert checkpoint_quietly(store) is None
        store.put(INC, "more.txt", b"x")
        assert checkpoint_quietly(store).number == 2

    def test_the_periodic_loop_anchors_what_changed(self, store: LocalEvidenceStore, evidence_root: Path) -> None:
        import time

        stop = start_periodic(store, 0.05)
        try:
            deadline = time.monotonic() + 10
            while not (evidence_root.parent / "anchors.jsonl").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            store.put(INC, "late.txt", b"late")
            head = store.custody(INC)[-1].seq

            def anchored() -> int:
                return json.loads(FileAnchorLog(evidence_root.parent / "anchors.jsonl").read()[-1][1])["heads"][INC]["seq"]

            while anchored() != head and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            stop.set()
        assert anchored() == head  # the new head was anchored without anyone asking

    def test_a_failure_to_anchor_is_logged_not_raised(self, store: LocalEvidenceStore, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
        (tmp_path / "blocked").mkdir()
        (tmp_path / "blocked" / "anchors.jsonl").mkdir()  # a folder where the file should be
        monkeypatch.setenv("IRP_EVIDENCE_ANCHOR_URL", f"file://{tmp_path / 'blocked' / 'anchors.jsonl'}")
        get_settings.cache_clear()
        with caplog.at_level(logging.WARNING):
            assert checkpoint_quietly(open_store(get_settings().evidence_url)) is None
        assert "chain heads not anchored" in caplog.text and "anchors.jsonl: Is a directory" in caplog.text


class TestInsiderTampering:
    """Each of these verified as intact before anchors existed."""

    def test_truncated_chain_is_named(self, store: LocalEvidenceStore, evidence_root: Path) -> None:
        _anchor()
        path = evidence_root / INC / "custody.jsonl"
        path.chmod(0o640)
        path.write_text("".join(line + "\n" for line in path.read_text().splitlines()[:-1]))
        code, out = _irp("evidence", "verify", INC)
        assert code == 1
        assert "chain truncated: it ends at entry 4 but entry 5 was anchored in checkpoint 1" in out

    def test_last_entry_edited_with_its_hash_recomputed_is_named(self, store: LocalEvidenceStore,
                                                                  evidence_root: Path) -> None:
        _anchor()
        _rechain(evidence_root / INC / "custody.jsonl", lambda records: records[-1].update(actor="nobody@nowhere"))
        code, out = _irp("evidence", "verify", INC)
        assert code == 1
        assert "chain rewritten: entry 5 has hash" in out and "anchored in checkpoint 1" in out

    def test_consistent_rewrite_of_object_manifest_and_chain_is_named(self, store: LocalEvidenceStore,
                                                                       evidence_root: Path) -> None:
        import hashlib

        _anchor()
        folder = evidence_root / INC
        forged = b"nothing was exported\n"
        target = folder / "objects" / "logs" / "export.csv"
        target.chmod(0o640)
        target.write_bytes(forged)
        digest = hashlib.sha256(forged).hexdigest()
        manifest = folder / "manifest.jsonl"
        manifest.chmod(0o640)
        lines = [json.loads(line) for line in manifest.read_text().splitlines()]
        lines[0].update(sha256=digest, size=len(forged))
        manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))

        def forge(records: list[dict[str, Any]]) -> None:
            for record in records:
                if record["object"] == "logs/export.csv" and record["sha256"]:
                    record["sha256"] = digest

        _rechain(folder / "custody.jsonl", forge)
        code, out = _irp("evidence", "verify", INC)
        assert code == 1
        assert f"custody of {INC}" in out and "chain rewritten" in out

    def test_deleted_incident_folder_is_named_by_audit_and_evidence_verify(self, store: LocalEvidenceStore,
                                                                          evidence_root: Path) -> None:
        _anchor()
        for path in (evidence_root / OTHER).rglob("*"):
            path.chmod(0o750 if path.is_dir() else 0o640)
        shutil.rmtree(evidence_root / OTHER)
        code, out = _irp("audit", "verify")
        assert code == 1
        assert f"{OTHER}: BROKEN at {OTHER}: incident deleted from the store" in out
        code, out = _irp("evidence", "verify", OTHER)
        assert code == 1 and "incident deleted from the store" in out
        assert not (evidence_root / OTHER).exists()  # checking did not recreate it

    def test_a_later_checkpoint_does_not_launder_the_tampering(self, store: LocalEvidenceStore,
                                                                evidence_root: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
        _anchor()
        path = evidence_root / INC / "custody.jsonl"
        path.chmod(0o640)
        path.write_text("".join(line + "\n" for line in path.read_text().splitlines()[:-1]))
        for path in (evidence_root / OTHER).rglob("*"):
            path.chmod(0o750 if path.is_dir() else 0o640)
        shutil.rmtree(evidence_root / OTHER)
        with caplog.at_level(logging.ERROR):
            _anchor()  # by hand, as the periodic loop and the next stage end would
        assert f"{INC}: not re-anchored, its anchored head is kept: chain truncated" in caplog.text
        code, out = _irp("audit", "verify")
        assert code == 1
        assert "chain truncated: it ends at entry 4 but entry 5 was anchored in checkpoint 2" in out
        assert f"{OTHER}: BROKEN at {OTHER}: incident deleted from the store" in out

    def test_an_altered_last_checkpoint_is_not_chained_onto(self, store: LocalEvidenceStore, evidence_root: Path) -> None:
        _anchor()
        path = evidence_root.parent / "anchors.jsonl"
        edited = json.loads(path.read_text())
        edited["heads"][INC]["seq"] = 1
        path.write_text(json.dumps(edited) + "\n")
        result = runner.invoke(app, ["evidence", "anchor"])
        assert result.exit_code == 1 and "anchors.jsonl line 1) is not valid or was altered" in str(result.exception)
        assert len(path.read_text().splitlines()) == 1

    def test_intact_store_against_its_anchor_exits_0(self, store: LocalEvidenceStore) -> None:
        _anchor()
        assert _irp("evidence", "verify", INC)[0] == 0
        assert _irp("audit", "verify")[0] == 0


class TestAnchorFileTampering:
    def test_edited_and_removed_checkpoints_are_named(self, store: LocalEvidenceStore, evidence_root: Path) -> None:
        for _ in range(3):
            _anchor()
        path = evidence_root.parent / "anchors.jsonl"
        lines = path.read_text().splitlines()
        edited = json.loads(lines[0])
        edited["heads"][INC]["seq"] = 1
        path.write_text("\n".join([json.dumps(edited), lines[2]]) + "\n")  # line 1 edited, line 2 removed
        code, out = _irp("audit", "verify")
        assert code == 1
        assert "anchor anchors.jsonl line 1: checkpoint 1 altered: its content does not match its hash" in out
        assert "checkpoint 3 where 2 was expected (a checkpoint was removed)" in out


class TestTimestamps:
    def test_checkpoint_is_timestamped_and_its_token_verifies(self, store: LocalEvidenceStore, timestamping: LocalTsa,
                                                               evidence_root: Path) -> None:
        assert "timestamped by the TSA" in _anchor()
        assert len(timestamping.requests) == 1
        anchor = FileAnchorLog(evidence_root.parent / "anchors.jsonl")
        roots = load_certificates(timestamping.certificates)
        [checkpoint], problems = read_checkpoints(anchor, roots)
        assert problems == []
        response = decode_timestamp_response(checkpoint.token())  # checked again with rfc3161-client directly
        assert VerifierBuilder(roots=roots).build().verify(response, bytes.fromhex(checkpoint.hash))
        assert _irp("audit", "verify")[0] == 0

    def test_a_token_of_another_checkpoint_is_named(self, store: LocalEvidenceStore, timestamping: LocalTsa,
                                                    evidence_root: Path) -> None:
        _anchor()
        _anchor()
        path = evidence_root.parent / "anchors.jsonl"
        first, second = (json.loads(line) for line in path.read_text().splitlines())
        second["timestamp"] = first["timestamp"]
        path.write_text(json.dumps(first) + "\n" + json.dumps(second) + "\n")
        code, out = _irp("audit", "verify")
        assert code == 1 and "checkpoint 2: timestamp token does not verify" in out

    def test_unreachable_tsa_still_writes_the_checkpoint(self, store: LocalEvidenceStore,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
        from service_fixtures import free_port

        monkeypatch.setenv("IRP_TSA_URL", f"http://127.0.0.1:{free_port()}/tsa")
        get_settings.cache_clear()
        assert "no trusted timestamp" in _anchor()
        opened = open_store(get_settings().evidence_url)
        assert checkpoint_quietly(opened).timestamp is None  # same heads, still no token: tried again

    def test_the_untimestamped_checkpoint_is_retried_once_the_tsa_answers(self, store: LocalEvidenceStore,
                                                                         timestamping: LocalTsa) -> None:
        monkeypatch = pytest.MonkeyPatch()
        monkeypatch.setenv("IRP_TSA_URL", "http://127.0.0.1:9/unreachable")
        get_settings.cache_clear()
        assert checkpoint_quietly(open_store(get_settings().evidence_url)).timestamp is None
        monkeypatch.undo()
        get_settings.cache_clear()
        retried = checkpoint_quietly(open_store(get_settings().evidence_url))
        assert retried is not None and retried.timestamp and retried.number == 2
        assert checkpoint_quietly(open_store(get_settings().evidence_url)) is None  # now nothing to do


class TestBundle:
    def _export(self, tmp_path: Path) -> Path:
        bundle = tmp_path / "handover" / "bundle.tar"
        bundle.parent.mkdir()
        code, out = _irp("evidence", "export", INC, "--tar", str(bundle))
        assert code == 0, out
        return bundle

    def test_bundle_verifies_offline_after_the_store_is_deleted(self, store: LocalEvidenceStore, timestamping: LocalTsa,
                                                               evidence_root: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
        import hashlib

        bundle = self._export(tmp_path)
        for path in evidence_root.rglob("*"):
            path.chmod(0o750 if path.is_dir() else 0o640)
        shutil.rmtree(evidence_root)
        (evidence_root.parent / "anchors.jsonl").unlink()
        shutil.rmtree(timestamping.certificates.parent)  # the roots travel in the bundle
        monkeypatch.setenv("IRP_EVIDENCE_URL", "s3://no-such-bucket-anywhere")  # no store to fall back on
        monkeypatch.delenv("IRP_TSA_URL")
        monkeypatch.delenv("IRP_TSA_CERTIFICATES")
        get_settings.cache_clear()
        code, out = _irp("evidence", "verify", "--bundle", str(bundle))
        assert code == 0, out
        [line] = [line for line in out.splitlines() if "logs/export.csv" in line]
        assert f"sha256 {hashlib.sha256(SECRET).hexdigest()}" in line and "collected 20" in line
        assert "existed by 20" in line and "no trusted time" not in line
        assert "1 with a verified timestamp (TSA certificates: the bundle's anchors/tsa-certificates.pem)" in out

    def test_bundle_holds_each_head_of_the_incident_once(self, store: LocalEvidenceStore, tmp_path: Path) -> None:
        _anchor()
        store.put(OTHER, "more.json", b"{}")  # other incidents move on: INC's head stays
        _anchor()
        store.put(INC, "late.txt", b"late")
        with tarfile.open(self._export(tmp_path)) as tar:
            lines = tar.extractfile(f"{INC}/anchors/checkpoints.jsonl").read().splitlines()
        heads = [json.loads(line)["heads"][INC]["seq"] for line in lines]
        assert heads == [5, 7]  # checkpoint 1, then the one the export wrote

    def test_without_a_tsa_objects_have_no_trusted_time(self, store: LocalEvidenceStore, tmp_path: Path) -> None:
        code, out = _irp("evidence", "verify", "--bundle", str(self._export(tmp_path)))
        assert code == 0, out
        assert "no trusted time" in out and "1 checkpoints, 0 with a verified timestamp" in out

    def test_one_flipped_byte_names_the_object(self, store: LocalEvidenceStore, tmp_path: Path) -> None:
        bundle = self._export(tmp_path)
        data = bytearray(bundle.read_bytes())
        data[data.index(SECRET) + 3] ^= 0x01
        bundle.write_bytes(bytes(data))
        code, out = _irp("evidence", "verify", "--bundle", str(bundle))
        assert code == 1
        assert "logs/export.csv: content differs from the manifest" in out
        assert "alerts/a.json: content differs" not in out

    @staticmethod
    def _rewrite(bundle: Path, target: Path, edit: Callable[[str, bytes], bytes], extra: dict[str, bytes]) -> Path:
        """A copy of the bundle with each member's bytes passed through `edit`, and `extra` members added."""
        import io

        with tarfile.open(bundle) as source, tarfile.open(target, "w") as out:
            for member in source:
                data = edit(member.name, source.extractfile(member).read())
                member.size = len(data)
                out.addfile(member, io.BytesIO(data))
            for name, data in extra.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))
        return target

    def test_a_custody_log_shorter_than_anchored_is_named(self, store: LocalEvidenceStore, tmp_path: Path) -> None:
        def cut(name: str, data: bytes) -> bytes:
            return b"".join(line + b"\n" for line in data.splitlines()[:-1]) if name.endswith("custody.jsonl") else data

        edited = self._rewrite(self._export(tmp_path), tmp_path / "edited.tar", cut, {})
        code, out = _irp("evidence", "verify", "--bundle", str(edited))
        assert code == 1 and "chain truncated" in out

    def test_a_planted_file_is_named(self, store: LocalEvidenceStore, tmp_path: Path) -> None:
        planted = {f"{INC}/objects/planted.sh": b"#!/bin/sh\n", f"{INC}/README.txt": b"trust me"}
        edited = self._rewrite(self._export(tmp_path), tmp_path / "edited.tar", lambda name, data: data, planted)
        code, out = _irp("evidence", "verify", "--bundle", str(edited))
        assert code == 1
        assert "unexpected: objects/planted.sh: in the bundle, not in the manifest" in out
        assert "unexpected: README.txt: in the bundle, not in the manifest" in out

    @pytest.mark.parametrize("content", [None, b"not a tar at all"])
    def test_missing_or_corrupt_file_is_a_clear_message(self, tmp_path: Path, content: bytes | None) -> None:
        path = tmp_path / "bundle.tar"
        if content is not None:
            path.write_bytes(content)
        result = runner.invoke(app, ["evidence", "verify", "--bundle", str(path)])
        assert result.exit_code == 1
        message = str(result.exception)
        assert ("no bundle at" in message) if content is None else ("is not a readable tar" in message)


def test_a_stage_end_reads_only_the_last_checkpoint(tmp_path: Path) -> None:
    """The log grows with every stage end of every incident: the next checkpoint reads its tail, not all of it."""
    log = FileAnchorLog(tmp_path / "anchors.jsonl")
    assert log.last() is None
    lines = [json.dumps({"n": n, "heads": "x" * (70_000 * (n % 2))}).encode() for n in range(5)]  # long and short
    (tmp_path / "anchors.jsonl").write_bytes(b"\n".join(lines) + b"\n\n")
    assert log.last()[1] == lines[-1] == log.read()[-1][1]
    (tmp_path / "anchors.jsonl").write_bytes(b"\n".join(lines[:4]) + b"\n")  # a last line longer than a block
    assert log.last()[1] == lines[3]
