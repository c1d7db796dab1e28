"""S3 actions: describe a bucket, collect its server access logs; block its public access and put it
back; restore an object version and remove it; deny one principal in a bucket policy and remove that
statement.

Side effects, not in dry runs: public access block configurations put or deleted; an earlier object
version copied over the latest (history kept), or one version deleted; a bucket policy statement
added or removed by Sid, the rest of the policy kept (S3 has no DryRun); what the describe and
collect actions read archived (credentials in request URIs redacted).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import Field

from irp.actions.aws.clients import WindowArgs, archive_facts, aws_client, call, fact_tags, pages
from irp.actions.base import Change, Journal, Outcome, UndoPlan, run_change
from irp.actions.registry import ActionArgs, ActionContext, Target, action
from irp.errors import PermanentError
from irp.redaction import redact_text

_ALL_BLOCKED = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True}


class BucketArgs(ActionArgs):
    bucket: Annotated[str, Target("bucket")] = Field(..., min_length=3, max_length=63, description="S3 bucket name.")


class PublicAccessBlockArgs(ActionArgs):
    bucket: Annotated[str, Target("bucket")] = Field(..., min_length=3, max_length=63, description="S3 bucket name.")
    configuration: dict[str, bool] | None = Field(None, description="Configuration to put back; null removes it.")


def _public_access_block(ctx: ActionContext, s3: Any, bucket: str) -> dict[str, bool] | None:
    if call(ctx, s3, "head_bucket", absent=("404", "NoSuchBucket"), Bucket=bucket) is None:
        raise PermanentError(f"no S3 bucket {bucket}", provider="AWS s3", code="NoSuchBucket")
    found = call(ctx, s3, "get_public_access_block", absent=("NoSuchPublicAccessBlockConfiguration",),
                  Bucket=bucket)
    return dict(found["PublicAccessBlockConfiguration"]) if found else None


def _set_public_access_block(ctx: ActionContext, bucket: str, wanted: dict[str, bool] | None,
                             undo_of: bool) -> Outcome:
    s3 = aws_client("s3")
    current = _public_access_block(ctx, s3, bucket)
    journal, before, replayed = Journal.begin(ctx, f"s3-bucket/{bucket}/public-access-block",
                                                   {"configuration": current}, source_system="aws-s3")
    undo = None
    if not undo_of and before["configuration"] != wanted:
        undo = UndoPlan(action="aws.restore_public_access_block",
                        args={"bucket": bucket, "configuration": before["configuration"]})
    what = ("block all public access to" if wanted == _ALL_BLOCKED and not undo_of
            else "remove the public access block of" if wanted is None else "restore the public access block of")

    def write() -> dict[str, Any]:
        if wanted is None:
            call(ctx, s3, "delete_public_access_block", Bucket=bucket)
        else:
            call(ctx, s3, "put_public_access_block", Bucket=bucket, PublicAccessBlockConfiguration=wanted)
        return {"configuration": _public_access_block(ctx, s3, bucket)}

    return run_change(ctx, Change(
        journal=journal, source_system="aws-s3", before=before, done=current == wanted, write=write,
        current={"configuration": current}, redone=replayed and before["configuration"] != wanted, undo=undo,
        dry_run=f"dry run: would {what} bucket {bucket}" + (" (already so)" if current == wanted else ""),
        checks=lambda: ["s3:HeadBucket and s3:GetBucketPublicAccessBlock: bucket found (S3 has no DryRun)"],
        unchanged=f"public access block of bucket {bucket} is already as wanted ({{why}}): nothing changed",
        changed=lambda _: f"{what[0].upper()}{what[1:]} bucket {bucket}: done",
    ))


@action
def block_public_access(args: BucketArgs, ctx: ActionContext) -> Outcome:
    """Turn on all four S3 public access blocks of a bucket (reversible)."""
    return _set_public_access_block(ctx, args.bucket, dict(_ALL_BLOCKED), undo_of=False)


@action
def restore_public_access_block(args: PublicAccessBlockArgs, ctx: ActionContext) -> Outcome:
    """Put a bucket's public access block back as it was (undo of aws.block_public_access)."""
    return _set_public_access_block(ctx, args.bucket, args.configuration, undo_of=True)


