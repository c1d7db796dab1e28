"""The local evidence store: write-once items, manifest, custody log, streaming, exports."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from irp.errors import ConfigurationError, EvidenceError
from irp.evidence import CollectedBy, LocalEvidenceStore, open_store
from irp.models import Incident, IncidentType, Severity, utcnow

INC = "INC-20261129-AAAAAA"


@pytest.fixture
def store(evidence_root: Path) -> LocalEvidenceStore:
    opened = open_store(f"file://{evidence_root}")
    assert isinstance(opened, LocalEvidenceStore)
    return opened


def _incident(severity: Severity) -> Incident:
    return Incident(id=INC, type=IncidentType.data_leak, severity=severity, title="t", detected_at=utcnow())


class _Trickle(io.RawIOBase):
    """A non-seekable stream that hands out at most 1000 bytes per read."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = 1000 if n is None or n < 0 else min(n, 1000)
        chunk, self._data = bytes(self._data[:n]), self._data[n:]
        return chunk


class TestPut:
    def test_item_is_listed_with_its_sha256_and_who_collected_it(self, store: LocalEvidenceStore) -> None:
        by = CollectedBy(stage="analyse", step="pull_logs", action="evidence.collect", flow_run_id="run-1")
        item = store.put(INC, "logs/auth.log", b"line\n", content_type="text/plain", collected_by=by,
                         source_system="siem", source_time="2026-11-20 09:14:03 CET")
        assert item.sha256 == hashlib.sha256(b"line\n").hexdigest() and item.size == 5
        [listed] = store.manifest(INC)
        assert listed == item
        assert listed.source_time == "2026-11-20 09:14:03 CET"  # kept exactly as given
        assert listed.collected_by == by and listed.collected_at.utcoffset() == timedelta(0)

    def test_same_content_is_a_no_op_and_other_content_gets_a_numbered_name(self, store: LocalEvidenceStore) -> None:
        first = store.put(INC, "a.json", b"1")
        assert store.put(INC, "a.json", b"1") == first
        assert store.put(INC, "a.json", b"2").name == "a-2.json"
        assert store.put(INC, "noext", b"3").name == "noext"
        assert store.put(INC, "noext", b"4").name == "noext-2"
        assert [i.name for i in store.manifest(INC)] == ["a.json", "a-2.json", "noext", "noext-2"]

    def test_objects_are_read_only(self, store: LocalEvidenceStore, evidence_root: Path) -> None:
        store.put(INC, "x.txt", b"x")
        mode = (evidence_root / INC / "objects" / "x.txt").stat().st_mode
        assert not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)

    def test_a_large_non_seekable_stream_is_archived_whole(self, store: LocalEvidenceStore) -> None:
        data = os.urandom(3 * 1024 * 1024 + 17)
        item = store.put(INC, "bundle.bin", _Trickle(data))
        assert (item.size, item.sha256) == (len(data), hashlib.sha256(data).hexdigest())
        with store.open(INC, "bundle.bin") as handle:
            assert handle.read() == data

    @pytest.mark.parametrize("name", ["../x", "/abs", "a/../b", "", "a//b", ".hidden"])
    def test_unsafe_names_are_refused(self, store: LocalEvidenceStore, name: str) -> None:
        with pytest.raises(EvidenceError, match="invalid evidence name"):
            store.put(INC, name, b"x")

    def test_unsafe_incident_ids_are_refused(self, store: LocalEvidenceStore) -> None:
        with pytest.raises(EvidenceError, match="invalid incident id"):
            store.put("../etc", "x", b"x")


