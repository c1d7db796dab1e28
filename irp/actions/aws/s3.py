"""S3 actions: block a bucket's public access and put it back; restore an object version and remove it.

Side effects, not in dry runs: public access block configurations put or deleted; an earlier object
version copied over the latest (history kept), or one version deleted (S3 has no DryRun).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from irp.actions.aws.clients import aws_client, call
from irp.actions.base import Change, Journal, Outcome, UndoPlan, run_change
from irp.actions.registry import ActionArgs, ActionContext, Target, action
from irp.errors import PermanentError

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