class ObjectVersionArgs(ActionArgs):
    bucket: Annotated[str, Target("bucket")] = Field(..., min_length=3, max_length=63, description="Versioned S3 bucket.")
    key: Annotated[str, Target("object")] = Field(..., min_length=1, description="Object key.")
    version_id: str = Field(..., min_length=1, description="The good version to make current again.")


_COPY_LIMIT = 5 * 1024**3


def _head(ctx: ActionContext, s3: Any, bucket: str, key: str, version_id: str | None = None) -> dict | None:
    extra = {"VersionId": version_id} if version_id else {}
    found = call(ctx, s3, "head_object", absent=("404", "NoSuchKey", "NoSuchVersion", "405"),
                  Bucket=bucket, Key=key, **extra)
    if found is None:
        return None
    return {name: found.get(name) for name in ("VersionId", "ETag", "ContentLength", "LastModified", "ContentType",
                                               "ServerSideEncryption", "SSEKMSKeyId", "ObjectLockMode")}


@action
def restore_object_version(args: ObjectVersionArgs, ctx: ActionContext) -> Outcome:
    """Make an earlier S3 object version current again by copying it over the latest (history kept)."""
    s3 = aws_client("s3")
    versioning = call(ctx, s3, "get_bucket_versioning", absent=("NoSuchBucket",), Bucket=args.bucket)
    if versioning is None:
        raise PermanentError(f"no S3 bucket {args.bucket}", provider="AWS s3", code="NoSuchBucket")
    if versioning.get("Status") != "Enabled":
        raise PermanentError(f"bucket {args.bucket} is not versioned: there are no versions to restore",
                             provider="AWS s3", code="VersioningNotEnabled")
    good = _head(ctx, s3, args.bucket, args.key, args.version_id)
    if good is None:
        raise PermanentError(f"s3://{args.bucket}/{args.key} has no version {args.version_id}", provider="AWS s3",
                             code="NoSuchVersion")
    if (good["ContentLength"] or 0) > _COPY_LIMIT:
        raise PermanentError(f"version {args.version_id} is larger than 5 GiB: restore it with a multipart copy",
                             provider="AWS s3", code="EntityTooLarge")
    latest = _head(ctx, s3, args.bucket, args.key)
    journal, before, _ = Journal.begin(ctx, f"s3-object/{args.bucket}/{args.key}",
                                            {"latest": latest, "restoring": good}, source_system="aws-s3")
    same = latest is not None and latest["ETag"] == good["ETag"]
    created = journal.load("created")

    def removal(version: str | None) -> UndoPlan:
        return UndoPlan(action="aws.remove_object_version",
                        args={"bucket": args.bucket, "key": args.key, "version_id": version})

    def write() -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if good.get("ServerSideEncryption") == "aws:kms":
            extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": good["SSEKMSKeyId"]}
        copied = call(ctx, s3, "copy_object", Bucket=args.bucket, Key=args.key, MetadataDirective="COPY",
                      TaggingDirective="COPY",
                      CopySource={"Bucket": args.bucket, "Key": args.key, "VersionId": args.version_id}, **extra)
        journal.archive("created", copied.get("VersionId"), source_system="aws-s3")
        change.undo = removal(copied.get("VersionId"))  # the undo deletes the version the copy made
        return {"latest": _head(ctx, s3, args.bucket, args.key)}

    change = Change(
        journal=journal, source_system="aws-s3", before=before, done=same, write=write,
        current={"latest": latest}, redone=bool(created), undo=removal(created) if created else None,
        dry_run=f"dry run: would copy version {args.version_id} of s3://{args.bucket}/{args.key} over the latest"
                + (" (the latest already has that content)" if same else ""),
        checks=lambda: ["s3:GetBucketVersioning and s3:HeadObject: bucket versioned, version found (S3 has no DryRun)"],
        unchanged=f"the latest version of s3://{args.bucket}/{args.key} already has the content of "
                  f"{args.version_id} ({{why}}): nothing changed",
        changed=lambda _: f"version {args.version_id} of s3://{args.bucket}/{args.key} restored as new version "
                          f"{change.undo.args['version_id'] if change.undo else None}",
    )
    return run_change(ctx, change)


