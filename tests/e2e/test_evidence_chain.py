"""Everything a decision or a report is computed from is in the custody chain, on both backends.

Each test is an insider's tampering with write access to the store (the local folder, or the bucket
on moto's server over HTTP, removing the versions S3 kept as an insider allowed to bypass GOVERNANCE
would): `irp evidence verify` and `irp audit verify` name it; a forged event is not read.
"""

# ruff: noqa: F811  (pytest fixtures imported from service_fixtures are parameters here)
from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from service_fixtures import REGION, aws, boto, moto_server  # noqa: F401  (fixtures)
from typer.testing import CliRunner

from irp import audit
from irp.cli import app
from irp.evidence import EvidenceStore, close_stores, open_store
from irp.evidence.custody import entry_hash
from irp.models import (
    Incident,
    IncidentStatus,
    IncidentType,
    NotificationRecord,
    Obligation,
    Severity,
    TimelineEntry,
    utcnow,
)
from irp.settings import get_settings

INC = "INC-20261207-CHAIN1"
runner = CliRunner()


@dataclass
class Backend:
    """A store under test, and an insider's write access to it (paths relative to the incident)."""

    kind: str
    store: EvidenceStore
    root: Path | None = None
    client: Any = None
    bucket: str = ""

    def _key(self, rel: str) -> str:
        return f"irp/{INC}/{rel}"

    def read(self, rel: str) -> bytes:
        if self.root:
            return (self.root / INC / rel).read_bytes()
        return self.client.get_object(Bucket=self.bucket, Key=self._key(rel))["Body"].read()

    def forge(self, rel: str, data: bytes) -> None:
        """Write `data` at `rel`, leaving no trace of what was there (no older S3 version)."""
        if self.root:
            path = self.root / INC / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                path.chmod(0o640)
            path.write_bytes(data)
            return
        self.client.put_object(Bucket=self.bucket, Key=self._key(rel), Body=data)
        versions = self.client.list_object_versions(Bucket=self.bucket, Prefix=self._key(rel))["Versions"]
        for version in versions:
            if version["Key"] == self._key(rel) and not version["IsLatest"]:
                self.client.delete_object(Bucket=self.bucket, Key=self._key(rel), VersionId=version["VersionId"],
                                          BypassGovernanceRetention=True)

    def remove(self, rel: str) -> None:
        if self.root:
            (self.root / INC / rel).unlink()
            return
        for version in self.client.list_object_versions(Bucket=self.bucket, Prefix=self._key(rel))["Versions"]:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(rel), VersionId=version["VersionId"],
                                      BypassGovernanceRetention=True)

    def event_names(self) -> list[str]:
        """Where each event is: `events.jsonl:N` locally, `events/<key>.json` on S3."""
        if self.root:
            lines = (self.root / INC / "events.jsonl").read_text().splitlines()
            return [f"events.jsonl:{n}" for n in range(1, len(lines) + 1)]
        listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._key("events/"))["Contents"]
        return sorted(obj["Key"][len(f"irp/{INC}/"):] for obj in listed)

    def custody_names(self) -> list[str]:
        if self.root:
            lines = (self.root / INC / "custody.jsonl").read_text().splitlines()
            return [f"custody.jsonl:{n}" for n in range(1, len(lines) + 1)]
        listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._key("custody/"))["Contents"]
        return sorted(obj["Key"][len(f"irp/{INC}/"):] for obj in listed)

    def read_entry(self, name: str) -> bytes:
        if ":" in name:
            file, n = name.split(":")
            return self.read(file).splitlines()[int(n) - 1]
        return self.read(name)

    def write_entry(self, name: str, data: bytes) -> None:
        if ":" in name:
            file, n = name.split(":")
            lines = self.read(file).splitlines()
            lines[int(n) - 1] = data
            self.forge(file, b"\n".join(lines) + b"\n")
        else:
            self.forge(name, data)

    def drop_entry(self, name: str) -> None:
        if ":" in name:
            file, n = name.split(":")
            lines = self.read(file).splitlines()
            del lines[int(n) - 1]
            self.forge(file, b"\n".join(lines) + b"\n")
        else:
            self.remove(name)

    def label(self, name: str) -> str:
        """How verify names an entry or an event."""
        file, _, n = name.partition(":")
        return f"{file} line {n}" if n else name


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    if request.param == "local":
        root = tmp_path / "evidence"
        monkeypatch.setenv("IRP_EVIDENCE_URL", f"file://{root}")
        get_settings.cache_clear()
        yield Backend("local", open_store(f"file://{root}"), root=root)
        get_settings.cache_clear()
        return
    endpoint = request.getfixturevalue("aws")
    client = boto("s3", endpoint)
    bucket = f"evidence-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True,
                         CreateBucketConfiguration={"LocationConstraint": REGION})
    monkeypatch.setenv("IRP_EVIDENCE_URL", f"s3://{bucket}/irp")
    monkeypatch.setenv("IRP_EVIDENCE_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    get_settings.cache_clear()
    yield Backend("s3", open_store(f"s3://{bucket}/irp"), client=client, bucket=bucket)
    close_stores()
    get_settings.cache_clear()


def _incident(severity: Severity = Severity.minor) -> Incident:
    now = utcnow()
    return Incident(id=INC, type=IncidentType.data_leak, severity=severity, status=IncidentStatus.notifying,
                    title="Export of call recordings", detected_at=now, aware_at=now,
                    obligations=[Obligation(id="client:acme", kind="client", audience="client", recipient="acme",
                                            template="client_notification", basis="contrat §7",
                                            due_at=now + timedelta(hours=24))])


@pytest.fixture
def filled(backend: Backend) -> Backend:
    """An incident saved as the engine saves it, with two archived items and three events."""
    records = audit.AuditedRecord(backend.store, actor="flow run test")
    records.save(_incident())
    backend.store.put(INC, "logs/auth.log", b"auth line\n", content_type="text/plain", source_system="siem",
                      source_time="20/Nov/2026:09:14:03 +0100")
    backend.store.put_json(INC, "alerts/a.json", {"a": 1}, source_system="generic")
    for n in range(3):
        backend.store.append_event(INC, TimelineEntry(kind="note", message=f"note {n}", actor="oncall"))
    records.save(_incident().model_copy(update={"summary": "4.2 GB sent to 203.0.113.50"}))
    return backend


def _verify() -> tuple[int, list[str]]:
    result = runner.invoke(app, ["evidence", "verify", INC])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout.splitlines()


def _audit_verify() -> tuple[int, str]:
    result = runner.invoke(app, ["audit", "verify", INC])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def _manifest_name(backend: Backend, name: str) -> str:
    return "manifest.jsonl:1" if backend.root else f"manifest/{name}.json"


def test_an_intact_incident_verifies_and_reports_its_chain_head(filled: Backend) -> None:
    code, out = _verify()
    assert code == 0, out
    last = filled.store.custody(INC)[-1]
    assert out[-1] == f"chain head: entry {last.seq} {last.hash}"
    code, text = _audit_verify()
    assert code == 0, text
    assert f"{INC}: intact" in text


@pytest.mark.parametrize(("field", "value"), [
    ("collected_at", "2026-01-01T00:00:00Z"),
    ("source_time", "01/Jan/2026:00:00:00 +0100"),
    ("source_system", "made-up"),
    ("retention_until", "2026-12-08T00:00:00Z"),
    ("content_type", "text/html"),
    ("collected_by", {"stage": "contain", "step": "x", "action": "y", "flow_run_id": "z"}),
])
def test_edited_manifest_metadata_is_named(filled: Backend, field: str, value: Any) -> None:
    name = _manifest_name(filled, "logs/auth.log")
    item = json.loads(filled.read_entry(name))
    assert item["name"] == "logs/auth.log"
    item[field] = value
    filled.write_entry(name, json.dumps(item).encode() if filled.root else json.dumps(item, indent=2).encode())
    code, out = _verify()
    assert code == 1
    edited = [line for line in out if line.startswith("altered: manifest entry of logs/auth.log: metadata edited")]
    assert len(edited) == 1 and f"{field} " in edited[0], out
    code, text = _audit_verify()
    assert code == 1 and "metadata edited" in text


def test_a_duplicated_manifest_line_is_named(filled: Backend) -> None:
    if not filled.root:
        pytest.skip("S3 keeps one manifest object per name: a copy under another key is named already")
    lines = filled.read("manifest.jsonl").splitlines()
    filled.forge("manifest.jsonl", b"\n".join([*lines, lines[0]]) + b"\n")
    code, out = _verify()
    assert code == 1
    assert out == ["unexpected: manifest.jsonl line 3: duplicated: lists logs/auth.log again (line 1)"]


def test_an_edited_timeline_in_incident_json_is_named(filled: Backend) -> None:
    record = json.loads(filled.read("incident.json"))
    record["timeline"].append({"at": utcnow().isoformat(), "kind": "notification", "message": "client told",
                               "stage": "notify", "step": None, "actor": "irp", "data": {}})
    filled.forge("incident.json", json.dumps(record, indent=2).encode())
    code, out = _verify()
    assert code == 1
    assert [line.split(": ")[:2] for line in out] == [["altered", "incident.json"]]
    assert "differs from the last version irp saved" in out[0]
    code, text = _audit_verify()
    assert code == 1 and "incident.json" in text


def test_an_edited_severity_with_the_audit_hash_recomputed_is_named(filled: Backend) -> None:
    record = json.loads(filled.read("incident.json"))
    record["severity"] = "critical"
    filled.forge("incident.json", json.dumps(record, indent=2).encode())
    # the insider recomputes the last audit entry's record digest and hash (it is the chain's last entry)
    name = filled.custody_names()[-1]
    entry = json.loads(filled.read_entry(name))
    assert entry["event"] == "audit"
    entry["sha256"] = audit.record_digest(Incident.model_validate(record))
    entry["details"]["severity"] = "critical"
    entry["hash"] = entry_hash(entry)
    filled.write_entry(name, json.dumps(entry).encode())
    code, text = _audit_verify()
    assert code == 1, text
    assert f"{INC}: BROKEN at incident.json: differs from the last version irp saved" in text
    code, out = _verify()
    assert code == 1 and out[0].startswith("altered: incident.json")


def _forged_notification() -> TimelineEntry:
    record = NotificationRecord(id="N-FORGED", audience="client", recipient="acme", template="client_notification",
                                subject="Incident de sécurité", obligation="client:acme", status="sent")
    return TimelineEntry(kind="notification", message="client notified", data={"record": record.model_dump(mode="json")})


def _deadline_status() -> str:
    result = runner.invoke(app, ["incidents", "deadlines", "--all", "--json"])
    assert result.exit_code == 0, result.output
    return next(d["status"] for d in json.loads(result.stdout) if d["incident"] == INC)


def test_a_forged_notification_event_does_not_meet_the_deadline(filled: Backend) -> None:
    assert _deadline_status() == "open"
    forged = _forged_notification().model_dump_json().encode()
    if filled.root:
        filled.forge("events.jsonl", filled.read("events.jsonl") + forged + b"\n")
        where = "events.jsonl line 4"
    else:
        filled.forge("events/99999999999999999999-1-1.json", forged)
        where = "events/99999999999999999999-1-1.json"
    assert _deadline_status() == "open"  # the forged line is not read
    assert all(e.kind != "notification" for e in filled.store.load_incident(INC).timeline)
    code, out = _verify()
    assert code == 1
    assert out == [f"unexpected: {where}: added out of band: not in the custody chain"]


def test_removed_events_are_named(filled: Backend) -> None:
    names = filled.event_names()
    assert len(names) == 3
    filled.drop_entry(names[1])
    code, out = _verify()
    assert code == 1
    removed = f"{_entry_of(filled, 'note 1')}"
    detail = f"the event recorded by custody entry {removed} is gone" if filled.root else \
        f"recorded by custody entry {removed}"
    assert out == [f"missing: {filled.label(names[1])}: removed: {detail}"]
    code, text = _audit_verify()
    assert code == 1 and "removed" in text


def test_an_edited_event_is_named(filled: Backend) -> None:
    name = filled.event_names()[0]
    event = json.loads(filled.read_entry(name))
    event["message"] = "nothing happened"
    filled.write_entry(name, json.dumps(event).encode())
    code, out = _verify()
    assert code == 1
    assert out == [f"altered: {filled.label(name)}: edited: differs from what custody entry "
                   f"{_entry_of(filled, 'note 0')} recorded"]


def _entry_of(backend: Backend, message: str) -> str:
    entries = [e for e in backend.store.custody(INC) if e.event == "event_appended"]
    n = int(message.rsplit(" ", 1)[1])
    entry = entries[n]
    return f"{entry.seq}: note at {entry.details['at']}"


def test_reordered_and_duplicated_event_lines_are_named(filled: Backend) -> None:
    if not filled.root:
        pytest.skip("S3 events are objects by key: no order or line to duplicate (a copy is an added event)")
    lines = filled.read("events.jsonl").splitlines()
    filled.forge("events.jsonl", b"\n".join([lines[1], lines[0], lines[2], lines[2]]) + b"\n")
    code, out = _verify()
    assert code == 1
    assert [line.split(": ")[:3] for line in out] == [
        ["altered", "events.jsonl line 1", "reordered"],
        ["unexpected", "events.jsonl line 4", "duplicated"]]


def test_a_file_planted_beside_objects_is_named(filled: Backend) -> None:
    if not filled.root:
        pytest.skip("S3: a key outside the layout is named by verify already")
    filled.forge("notes/readme.txt", b"planted")
    filled.forge("objects.txt", b"planted")
    code, out = _verify()
    assert code == 1
    assert [line.split(": ")[:2] for line in out] == [["unexpected", "notes/readme.txt"],
                                                     ["unexpected", "objects.txt"]]


def test_retention_follows_a_rise_in_severity(filled: Backend) -> None:
    before = {item.name: item.retention_until for item in filled.store.manifest(INC)}
    records = audit.AuditedRecord(filled.store, actor="flow run test")
    records.save(_incident(Severity.major))
    expected = {item.name: (item.collected_at + timedelta(days=1095)).replace(microsecond=0)
                for item in filled.store.manifest(INC)}
    for name, old in before.items():
        assert old is not None and old < expected[name] - timedelta(days=700)
    last = [e for e in filled.store.custody(INC) if e.event == "retention_extended"]
    assert len(last) == 1 and set(last[0].details["objects"]) == set(before)
    assert last[0].details["severity"] == "major"
    if filled.root:
        assert {item.name: item.retention_until for item in filled.store.manifest(INC)} == expected
    else:
        for item in filled.store.manifest(INC):  # moto's server answers GetObjectRetention with a 500: HeadObject
            held = filled.client.head_object(Bucket=filled.bucket, Key=f"irp/{INC}/objects/{item.name}",
                                             VersionId=item.version_id)
            assert held["ObjectLockMode"] == "GOVERNANCE"
            assert abs(held["ObjectLockRetainUntilDate"] - expected[item.name]) < timedelta(seconds=1)
    code, out = _verify()
    assert code == 0, out
