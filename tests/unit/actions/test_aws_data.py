"""S3, Secrets Manager and CloudTrail actions against real servers over HTTP (moto; a tiny CloudTrail)."""

from __future__ import annotations

# ruff: noqa: F811  (pytest fixtures imported from service_fixtures are parameters here)
import json
from datetime import UTC, datetime, timedelta

import pytest
from service_fixtures import (  # noqa: F401  (fixtures)
    AsgiServer,
    CloudTrail,
    Fault,
    aws,
    boto,
    events,
    fault_proxy,
    json_error,
    json_target,
    make_ctx,
    moto_server,
    s3_error,
)

from irp.actions.aws.cloudtrail import CloudTrailArgs, lookup_cloudtrail_events
from irp.actions.aws.s3 import BucketArgs, ObjectVersionArgs, block_public_access, restore_object_version
from irp.actions.aws.secretsmanager import RotateSecretArgs, rotate_secret
from irp.actions.registry import get_registry
from irp.errors import PermanentError, TransientError
from irp.models import Stage

ALL = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}


def run_undo(outcome, evidence_root):
    spec = get_registry()[outcome.undo.action]
    return spec.fn(spec.args_model.model_validate(outcome.undo.args),
                   make_ctx(evidence_root, step="undo_it", action=outcome.undo.action))


@pytest.fixture
def s3(aws: str):
    return boto("s3", aws)


def public_access(s3, bucket: str) -> dict | None:
    try:
        return s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    except s3.exceptions.ClientError:
        return None