@action
def remove_object_version(args: ObjectVersionArgs, ctx: ActionContext) -> Outcome:
    """Delete one S3 object version, e.g. the copy aws.restore_object_version made (its undo)."""
    s3 = aws_client("s3")
    found = _head(ctx, s3, args.bucket, args.key, args.version_id)
    journal, before, _ = Journal.begin(ctx, f"s3-object/{args.bucket}/{args.key}/{args.version_id}",
                                            {"version": found, "latest": _head(ctx, s3, args.bucket, args.key)},
                              source_system="aws-s3")

    def write() -> dict[str, Any]:
        call(ctx, s3, "delete_object", Bucket=args.bucket, Key=args.key, VersionId=args.version_id)
        return {"version": None, "latest": _head(ctx, s3, args.bucket, args.key)}

    return run_change(ctx, Change(
        journal=journal, source_system="aws-s3", before=before, done=found is None, write=write,
        current={"version": None},
        dry_run=f"dry run: would delete version {args.version_id} of s3://{args.bucket}/{args.key}"
                + ("" if found else " (already gone)"),
        checks=lambda: ["s3:HeadObject: version found (S3 has no DryRun)"],
        unchanged=f"version {args.version_id} of s3://{args.bucket}/{args.key} is already gone: nothing changed",
        changed=lambda _: f"version {args.version_id} of s3://{args.bucket}/{args.key} deleted",
    ))


class DescribeBucketArgs(ActionArgs):
    bucket: str = Field(..., min_length=3, max_length=63, description="S3 bucket name.")


def _optional(ctx: ActionContext, s3: Any, operation: str, bucket: str, key: str, *absent: str) -> Any:
    """`operation`'s `key` for the bucket, or None when the bucket has no such configuration."""
    found = call(ctx, s3, operation, absent=absent, Bucket=bucket)
    return found.get(key) if found else None


@action
def describe_bucket(args: DescribeBucketArgs, ctx: ActionContext) -> Outcome:
    """Archive and return a bucket's tags, versioning, logging, public access, encryption and object lock (read only)."""
    s3, bucket = aws_client("s3"), args.bucket
    public_access_block = _public_access_block(ctx, s3, bucket)  # also: the bucket exists
    versioning = call(ctx, s3, "get_bucket_versioning", Bucket=bucket)
    logging = _optional(ctx, s3, "get_bucket_logging", bucket, "LoggingEnabled")
    status = _optional(ctx, s3, "get_bucket_policy_status", bucket, "PolicyStatus", "NoSuchBucketPolicy")
    encryption = _optional(ctx, s3, "get_bucket_encryption", bucket, "ServerSideEncryptionConfiguration",
                           "ServerSideEncryptionConfigurationNotFoundError")
    lock = _optional(ctx, s3, "get_object_lock_configuration", bucket, "ObjectLockConfiguration",
                     "ObjectLockConfigurationNotFoundError")
    facts = {
        "bucket": bucket,
        "region": call(ctx, s3, "get_bucket_location", Bucket=bucket).get("LocationConstraint") or "us-east-1",
        **fact_tags(_optional(ctx, s3, "get_bucket_tagging", bucket, "TagSet", "NoSuchTagSet") or []),
        "versioning": versioning.get("Status") or "Disabled", "mfa_delete": versioning.get("MFADelete") or "Disabled",
        "access_logging": {"target_bucket": logging["TargetBucket"], "target_prefix": logging.get("TargetPrefix", ""),
                           "partitioned": "PartitionedPrefix" in logging.get("TargetObjectKeyFormat", {})}
        if logging else None,
        "public_access_block": public_access_block,
        "has_policy": status is not None, "policy_public": bool(status and status.get("IsPublic")),
        "encryption": [rule.get("ApplyServerSideEncryptionByDefault", {}) for rule in (encryption or {}).get("Rules", [])],
        "object_lock": lock,
    }
    return archive_facts(
        ctx, f"s3-bucket-{bucket}", facts, target=f"s3-bucket/{bucket}", source_system="aws-s3",
        message=f"bucket {bucket}: tenant {facts['tenant'] or 'untagged'}, classification "
                f"{facts['data_classification'] or 'untagged'}, versioning {facts['versioning']}, access logging "
                f"{'on' if logging else 'off'}, policy {'public' if facts['policy_public'] else 'not public'}",
    )


MAX_ACCESS_LOG_BYTES = 256 * 1024 * 1024  # read in total by one collection
ACCESS_LOG_DELAY = timedelta(hours=2)  # S3 delivers access logs within a few hours of the requests
# bucket_owner bucket [time] remote_ip requester request_id operation key "request_uri" status ...
_ACCESS_LINE = re.compile(r'^(\S+) (\S+) \[([^\]]+)\] (\S+) (\S+) (\S+) (\S+) (\S+) ("(?:[^"\\]|\\.)*"|-) (\S+)')
_ACCESS_FILE_TIME = re.compile(r"(\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2})-[^/]*$")


