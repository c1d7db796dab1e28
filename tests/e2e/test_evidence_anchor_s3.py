"""Chain heads anchored in an Object Lock (COMPLIANCE) bucket, against moto's server over HTTP: an insider who can
purge versions in the evidence bucket truncates, rewrites or deletes an incident, and the anchor names it; a real
flow run anchors at each stage end; an S3 bundle timestamped by a local TSA verifies offline after the bucket is
emptied."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from lifecycle_fixtures import EVERYONE_AGREES
from service_fixtures import REGION, aws, boto, moto_server  # noqa: F401 (fixtures)
from tsa_fixtures import LocalTsa, tsa  # noqa: F401 (a fixture)
from typer.testing import CliRunner

from irp.cli import app
from irp.errors import ConfigurationError
from irp.evidence import close_stores, open_store
from irp.evidence.anchors import check_anchor
from irp.evidence.custody import entry_hash
from irp.settings import get_settings

REPO = Path(__file__).resolve().parents[2]
INC = "INC-20261207-C3C3C3"
runner = CliRunner()


def _irp(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def _create(s3, *, lock: bool) -> str:
    name = f"b-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=lock,
                     CreateBucketConfiguration={"LocationConstraint": REGION})
    return name


@pytest.fixture
def s3(aws: str):  # noqa: F811 (the imported fixture)
    return boto("s3", aws)


@pytest.fixture
def buckets(s3, aws: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:  # noqa: F811
    """An evidence bucket an insider can purge (versioned, no Object Lock) and a locked anchor bucket with its
    own endpoint and keys."""
    evidence, anchors = _create(s3, lock=False), _create(s3, lock=True)
    s3.put_bucket_versioning(Bucket=evidence, VersioningConfiguration={"Status": "Enabled"})
    monkeypatch.setenv("IRP_EVIDENCE_URL", f"s3://{evidence}/irp")
    monkeypatch.setenv("IRP_EVIDENCE_RETENTION_MODE", "off")
    monkeypatch.setenv("IRP_EVIDENCE_ANCHOR_URL", f"s3://{anchors}/checkpoints")
    monkeypatch.setenv("IRP_EVIDENCE_ANCHOR_ENDPOINT_URL", aws)
    monkeypatch.setenv("IRP_EVIDENCE_ANCHOR_ACCESS_KEY_ID", "anchor-writer")
    monkeypatch.setenv("IRP_EVIDENCE_ANCHOR_SECRET_ACCESS_KEY", "anchor-secret")
    get_settings.cache_clear()
    yield evidence, anchors
    close_stores()


@pytest.fixture
def filled(buckets: tuple[str, str]) -> tuple[str, str]:
    store = open_store(get_settings().evidence_url)
    store.put(INC, "logs/auth.log", b"auth line\n")
    store.put("INC-20261207-D4D4D4", "alerts/b.json", b"{}")
    with store.open(INC, "logs/auth.log") as handle:
        handle.read()
    assert _irp("evidence", "anchor")[0] == 0
    return buckets


def _purge(s3, bucket: str, prefix: str) -> None:
    """Remove every version of every key under `prefix`, as an insider with s3:DeleteObjectVersion would."""
    listed = s3.list_object_versions(Bucket=bucket, Prefix=prefix)
    for version in [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])]:
        s3.delete_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])


def _custody_keys(s3, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"irp/{INC}/custody/")["Contents"])


class TestAnchorBucket:
    def test_checkpoints_are_locked_in_compliance_mode(self, s3, filled: tuple[str, str]) -> None:
        _, anchors = filled
        [listed] = s3.list_objects_v2(Bucket=anchors, Prefix="checkpoints/")["Contents"]
        assert listed["Key"] == "checkpoints/000000000001.json"
        head = s3.head_object(Bucket=anchors, Key=listed["Key"])
        assert head["ObjectLockMode"] == "COMPLIANCE"
        checkpoint = json.loads(s3.get_object(Bucket=anchors, Key=listed["Key"])["Body"].read())
        assert set(checkpoint["heads"]) == {INC, "INC-20261207-D4D4D4"}
        with pytest.raises(Exception, match="AccessDenied|locked|retention"):
            s3.delete_object(Bucket=anchors, Key=listed["Key"], VersionId=head["VersionId"])

    def test_bucket_without_object_lock_is_refused(self, s3, buckets: tuple[str, str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
        plain = _create(s3, lock=False)
        monkeypatch.setenv("IRP_EVIDENCE_ANCHOR_URL", f"s3://{plain}/checkpoints")
        get_settings.cache_clear()
        with pytest.raises(ConfigurationError, match=f"bucket '{plain}' has no Object Lock"):
            check_anchor(open_store(get_settings().evidence_url))
        result = runner.invoke(app, ["evidence", "anchor"])
        assert result.exit_code == 1 and "has no Object Lock" in str(result.exception)


class TestInsiderTampering:
    """Each verified as intact before anchors existed (the insider leaves one version per key)."""

    def test_purged_last_custody_entries_are_named(self, s3, filled: tuple[str, str]) -> None:
        evidence, _ = filled
        _purge(s3, evidence, _custody_keys(s3, evidence)[-1])
        code, out = _irp("evidence", "verify", INC)
        assert code == 1 and "chain truncated: it ends at entry 2 but entry 3 was anchored" in out

    def test_last_entry_replaced_with_its_hash_recomputed_is_named(self, s3, filled: tuple[str, str]) -> None:
        evidence, _ = filled
        last = _custody_keys(s3, evidence)[-1]
        record = json.loads(s3.get_object(Bucket=evidence, Key=last)["Body"].read())
        record["actor"] = "nobody@nowhere"
        record["hash"] = entry_hash(record)
        _purge(s3, evidence, last)
        s3.put_object(Bucket=evidence, Key=last, Body=json.dumps(record, sort_keys=True).encode())
        code, out = _irp("evidence", "verify", INC)
        assert code == 1 and "chain rewritten: entry 3 has hash" in out

    def test_purged_incident_is_named_by_audit_verify(self, s3, filled: tuple[str, str]) -> None:
        evidence, _ = filled
        _purge(s3, evidence, "irp/INC-20261207-D4D4D4/")
        code, out = _irp("audit", "verify")
        assert code == 1
        assert "INC-20261207-D4D4D4: BROKEN at INC-20261207-D4D4D4: incident deleted from the store" in out


def test_bundle_of_an_s3_store_verifies_offline_after_the_bucket_is_emptied(
        s3, buckets: tuple[str, str], timestamping: LocalTsa, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    evidence, _ = buckets
    store = open_store(get_settings().evidence_url)
    store.put(INC, "logs/auth.log", b"auth line\n")
    bundle = tmp_path / "bundle.tar"
    assert _irp("evidence", "export", INC, "--tar", str(bundle))[0] == 0
    _purge(s3, evidence, "irp/")
    monkeypatch.delenv("IRP_TSA_URL")
    get_settings.cache_clear()
    code, out = _irp("evidence", "verify", "--bundle", str(bundle))
    assert code == 0, out
    [line] = [line for line in out.splitlines() if "logs/auth.log" in line]
    assert "existed by 20" in line


@pytest.fixture
def timestamping(tsa: LocalTsa) -> LocalTsa:  # noqa: F811 (the imported fixture)
    return tsa


def test_a_flow_run_anchors_at_each_stage_end(s3, buckets: tuple[str, str], prefect_server: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.incidents import INCIDENT_FLOWS
    from irp.alerts import read_alert
    from irp.models import IncidentType

    monkeypatch.setenv("IRP_ACTION_TARGETS", '{"access_key": {"allow": ["*"]}, "bucket": {"allow": ["*"]}}')
    get_settings.cache_clear()
    _, anchors = buckets
    alert = read_alert(REPO / "playbooks" / "samples" / "data_leak.json")
    state = INCIDENT_FLOWS[IncidentType.data_leak](alert=alert, decisions=EVERYONE_AGREES, return_state=True)
    assert state.is_completed(), state.message
    incident_id = state.result().incident_id
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=anchors, Prefix="checkpoints/")["Contents"])
    assert len(keys) >= 6  # detect, analyse, contain, restore, review, notify final: each changed the heads
    heads = [json.loads(s3.get_object(Bucket=anchors, Key=k)["Body"].read())["heads"][incident_id]["seq"] for k in keys]
    assert heads == sorted(heads) and len(set(heads)) == len(heads)
    assert _irp("audit", "verify", incident_id)[0] == 0