class TestBlockPublicAccess:
    def test_blocks_idempotently_and_undo_removes_it(self, s3, evidence_root):
        s3.create_bucket(Bucket="exports", CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
        first = block_public_access(BucketArgs(bucket="exports"), make_ctx(evidence_root))
        assert first.changed and public_access(s3, "exports") == ALL
        assert first.before == {"configuration": None}
        second = block_public_access(BucketArgs(bucket="exports"), make_ctx(evidence_root))
        assert not second.changed and second.undo == first.undo
        run_undo(first, evidence_root)
        assert public_access(s3, "exports") is None

    def test_undo_puts_a_partial_block_back(self, s3, evidence_root):
        s3.create_bucket(Bucket="partial", CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
        partial = {"BlockPublicAcls": True, "IgnorePublicAcls": False, "BlockPublicPolicy": False,
                   "RestrictPublicBuckets": False}
        s3.put_public_access_block(Bucket="partial", PublicAccessBlockConfiguration=partial)
        outcome = block_public_access(BucketArgs(bucket="partial"), make_ctx(evidence_root))
        assert public_access(s3, "partial") == ALL
        run_undo(outcome, evidence_root)
        assert public_access(s3, "partial") == partial

    def test_dry_run_and_missing_bucket(self, s3, evidence_root):
        s3.create_bucket(Bucket="open", CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
        outcome = block_public_access(BucketArgs(bucket="open"), make_ctx(evidence_root, dry_run=True))
        assert outcome.details["would_change"] and public_access(s3, "open") is None
        with pytest.raises(PermanentError, match="no S3 bucket nope-nope"):
            block_public_access(BucketArgs(bucket="nope-nope"), make_ctx(evidence_root, dry_run=True))

    def test_slow_down_is_retried(self, s3, fault_proxy, evidence_root):
        s3.create_bucket(Bucket="busy", CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
        fault_proxy.faults = [Fault(lambda m, p, h, b: m == "PUT" and p == "/busy", 503,
                                    s3_error("SlowDown", "Please reduce your request rate."), times=2)]
        outcome = block_public_access(BucketArgs(bucket="busy"), make_ctx(evidence_root))
        assert outcome.changed and public_access(s3, "busy") == ALL
        assert sum(1 for m, p, _ in fault_proxy.seen if m == "PUT" and p == "/busy") == 3


class TestRestoreObjectVersion:
    @pytest.fixture
    def versions(self, s3) -> dict:
        s3.create_bucket(Bucket="records", CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
        s3.put_bucket_versioning(Bucket="records", VersioningConfiguration={"Status": "Enabled"})
        good = s3.put_object(Bucket="records", Key="calls.csv", Body=b"good data\n")["VersionId"]
        bad = s3.put_object(Bucket="records", Key="calls.csv", Body=b"tampered\n")["VersionId"]
        return {"good": good, "bad": bad}

    def test_restores_once_and_undo_brings_back_the_latest(self, s3, versions, evidence_root):
        args = ObjectVersionArgs(bucket="records", key="calls.csv", version_id=versions["good"])
        first = restore_object_version(args, make_ctx(evidence_root))
        assert s3.get_object(Bucket="records", Key="calls.csv")["Body"].read() == b"good data\n"
        listed = s3.list_object_versions(Bucket="records", Prefix="calls.csv")["Versions"]
        assert len(listed) == 3  # history kept: nothing was deleted
        assert first.before["latest"]["VersionId"] == versions["bad"]

        second = restore_object_version(args, make_ctx(evidence_root))
        assert not second.changed and "earlier attempt" in second.message and second.undo == first.undo
        assert len(s3.list_object_versions(Bucket="records", Prefix="calls.csv")["Versions"]) == 3

        run_undo(first, evidence_root)
        assert s3.get_object(Bucket="records", Key="calls.csv")["Body"].read() == b"tampered\n"

    def test_dry_run_copies_nothing(self, s3, versions, evidence_root):
        outcome = restore_object_version(ObjectVersionArgs(bucket="records", key="calls.csv",
                                                           version_id=versions["good"]),
                                         make_ctx(evidence_root, dry_run=True))
        assert outcome.details["would_change"]
        assert len(s3.list_object_versions(Bucket="records", Prefix="calls.csv")["Versions"]) == 2

    def test_unknown_version_and_unversioned_bucket(self, s3, versions, evidence_root):
        with pytest.raises(PermanentError, match="has no version nope"):
            restore_object_version(ObjectVersionArgs(bucket="records", key="calls.csv", version_id="nope"),
                                   make_ctx(evidence_root))
        s3.create_bucket(Bucket="flat", CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
        with pytest.raises(PermanentError, match="is not versioned"):
            restore_object_version(ObjectVersionArgs(bucket="flat", key="k", version_id="v"), make_ctx(evidence_root))


class TestRotateSecret:
    @pytest.fixture
    def sm(self, aws: str):
        return boto("secretsmanager", aws)

    def test_new_value_rotation_is_idempotent_and_undone(self, sm, evidence_root, caplog):
        created = sm.create_secret(Name="db/app", SecretString="old-password")
        old_version = created["VersionId"]
        ctx = make_ctx(evidence_root, step="rotate")
        first = rotate_secret(RotateSecretArgs(secret_id="db/app"), ctx)
        value = sm.get_secret_value(SecretId="db/app")["SecretString"]
        assert first.changed and value != "old-password" and len(value) == 40
        assert first.before["current_version"] == old_version
        stages = sm.describe_secret(SecretId="db/app")["VersionIdsToStages"]
        assert "AWSPREVIOUS" in stages[old_version]
        # the value is nowhere in the output, the evidence or the logs
        assert value not in json.dumps(first.model_dump(mode="json"))
        for item in ctx.evidence:
            with ctx.store.open(ctx.incident.id, item.name) as handle:
                assert value.encode() not in handle.read()
        assert value not in caplog.text

        second = rotate_secret(RotateSecretArgs(secret_id="db/app"), make_ctx(evidence_root, step="rotate"))
        assert not second.changed and sm.get_secret_value(SecretId="db/app")["SecretString"] == value

        run_undo(first, evidence_root)
        # by stage: moto 5.2.5 does not move its default version on UpdateSecretVersionStage
        assert sm.get_secret_value(SecretId="db/app", VersionStage="AWSCURRENT")["SecretString"] == "old-password"
        assert sm.describe_secret(SecretId="db/app")["VersionIdsToStages"][old_version] == ["AWSCURRENT"]

    def test_json_key_is_replaced_and_others_kept(self, sm, evidence_root):
        sm.create_secret(Name="api", SecretString=json.dumps({"user": "svc", "password": "p1"}))
        rotate_secret(RotateSecretArgs(secret_id="api", json_key="password", exclude_punctuation=True, length=20),
                      make_ctx(evidence_root))
        document = json.loads(sm.get_secret_value(SecretId="api")["SecretString"])
        assert document["user"] == "svc" and document["password"] != "p1" and document["password"].isalnum()

    def test_dry_run_checks_the_json_key(self, sm, evidence_root):
        sm.create_secret(Name="api", SecretString=json.dumps({"user": "svc"}))
        with pytest.raises(PermanentError, match="no key 'password'; its keys: user"):
            rotate_secret(RotateSecretArgs(secret_id="api", json_key="password"), make_ctx(evidence_root, dry_run=True))
        before = sm.describe_secret(SecretId="api")["VersionIdsToStages"]
        ok = rotate_secret(RotateSecretArgs(secret_id="api"), make_ctx(evidence_root, dry_run=True))
        assert ok.details == {"would_change": True, "mode": "new_value"}
        assert sm.describe_secret(SecretId="api")["VersionIdsToStages"] == before

    def test_throttled_put_is_retried_with_the_same_version(self, sm, fault_proxy, evidence_root):
        sm.create_secret(Name="busy", SecretString="x")
        fault_proxy.faults = [Fault(json_target("PutSecretValue"), 400, json_error("ThrottlingException"),
                                    content_type="application/x-amz-json-1.1", times=2)]
        outcome = rotate_secret(RotateSecretArgs(secret_id="busy"), make_ctx(evidence_root))
        assert outcome.changed and fault_proxy.count("PutSecretValue") == 3
        assert len(sm.describe_secret(SecretId="busy")["VersionIdsToStages"]) == 2


class TestCloudTrail:
    @pytest.fixture
    def trail(self, aws, monkeypatch):
        now = datetime.now(UTC)
        events_ = [{"EventId": f"e{i}", "EventName": "GetObject" if i % 2 else "ListBuckets", "Username": "mallory",
                    "EventTime": (now - timedelta(minutes=i)).timestamp(), "EventSource": "s3.amazonaws.com",
                    "CloudTrailEvent": json.dumps({"sourceIPAddress": f"203.0.113.{i % 3}", "eventID": f"e{i}"})}
                   for i in range(120)]
        events_.append({"EventId": "other", "EventName": "GetObject", "Username": "alice",
                        "EventTime": now.timestamp(), "CloudTrailEvent": "{}"})
        trail = CloudTrail(events_, throttle_first=1)
        with AsgiServer(trail.app) as server:
            monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDTRAIL", server.url)
            yield trail

    def test_archives_every_page_of_the_actor(self, trail, evidence_root):
        ctx = make_ctx(evidence_root, step="trail", stage=Stage.analyse)
        outcome = lookup_cloudtrail_events(CloudTrailArgs(value="mallory"), ctx)
        assert outcome.details["count"] == 120 and not outcome.details["truncated"]
        assert outcome.details["event_names"] == {"GetObject": 60, "ListBuckets": 60}
        assert sorted(outcome.details["source_ips"]) == ["203.0.113.0", "203.0.113.1", "203.0.113.2"]
        assert len(trail.requests) == 1 + 3  # one throttled, then three pages of 50
        with ctx.store.open(ctx.incident.id, outcome.details["evidence"]) as handle:
            archived = json.load(handle)
        assert len(archived["events"]) == 120 and archived["query"]["value"] == "mallory"
        assert any(e.kind == "third_party" and "ThrottlingException" in e.message for e in ctx.timeline)

    def test_max_events_truncates(self, trail, evidence_root):
        outcome = lookup_cloudtrail_events(CloudTrailArgs(value="mallory", max_events=60), make_ctx(evidence_root))
        assert outcome.details["count"] == 60 and outcome.details["truncated"]

    def test_dry_run_reads_one_event_and_archives_nothing(self, trail, evidence_root):
        ctx = make_ctx(evidence_root, dry_run=True)
        outcome = lookup_cloudtrail_events(CloudTrailArgs(value="mallory"), ctx)
        assert outcome.dry_run and ctx.evidence == [] and trail.requests[-1]["MaxResults"] == 1

    def test_cloudtrail_down_is_on_the_incident(self, aws, evidence_root, monkeypatch):
        from service_fixtures import free_port

        monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDTRAIL", f"http://127.0.0.1:{free_port()}")
        with pytest.raises(TransientError, match="AWS cloudtrail lookup_events failed after 4 attempt"):
            lookup_cloudtrail_events(CloudTrailArgs(value="mallory"), make_ctx(evidence_root))
        assert events(evidence_root)[0]["data"]["provider"] == "AWS cloudtrail"

    def test_session_credentials_in_events_are_archived_redacted(self, aws, evidence_root, monkeypatch):
        issued = {"accessKeyId": "ASIAEXAMPLEISSUED", "sessionToken": "FwoGZXIvYXdzEXAMPLE-session-token",
                  "expiration": "Nov 28, 2026 10:00:00 AM"}
        trail = CloudTrail([{"EventId": "a1", "EventName": "AssumeRole", "Username": "mallory",
                             "EventTime": datetime.now(UTC).timestamp(),
                             "CloudTrailEvent": json.dumps({"eventName": "AssumeRole",
                                                            "responseElements": {"credentials": issued}})}])
        with AsgiServer(trail.app) as server:
            monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDTRAIL", server.url)
            ctx = make_ctx(evidence_root)
            outcome = lookup_cloudtrail_events(CloudTrailArgs(value="mallory"), ctx)
        with ctx.store.open(ctx.incident.id, outcome.details["evidence"]) as handle:
            archived = handle.read().decode()
        assert "FwoGZXIvYXdzEXAMPLE-session-token" not in archived
        assert "ASIAEXAMPLEISSUED" in archived  # which session was issued stays known


class TestDenyPrincipalOnBucket:
    ATTACKER = "arn:aws:iam::123456789012:user/mallory"
    KEEP = {"Sid": "ReadForAuditors", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:role/audit"},
            "Action": "s3:GetObject", "Resource": "arn:aws:s3:::exports/*"}

    @pytest.fixture
    def bucket(self, s3) -> str:
        s3.create_bucket(Bucket="exports", CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
        s3.put_bucket_policy(Bucket="exports", Policy=json.dumps({"Version": "2012-10-17", "Statement": [self.KEEP]}))
        return "exports"

    def policy(self, s3) -> list[dict] | None:
        try:
            return json.loads(s3.get_bucket_policy(Bucket="exports")["Policy"])["Statement"]
        except s3.exceptions.ClientError:
            return None

    def test_denies_keeps_the_rest_and_undo_removes_only_it(self, s3, bucket, evidence_root):
        from irp.actions.aws.s3 import DenyPrincipalArgs, deny_principal_on_bucket

        first = deny_principal_on_bucket(DenyPrincipalArgs(bucket=bucket, principal_arn=self.ATTACKER),
                                         make_ctx(evidence_root))
        sid = first.details["sid"]
        assert first.changed and sid.startswith("IrpDenyINCTEST0001")
        assert self.policy(s3) == [self.KEEP, {
            "Sid": sid, "Effect": "Deny", "Principal": {"AWS": self.ATTACKER}, "Action": "s3:*",
            "Resource": ["arn:aws:s3:::exports", "arn:aws:s3:::exports/*"]}]
        second = deny_principal_on_bucket(DenyPrincipalArgs(bucket=bucket, principal_arn=self.ATTACKER),
                                          make_ctx(evidence_root))
        assert not second.changed and second.undo == first.undo and len(self.policy(s3)) == 2
        assert run_undo(first, evidence_root).changed and self.policy(s3) == [self.KEEP]

    def test_a_bucket_without_policy_gets_one_and_undo_deletes_it(self, s3, evidence_root):
        from irp.actions.aws.s3 import DenyPrincipalArgs, deny_principal_on_bucket

        s3.create_bucket(Bucket="exports", CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
        outcome = deny_principal_on_bucket(DenyPrincipalArgs(bucket="exports", principal_arn=self.ATTACKER),
                                           make_ctx(evidence_root))
        assert outcome.before == {"policy": None} and len(self.policy(s3)) == 1
        assert "policy deleted" in run_undo(outcome, evidence_root).message and self.policy(s3) is None

    def test_irp_never_denies_itself(self, s3, bucket, fault_proxy, evidence_root):
        from irp.actions.aws.s3 import DenyPrincipalArgs, deny_principal_on_bucket

        fault_proxy.faults = [Fault(lambda m, p, h, body: b"Action=GetCallerIdentity" in body, 200, (
            b'<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetCallerIdentityResult>'
            b"<Arn>arn:aws:sts::123456789012:assumed-role/irp-responder/prefect</Arn><UserId>AROAX:prefect</UserId>"
            b"<Account>123456789012</Account></GetCallerIdentityResult></GetCallerIdentityResponse>"))]
        with pytest.raises(PermanentError, match="is the identity irp runs as"):
            deny_principal_on_bucket(DenyPrincipalArgs(bucket=bucket,
                                                       principal_arn="arn:aws:iam::123456789012:role/irp-responder"),
                                     make_ctx(evidence_root))
        assert self.policy(s3) == [self.KEEP]

    def test_the_caller_check_covers_the_role_of_a_session(self):
        from irp.actions.aws.s3 import _is_caller

        session = "arn:aws:sts::123456789012:assumed-role/irp-responder/prefect"
        assert _is_caller(session, "arn:aws:iam::123456789012:role/irp-responder")
        assert _is_caller(session, "arn:aws:iam::123456789012:role/team/irp-responder")
        assert not _is_caller(session, "arn:aws:iam::123456789012:role/irp-responder-2")
        assert not _is_caller(session, "arn:aws:iam::210987654321:role/irp-responder")

    @pytest.mark.parametrize("arn", ["*", "arn:aws:iam::123456789012:root", "123456789012",
                                     "arn:aws:iam::123456789012:group/admins"])
    def test_roots_wildcards_and_groups_are_refused_by_the_model(self, arn):
        from irp.actions.aws.s3 import DenyPrincipalArgs

        with pytest.raises(ValueError, match="principal_arn"):
            DenyPrincipalArgs(bucket="exports", principal_arn=arn)

    def test_a_foreign_statement_with_the_sid_is_refused(self, s3, bucket, evidence_root):
        from irp.actions.aws.s3 import DenyPrincipalArgs, deny_principal_on_bucket

        with pytest.raises(PermanentError, match="already has a statement ReadForAuditors"):
            deny_principal_on_bucket(DenyPrincipalArgs(bucket=bucket, principal_arn=self.ATTACKER,
                                                       sid="ReadForAuditors"), make_ctx(evidence_root))
        assert self.policy(s3) == [self.KEEP]