class AccessLogsArgs(WindowArgs):
    bucket: str = Field(..., min_length=3, max_length=63, description="Bucket whose server access logs to collect.")
    max_objects: int = Field(2000, ge=1, le=100_000, description="Read at most this many log objects (truncated).")


def _access_log_root(ctx: ActionContext, s3: Any, bucket: str) -> tuple[str, str, bool]:
    """The bucket's access log target bucket, the key prefix its days start with, whether partitioned by date."""
    logging = _optional(ctx, s3, "get_bucket_logging", bucket, "LoggingEnabled")
    if not logging:
        raise PermanentError(f"bucket {bucket} has no server access logging: nothing to collect (turn it on for the "
                             f"future; CloudTrail data events: aws.collect_s3_data_events)", provider="AWS s3",
                             code="NoAccessLogging")
    prefix = logging.get("TargetPrefix", "")
    if "PartitionedPrefix" in logging.get("TargetObjectKeyFormat", {}):
        account = call(ctx, aws_client("sts"), "get_caller_identity")["Account"]
        region = call(ctx, s3, "get_bucket_location", Bucket=bucket).get("LocationConstraint") or "us-east-1"
        return logging["TargetBucket"], f"{prefix}{account}/{region}/{bucket}/", True
    return logging["TargetBucket"], prefix, False


def _access_log_objects(ctx: ActionContext, s3: Any, target: str, root: str, partitioned: bool, start: datetime,
                        end: datetime, limit: int) -> tuple[list[dict[str, Any]], bool]:
    found: list[dict[str, Any]] = []
    day, last = start.date(), (end + ACCESS_LOG_DELAY).date()
    while day <= last and len(found) <= limit:
        day_prefix = f"{day:%Y/%m/%d}/{day:%Y-%m-%d}" if partitioned else f"{day:%Y-%m-%d}"
        for obj in pages(ctx, s3, "list_objects_v2", "Contents", token=("ContinuationToken", "NextContinuationToken"),
                         limit=limit + 1, Bucket=target, Prefix=root + day_prefix):
            stamp = _ACCESS_FILE_TIME.search(obj["Key"])
            moment = datetime.strptime(stamp[1] + "+0000", "%Y-%m-%d-%H-%M-%S%z") if stamp else None
            if moment is None or start <= moment <= end + ACCESS_LOG_DELAY:
                found.append(obj)
        day += timedelta(days=1)
    return found[:limit], len(found) > limit


def _in_window(line: str, start: datetime, end: datetime) -> bool:
    parsed = _ACCESS_LINE.match(line)
    if parsed is None:
        return True  # kept: an analyst reads what irp cannot parse
    try:
        return start <= datetime.strptime(parsed[3], "%d/%b/%Y:%H:%M:%S %z") <= end
    except ValueError:
        return True


@action
def collect_s3_access_logs(args: AccessLogsArgs, ctx: ActionContext) -> Outcome:
    """Archive a bucket's S3 server access log records for a window, from its logging target (read only)."""
    start, end = args.window(ctx)
    s3 = aws_client("s3")
    target, root, partitioned = _access_log_root(ctx, s3, args.bucket)
    objects, truncated = _access_log_objects(ctx, s3, target, root, partitioned, start, end, args.max_objects)
    lines: list[str] = []
    read = 0
    for obj in objects if not ctx.dry_run else []:
        if read + obj.get("Size", 0) > MAX_ACCESS_LOG_BYTES:
            truncated = True
            break
        body = call(ctx, s3, "get_object", Bucket=target, Key=obj["Key"])["Body"].read()
        read += len(body)
        lines += [redact_text(line) for line in body.decode("utf-8", "replace").splitlines()
                  if line.strip() and _in_window(line, start, end)]
    parsed = [m for m in map(_ACCESS_LINE.match, lines) if m]
    text_item = None
    if not ctx.dry_run:
        text_item = ctx.archive(f"actions/{ctx.stage.value}/{ctx.step}/s3-access-logs-{args.bucket}.log",
                                "".join(line + "\n" for line in lines).encode(), content_type="text/plain",
                                source_system="aws-s3", source_time=end.isoformat())
    source = {"bucket": args.bucket, "log_bucket": target, "prefix": root, "start": start.isoformat(),
              "end": end.isoformat(), "truncated": truncated, "records": text_item.name if text_item else None,
              "objects": [{"key": o["Key"], "etag": o.get("ETag"), "size": o.get("Size")} for o in objects]}
    return archive_facts(
        ctx, f"s3-access-logs-{args.bucket}", source, target=f"s3-bucket/{args.bucket}", source_system="aws-s3",
        summary={"count": len(lines), "objects": len(objects), "truncated": truncated,
                 "records": text_item.name if text_item else None,
                 "operations": dict(Counter(m[7] for m in parsed).most_common(20)),
                 "requesters": [r for r, _ in Counter(m[5] for m in parsed).most_common(50)],
                 "remote_ips": [r for r, _ in Counter(m[4] for m in parsed).most_common(50)]},
        message=(f"{len(objects)} access log object(s) of {args.bucket} to read" if ctx.dry_run else
                 f"{len(lines)} S3 access log record(s) of {args.bucket} from {len(objects)} object(s) archived")
                + (" (truncated)" if truncated else ""),
    )