class TestRetention:
    def test_retention_follows_the_incident_severity(self, store: LocalEvidenceStore) -> None:
        store.save_incident(_incident(Severity.minor))
        item = store.put(INC, "a", b"a")
        assert item.retention_until is not None
        assert abs((item.retention_until - utcnow()) - timedelta(days=365)) < timedelta(minutes=1)

    def test_unknown_severity_gets_the_longest_retention(self, store: LocalEvidenceStore) -> None:
        item = store.put(INC, "a", b"a")
        assert abs((item.retention_until - utcnow()) - timedelta(days=2190)) < timedelta(minutes=1)

    def test_retention_days_come_from_settings(self, evidence_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from irp.settings import get_settings

        monkeypatch.setenv("IRP_EVIDENCE_RETENTION_DAYS", '{"critical": 30, "major": 20, "minor": 10}')
        get_settings.cache_clear()
        store = open_store(f"file://{evidence_root}")
        store.save_incident(_incident(Severity.major))
        item = store.put(INC, "a", b"a")
        assert abs((item.retention_until - utcnow()) - timedelta(days=20)) < timedelta(minutes=1)


class TestCustody:
    def test_each_put_records_collected_then_archived(self, store: LocalEvidenceStore) -> None:
        by = CollectedBy(stage="contain", step="snapshot", action="aws.snapshot", flow_run_id="run-9")
        item = store.put(INC, "snap.json", b"{}", collected_by=by)
        store.put(INC, "snap.json", b"{}")  # a no-op records nothing
        entries = store.custody(INC)
        assert [(e.seq, e.event, e.object, e.sha256) for e in entries] == [
            (1, "collected", "snap.json", item.sha256),
            (2, "archived", "snap.json", item.sha256),
        ]
        assert "run-9" in entries[0].actor and "contain.snapshot" in entries[0].actor
        assert entries[1].prev == entries[0].hash

    def test_reading_an_item_is_recorded(self, store: LocalEvidenceStore) -> None:
        store.put(INC, "a.txt", b"a")
        with store.open(INC, "a.txt", actor="alice@soc") as handle:
            assert handle.read() == b"a"
        last = store.custody(INC)[-1]
        assert (last.event, last.object, last.actor) == ("accessed", "a.txt", "alice@soc")

    def test_opening_an_unknown_item_fails_clearly(self, store: LocalEvidenceStore) -> None:
        store.put(INC, "a.txt", b"a")
        with pytest.raises(EvidenceError, match="no evidence 'b.txt'"), store.open(INC, "b.txt"):
            pass


class TestRunLock:
    def test_a_second_run_of_the_incident_waits_for_the_first_and_is_told(self, store: LocalEvidenceStore) -> None:
        order, waited = [], threading.Event()
        with store.run_lock(INC, on_wait=lambda: order.append("unexpected wait")):
            second = threading.Thread(target=lambda: _hold(store, order, waited))
            second.start()
            assert waited.wait(10)  # told at once that another run holds it, and blocked
            order.append("first ends")
        second.join(10)
        assert order == ["second waits", "first ends", "second runs"]

    def test_another_process_waits_too_and_a_dead_holder_frees_it(self, store: LocalEvidenceStore) -> None:
        script = ("import fcntl, sys, time; h = open(sys.argv[1], 'a'); fcntl.flock(h, fcntl.LOCK_EX); "
                  "print('held', flush=True); time.sleep(60)")
        store.put(INC, "a.txt", b"x")  # the incident's folder
        holder = subprocess.Popen([sys.executable, "-c", script, str(store.root / INC / ".run.lock")],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "held"
            told = []
            acquired = threading.Event()
            waiter = threading.Thread(target=lambda: _enter(store, told, acquired))
            waiter.start()
            assert not acquired.wait(0.5) and told == ["waits"]
            holder.kill()  # the kernel releases a dead process's lock
            assert acquired.wait(10)
            waiter.join(10)
        finally:
            holder.kill()
            holder.wait(10)

    def test_the_lock_file_is_not_a_stray_for_verify(self, store: LocalEvidenceStore) -> None:
        store.put(INC, "a.txt", b"x")
        with store.run_lock(INC, on_wait=lambda: None):
            pass
        assert (store.root / INC / ".run.lock").exists()
        assert store._strays(INC) == []


def _hold(store: LocalEvidenceStore, order: list[str], waited: threading.Event) -> None:
    def told() -> None:
        order.append("second waits")
        waited.set()

    with store.run_lock(INC, on_wait=told):
        order.append("second runs")


def _enter(store: LocalEvidenceStore, told: list[str], acquired: threading.Event) -> None:
    with store.run_lock(INC, on_wait=lambda: told.append("waits")):
        acquired.set()


class TestExportTar:
    def test_tar_holds_objects_manifest_and_custody_and_is_recorded(self, store: LocalEvidenceStore,
                                                                   tmp_path: Path) -> None:
        store.put(INC, "logs/a.log", b"aaa")
        store.put(INC, "b.json", b"{}")
        result = store.export_tar(INC, tmp_path / "out.tar")
        assert result.sha256 == hashlib.sha256((tmp_path / "out.tar").read_bytes()).hexdigest()
        with tarfile.open(tmp_path / "out.tar") as tar:
            assert sorted(tar.getnames()) == sorted([f"{INC}/manifest.jsonl", f"{INC}/custody.jsonl",
                                                     f"{INC}/anchors/checkpoints.jsonl",
                                                     f"{INC}/objects/logs/a.log", f"{INC}/objects/b.json"])
            assert tar.extractfile(f"{INC}/objects/logs/a.log").read() == b"aaa"
            manifest = [json.loads(line) for line in tar.extractfile(f"{INC}/manifest.jsonl").read().splitlines()]
            custody = tar.extractfile(f"{INC}/custody.jsonl").read().splitlines()
        assert [m["name"] for m in manifest] == ["logs/a.log", "b.json"]
        assert len(custody) == 4
        last = store.custody(INC)[-1]
        assert (last.event, last.sha256, last.details["method"]) == ("exported", result.sha256, "tar")

    def test_an_altered_object_stops_the_export(self, store: LocalEvidenceStore, evidence_root: Path,
                                                tmp_path: Path) -> None:
        store.put(INC, "a.log", b"aaa")
        path = evidence_root / INC / "objects" / "a.log"
        path.chmod(0o640)
        path.write_bytes(b"bbb")
        with pytest.raises(EvidenceError, match="a.log differs from its manifest entry"):
            store.export_tar(INC, tmp_path / "out.tar")
        assert not (tmp_path / "out.tar").exists() and not (tmp_path / "out.tar.part").exists()
        assert all(e.event != "exported" for e in store.custody(INC))

    def test_presigned_urls_need_s3(self, store: LocalEvidenceStore) -> None:
        store.put(INC, "a", b"a")
        with pytest.raises(EvidenceError, match="presigned URLs need an s3:// evidence store"):
            store.export_urls(INC)


class TestOpenStore:
    def test_unknown_scheme_lists_the_valid_ones(self) -> None:
        with pytest.raises(ConfigurationError, match=r"unsupported scheme 'ftp'; valid: file://, s3://"):
            open_store("ftp://x/y")

    @pytest.mark.parametrize("url", ["s3://ab/x", "s3://Bad_Bucket/x", "s3://-x-/y"])
    def test_invalid_bucket_names_are_refused(self, url: str) -> None:
        with pytest.raises(ConfigurationError, match="not a valid S3 bucket name"):
            open_store(url)

    @pytest.mark.parametrize(("variable", "value", "message"), [
        ("IRP_EVIDENCE_RETENTION_MODE", "forever", "valid: GOVERNANCE, COMPLIANCE, off"),
        ("IRP_EVIDENCE_SSE", "rot13", "valid: AES256, aws:kms, off"),
        ("IRP_EVIDENCE_KMS_KEY_ID", "alias/x", "IRP_EVIDENCE_SSE is not aws:kms"),
        ("IRP_EVIDENCE_PART_SIZE_MB", "1", "between 5 and 5120"),
        ("IRP_EVIDENCE_RETENTION_DAYS", '{"urgent": 3}', "use severities"),
    ])
    def test_bad_s3_settings_are_named(self, monkeypatch: pytest.MonkeyPatch, variable: str, value: str,
                                       message: str) -> None:
        from irp.settings import get_settings

        monkeypatch.setenv(variable, value)
        get_settings.cache_clear()
        with pytest.raises(ConfigurationError, match=message):
            open_store("s3://evidence-bucket/irp")

    def test_s3_store_is_shared_per_url_and_makes_no_client_until_used(self, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
        from irp.evidence import close_stores
        from irp.settings import get_settings

        monkeypatch.setenv("IRP_EVIDENCE_SPOOL_DIR", str(tmp_path / "spool"))
        get_settings.cache_clear()
        try:
            first = open_store("s3://evidence-bucket/irp")
            assert open_store("s3://evidence-bucket/irp") is first
            assert open_store("s3://evidence-bucket/other") is not first
            assert first._client is None
            assert first.location(INC) == f"s3://evidence-bucket/irp/{INC}/"
        finally:
            close_stores()
