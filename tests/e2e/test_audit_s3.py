"""The audit log and the history on the S3 evidence store (moto's server over HTTP on loopback)."""

from __future__ import annotations

# ruff: noqa: F811  (pytest fixtures imported from test_evidence_s3 are parameters here)
import json
from datetime import UTC, datetime, timedelta

from history_fixtures import build_incident, save
from test_evidence_s3 import bucket, client, moto, s3_env, store  # noqa: F401  (fixtures)
from typer.testing import CliRunner

from irp import audit
from irp.cli.audit import audit_app
from irp.cli.incidents import incidents_app
from irp.models import IncidentType, Severity

runner = CliRunner()
T0 = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)


def test_history_and_audit_live_in_the_bucket(store, client, bucket: str) -> None:
    save(store, build_incident("INC-20261103-S3AAAA", detected=T0))
    save(store, build_incident("INC-20261104-S3BBBB", type=IncidentType.malware, severity=Severity.major,
                               detected=T0 + timedelta(days=1)))
    listed = runner.invoke(incidents_app, ["list", "--json", "--type", "malware"])
    assert listed.exit_code == 0, listed.output
    assert [r["id"] for r in json.loads(listed.output)] == ["INC-20261104-S3BBBB"]
    assert [e.details["act"] for e in audit.entries(store, "INC-20261103-S3AAAA")] == ["opened", "updated"]
    result = runner.invoke(audit_app, ["verify"])
    assert result.exit_code == 0, result.output
    assert "2 incident(s) checked in s3://" in result.output

    # an entry overwritten out of band (a new object version) is named, with what S3 kept
    seq = next(e.seq for e in audit.entries(store, "INC-20261103-S3AAAA") if e.details["act"] == "updated")
    key = f"irp/INC-20261103-S3AAAA/custody/{seq:08d}.json"
    record = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert record["event"] == "audit" and record["details"]["act"] == "updated"
    record["details"]["status"] = "reviewing"
    client.put_object(Bucket=bucket, Key=key, Body=json.dumps(record).encode())
    result = runner.invoke(audit_app, ["verify"])
    assert result.exit_code == 1
    assert (f"INC-20261103-S3AAAA: BROKEN at custody/{seq:08d}.json: overwritten out of band (2 versions); "
            f"entry {seq} altered") in result.output
    assert "INC-20261104-S3BBBB: intact" in result.output