# --- bucket policy statements --------------------------------------------------------------------

_POLICY_LIMIT = 20 * 1024  # S3's maximum bucket policy size
_PRINCIPAL = (r"^arn:aws[a-z-]*:(iam::[0-9]{12}:(user|role)/[A-Za-z0-9_+=,.@/-]+"
              r"|sts::[0-9]{12}:assumed-role/[A-Za-z0-9_+=,.@-]+/[A-Za-z0-9_+=,.@-]+)$")


class DenyPrincipalArgs(ActionArgs):
    bucket: Annotated[str, Target("bucket")] = Field(..., min_length=3, max_length=63, description="S3 bucket name.")
    principal_arn: Annotated[str, Target("aws_principal")] = Field(
        ..., pattern=_PRINCIPAL, max_length=2048,
        description="IAM user or role ARN, or an assumed-role session ARN (never an account root or *).")
    sid: str | None = Field(None, pattern=r"^[A-Za-z0-9]{1,100}$",
                            description="Statement id; default IrpDeny + the incident id + a hash of the principal.")


class PolicyStatementArgs(ActionArgs):
    bucket: Annotated[str, Target("bucket")] = Field(..., min_length=3, max_length=63, description="S3 bucket name.")
    sid: str = Field(..., pattern=r"^[A-Za-z0-9]{1,100}$", description="Sid of the statement to remove.")


def _bucket_policy(ctx: ActionContext, s3: Any, bucket: str) -> dict[str, Any] | None:
    if call(ctx, s3, "head_bucket", absent=("404", "NoSuchBucket"), Bucket=bucket) is None:
        raise PermanentError(f"no S3 bucket {bucket}", provider="AWS s3", code="NoSuchBucket")
    found = call(ctx, s3, "get_bucket_policy", absent=("NoSuchBucketPolicy",), Bucket=bucket)
    if not found:
        return None
    policy = json.loads(found["Policy"])
    statements = policy.get("Statement", [])
    return {**policy, "Statement": statements if isinstance(statements, list) else [statements]}


def _put_policy(ctx: ActionContext, s3: Any, bucket: str, policy: dict[str, Any] | None) -> dict[str, Any]:
    if policy is None or not policy["Statement"]:
        call(ctx, s3, "delete_bucket_policy", Bucket=bucket)
    else:
        call(ctx, s3, "put_bucket_policy", Bucket=bucket, Policy=json.dumps(policy))
    return {"policy": _bucket_policy(ctx, s3, bucket)}


def _is_caller(caller: str, principal: str) -> bool:
    """Whether `principal` is the identity irp runs as: its user, its session, or the role of its session."""
    if caller == principal:
        return True
    if ":assumed-role/" not in caller:
        return False
    account, role = caller.split(":")[4], caller.split(":assumed-role/")[1].split("/")[0]
    return principal.split(":")[4] == account and ":role/" in principal and principal.rsplit("/", 1)[-1] == role


@action
def deny_principal_on_bucket(args: DenyPrincipalArgs, ctx: ActionContext) -> Outcome:
    """Add a bucket policy statement denying one principal every S3 action on the bucket (rest of the policy kept)."""
    s3 = aws_client("s3")
    caller = call(ctx, aws_client("sts"), "get_caller_identity")["Arn"]
    if _is_caller(caller, args.principal_arn):
        raise PermanentError(f"{args.principal_arn} is the identity irp runs as ({caller}): denying it would lock "
                             "irp out of the bucket and of the undo", provider="AWS s3", code="SelfDeny")
    sid = args.sid or f"IrpDeny{re.sub(r'[^A-Za-z0-9]', '', ctx.incident.id)}" \
                      f"{hashlib.sha256(args.principal_arn.encode()).hexdigest()[:8]}"
    partition = args.principal_arn.split(":")[1]
    statement = {"Sid": sid, "Effect": "Deny", "Principal": {"AWS": args.principal_arn}, "Action": "s3:*",
                 "Resource": [f"arn:{partition}:s3:::{args.bucket}", f"arn:{partition}:s3:::{args.bucket}/*"]}
    current = _bucket_policy(ctx, s3, args.bucket)
    found = next((s for s in (current or {}).get("Statement", []) if s.get("Sid") == sid), None)
    if found is not None and found != statement:
        raise PermanentError(f"the policy of bucket {args.bucket} already has a statement {sid} that is not this deny: "
                             "give another sid", provider="AWS s3", code="DuplicateSid")
    wanted = {"Version": "2012-10-17", **(current or {})}
    wanted["Statement"] = [*wanted.get("Statement", []), statement] if found is None else wanted["Statement"]
    if len(json.dumps(wanted)) > _POLICY_LIMIT:
        raise PermanentError(f"the policy of bucket {args.bucket} would exceed S3's 20 KB limit with this statement",
                             provider="AWS s3", code="PolicyTooLarge")
    journal, before, replayed = Journal.begin(ctx, f"s3-bucket/{args.bucket}/policy/{sid}", {"policy": current},
                                              source_system="aws-s3")
    had = any(s.get("Sid") == sid for s in (before["policy"] or {}).get("Statement", []))
    undo = None if had else UndoPlan(action="aws.remove_bucket_policy_statement",
                                     args={"bucket": args.bucket, "sid": sid})
    return run_change(ctx, Change(
        journal=journal, source_system="aws-s3", before=before, done=found is not None, current={"policy": current},
        write=lambda: _put_policy(ctx, s3, args.bucket, wanted), redone=replayed and undo is not None, undo=undo,
        checks=lambda: ["s3:HeadBucket, s3:GetBucketPolicy, sts:GetCallerIdentity: bucket found, principal is not "
                        "irp itself (S3 has no DryRun)"],
        dry_run=f"dry run: would deny {args.principal_arn} every S3 action on bucket {args.bucket} (statement {sid})"
                + (" (already there)" if found is not None else ""),
        unchanged=f"bucket {args.bucket} already denies {args.principal_arn} (statement {sid}, {{why}}): nothing changed",
        changed=lambda _: f"bucket {args.bucket} now denies {args.principal_arn} every S3 action (statement {sid}); "
                          f"{len(wanted['Statement']) - 1} other statement(s) kept",
        details={"sid": sid},
    ))


@action
def remove_bucket_policy_statement(args: PolicyStatementArgs, ctx: ActionContext) -> Outcome:
    """Remove one statement, by Sid, from a bucket policy (undo of aws.deny_principal_on_bucket)."""
    s3 = aws_client("s3")
    current = _bucket_policy(ctx, s3, args.bucket)
    statements = (current or {}).get("Statement", [])
    kept = [s for s in statements if s.get("Sid") != args.sid]
    journal, before, _ = Journal.begin(ctx, f"s3-bucket/{args.bucket}/policy/{args.sid}", {"policy": current},
                                       source_system="aws-s3")
    return run_change(ctx, Change(
        journal=journal, source_system="aws-s3", before=before, done=len(kept) == len(statements),
        current={"policy": current}, write=lambda: _put_policy(ctx, s3, args.bucket, {**current, "Statement": kept}),
        checks=lambda: ["s3:HeadBucket and s3:GetBucketPolicy: bucket found (S3 has no DryRun)"],
        dry_run=f"dry run: would remove statement {args.sid} from the policy of bucket {args.bucket}",
        unchanged=f"the policy of bucket {args.bucket} has no statement {args.sid}: nothing changed",
        changed=lambda _: f"statement {args.sid} removed from the policy of bucket {args.bucket}"
                          + ("" if kept else " (it was the only one: policy deleted)"),
    ))
