"""CloudTrail: archive the management events of an actor, and the S3 data events of a bucket (read only).

Management events come from LookupEvents (90 days, management only). S3 data events (GetObject,
PutObject, DeleteObject...) are only in the log files a trail with data event selectors delivers
to its S3 bucket: aws.collect_s3_data_events finds that trail, lists its files for the window
(AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/), reads them and keeps the bucket's events.

Side effects: one evidence item per collection under actions/<stage>/<step>/, credentials redacted.
"""

from __future__ import annotations

import gzip
import io
import json
import re
from collections import Counter
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field

from irp.actions.aws.clients import WindowArgs, archive_facts, aws_client, call, pages
from irp.actions.base import Outcome, slug
from irp.actions.registry import ActionContext, action
from irp.errors import PermanentError
from irp.redaction import redact

MAX_LOG_FILE_BYTES = 64 * 1024 * 1024  # one CloudTrail log file, uncompressed (AWS's are a few MB)
DELIVERY_DELAY = timedelta(hours=1)  # CloudTrail delivers a file within ~15 minutes of its events
_FILE_TIME = re.compile(r"_(\d{8}T\d{4})Z_")  # <account>_CloudTrail_<region>_20261206T2355Z_<id>.json.gz


class CloudTrailArgs(WindowArgs):
    value: str = Field(..., min_length=1, description="The actor or thing to look up, e.g. a user name or key id.")
    attribute: Literal["Username", "AccessKeyId", "EventName", "ResourceName", "ResourceType", "EventSource",
                       "EventId", "ReadOnly"] = Field("Username", description="CloudTrail lookup attribute.")
    max_events: int = Field(1000, ge=1, le=50_000, description="Stop after this many events (truncated is set).")


@action
def lookup_cloudtrail_events(args: CloudTrailArgs, ctx: ActionContext) -> Outcome:
    """Archive the CloudTrail management events of an actor as evidence (read only)."""
    cloudtrail = aws_client("cloudtrail")
    start, end = args.window(ctx)
    query = {"LookupAttributes": [{"AttributeKey": args.attribute, "AttributeValue": args.value}],
             "StartTime": start, "EndTime": end}
    target = f"cloudtrail/{args.attribute}/{args.value}"
    if ctx.dry_run:
        call(ctx, cloudtrail, "lookup_events", MaxResults=1, **query)
        ctx.record(f"dry run: CloudTrail lookup of {args.attribute}={args.value} is allowed", kind="note")
        return Outcome(target=target, changed=False, dry_run=True,
                       message=f"dry run: would archive CloudTrail events of {args.attribute}={args.value}",
                       checks=["cloudtrail:LookupEvents: allowed (one event read)"])
    events: list[dict[str, Any]] = []
    token = None
    truncated = False
    while True:
        paging = {"NextToken": token} if token else {}
        page = call(ctx, cloudtrail, "lookup_events", MaxResults=50, **query, **paging)
        events.extend(page.get("Events", []))
        token = page.get("NextToken")
        if len(events) >= args.max_events:
            truncated = bool(token) or len(events) > args.max_events
            events = events[: args.max_events]
            break
        if not token:
            break
    names = Counter(e.get("EventName", "") for e in events)
    sources: Counter[str] = Counter()
    for event in events:
        try:
            detail = json.loads(event.get("CloudTrailEvent") or "{}")
        except ValueError:
            continue
        if detail.get("sourceIPAddress"):
            sources[detail["sourceIPAddress"]] += 1
    item = ctx.archive_json(
        f"actions/{ctx.stage.value}/{ctx.step}/cloudtrail-{slug(args.attribute)}-{slug(args.value)}.json",
        {"query": {"attribute": args.attribute, "value": args.value, "start": start.isoformat(),
                   "end": end.isoformat()}, "truncated": truncated, "events": redact(events)},  # sessionToken of AssumeRole
        source_system="aws-cloudtrail", source_time=end.isoformat(),
    )
    outcome = Outcome(
        target=target, changed=False,
        message=f"{len(events)} CloudTrail event(s) of {args.attribute}={args.value} archived"
                + (" (truncated)" if truncated else ""),
        details={"count": len(events), "truncated": truncated, "evidence": item.name, "sha256": item.sha256,
                 "event_names": dict(names.most_common(20)), "source_ips": [ip for ip, _ in sources.most_common(50)],
                 "first": min((e["EventTime"] for e in events), default=None),
                 "last": max((e["EventTime"] for e in events), default=None)},
    )
    ctx.record(outcome.message, kind="evidence", evidence=item.name)
    return outcome


class S3DataEventsArgs(WindowArgs):
    bucket: str = Field(..., min_length=3, max_length=63, description="Bucket whose object-level events to collect.")
    key_prefix: str = Field("", description="Only objects whose key starts with this.")
    principal: str | None = Field(None, min_length=1, description="Only events of this user name, access key id, "
                                  "principal id or ARN.")
    trail: str | None = Field(None, min_length=3, description="Trail name or ARN; default: the first trail that "
                              "logs S3 data events for the bucket.")
    region: str | None = Field(None, min_length=1, description="Region of the log files; default: the bucket's.")
    max_objects: int = Field(2000, ge=1, le=100_000, description="Read at most this many log files (truncated).")
    max_events: int = Field(10_000, ge=1, le=200_000, description="Keep at most this many events (truncated).")


def _logs_bucket_arns(selectors: dict[str, Any]) -> list[str] | None:
    """The S3 ARN prefixes a trail's selectors log data events for ([""]: every bucket), or None."""
    prefixes: list[str] = []
    for selector in selectors.get("EventSelectors") or []:
        for resource in selector.get("DataResources", []):
            if resource.get("Type") == "AWS::S3::Object":
                prefixes += [value if value not in ("arn:aws:s3", "arn:aws:s3:::") else "" for value in resource["Values"]]
    for selector in selectors.get("AdvancedEventSelectors") or []:
        fields = {f["Field"]: f for f in selector.get("FieldSelectors", [])}
        if (fields.get("eventCategory", {}).get("Equals") == ["Data"]
                and "AWS::S3::Object" in fields.get("resources.type", {}).get("Equals", [])):
            arn = fields.get("resources.ARN", {})
            prefixes += arn.get("StartsWith", []) + arn.get("Equals", []) if arn.get("StartsWith") or arn.get("Equals") else [""]
    return prefixes or None


def _find_trail(ctx: ActionContext, cloudtrail: Any, args: S3DataEventsArgs) -> dict[str, Any]:
    trails = call(ctx, cloudtrail, "describe_trails", includeShadowTrails=True)["trailList"]
    if args.trail:
        trails = [t for t in trails if args.trail in (t["Name"], t["TrailARN"])]
        if not trails:
            raise PermanentError(f"no CloudTrail trail {args.trail}", provider="AWS cloudtrail", code="TrailNotFound")
    wanted = f"arn:aws:s3:::{args.bucket}/{args.key_prefix}"
    for trail in trails:
        selectors = call(ctx, cloudtrail, "get_event_selectors", TrailName=trail["TrailARN"])
        prefixes = _logs_bucket_arns(selectors)
        if prefixes and any(wanted.startswith(p) or p.startswith(wanted) for p in prefixes):
            return trail
    raise PermanentError(f"no CloudTrail trail logs S3 data events for bucket {args.bucket}: add a data event "
                         f"selector (AWS::S3::Object) to a trail; management events are in aws.lookup_cloudtrail_events",
                         provider="AWS cloudtrail", code="NoDataEventTrail")


def _log_keys(ctx: ActionContext, s3: Any, trail: dict[str, Any], region: str, start: datetime, end: datetime,
              limit: int) -> tuple[list[dict[str, Any]], bool]:
    """The trail's log files for the window, oldest first, at most `limit` (and whether more were left)."""
    account = trail["TrailARN"].split(":")[4]
    base = (trail.get("S3KeyPrefix") or "").strip("/")
    root = f"{base + '/' if base else ''}AWSLogs/{account}/CloudTrail/{region}/"
    files: list[dict[str, Any]] = []
    day, last = start.date(), (end + DELIVERY_DELAY).date()
    while day <= last and len(files) <= limit:
        listed = pages(ctx, s3, "list_objects_v2", "Contents", token=("ContinuationToken", "NextContinuationToken"),
                       limit=limit + 1, Bucket=trail["S3BucketName"], Prefix=f"{root}{day:%Y/%m/%d}/")
        for obj in listed:
            stamp = _FILE_TIME.search(obj["Key"])
            moment = datetime.strptime(stamp[1] + "+0000", "%Y%m%dT%H%M%z") if stamp else None
            if moment is None or start <= moment <= end + DELIVERY_DELAY:
                files.append(obj)
        day += timedelta(days=1)
    return files[:limit], len(files) > limit


def _read_log(ctx: ActionContext, s3: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    body = call(ctx, s3, "get_object", Bucket=bucket, Key=key)["Body"].read()
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(body)) as unzipped:
            text = unzipped.read(MAX_LOG_FILE_BYTES + 1)
    except (OSError, EOFError):
        text = body  # delivered uncompressed
    if len(text) > MAX_LOG_FILE_BYTES:
        raise PermanentError(f"CloudTrail log file s3://{bucket}/{key} is over {MAX_LOG_FILE_BYTES} bytes uncompressed",
                             provider="AWS s3", code="LogFileTooLarge")
    try:
        return json.loads(text).get("Records", [])
    except (ValueError, AttributeError):
        ctx.record(f"s3://{bucket}/{key} is not a CloudTrail log file (no Records): skipped")
        return []


def _wanted(event: dict[str, Any], args: S3DataEventsArgs, start: datetime, end: datetime) -> bool:
    if event.get("eventSource") != "s3.amazonaws.com" or event.get("eventCategory", "Data") != "Data":
        return False
    params = event.get("requestParameters") or {}
    if params.get("bucketName") != args.bucket or not str(params.get("key", "")).startswith(args.key_prefix):
        return False
    try:
        moment = datetime.fromisoformat(event["eventTime"].replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return False
    if not start <= moment <= end:
        return False
    if args.principal is None:
        return True
    who = event.get("userIdentity") or {}
    issuer = (who.get("sessionContext") or {}).get("sessionIssuer") or {}
    return args.principal in (who.get("userName"), who.get("accessKeyId"), who.get("principalId"), who.get("arn"),
                              issuer.get("userName"), issuer.get("arn"))


@action
def collect_s3_data_events(args: S3DataEventsArgs, ctx: ActionContext) -> Outcome:
    """Archive a bucket's S3 data events (GetObject, PutObject...) for a window from its trail's log files."""
    start, end = args.window(ctx)
    cloudtrail, s3 = aws_client("cloudtrail"), aws_client("s3")
    trail = _find_trail(ctx, cloudtrail, args)
    region = args.region or (call(ctx, s3, "get_bucket_location", Bucket=args.bucket).get("LocationConstraint")
                             or "us-east-1")
    files, truncated = _log_keys(ctx, s3, trail, region, start, end, args.max_objects)
    events: list[dict[str, Any]] = []
    if not ctx.dry_run:
        for obj in files:
            events += [e for e in _read_log(ctx, s3, trail["S3BucketName"], obj["Key"]) if _wanted(e, args, start, end)]
            if len(events) > args.max_events:
                truncated, events = True, events[: args.max_events]
                break
    events.sort(key=lambda e: e["eventTime"])
    ips = Counter(e.get("sourceIPAddress") for e in events)
    who = Counter((e.get("userIdentity") or {}).get("arn") for e in events)
    keys = Counter((e.get("requestParameters") or {}).get("key") for e in events)
    source = {"trail": trail["TrailARN"], "log_bucket": trail["S3BucketName"], "region": region,
              "files": [{"key": f["Key"], "etag": f.get("ETag"), "size": f.get("Size")} for f in files]}
    query = {"bucket": args.bucket, "key_prefix": args.key_prefix, "principal": args.principal,
             "start": start.isoformat(), "end": end.isoformat()}
    return archive_facts(
        ctx, f"s3-data-events-{args.bucket}", {"query": query, "source": source, "truncated": truncated,
                                                "events": events},
        target=f"s3-bucket/{args.bucket}", source_system="aws-cloudtrail",
        summary={"count": len(events), "truncated": truncated, "trail": trail["TrailARN"], "files": len(files),
                 "event_names": dict(Counter(e.get("eventName") for e in events).most_common(20)),
                 "principals": [p for p, _ in who.most_common(50) if p], "source_ips": [i for i, _ in ips.most_common(50) if i],
                 "keys": [k for k, _ in keys.most_common(100) if k],
                 "first": events[0]["eventTime"] if events else None, "last": events[-1]["eventTime"] if events else None},
        message=(f"{len(files)} log file(s) of {trail['Name']} to read for {args.bucket}" if ctx.dry_run else
                 f"{len(events)} S3 data event(s) on {args.bucket} from {len(files)} log file(s) of {trail['Name']} "
                 "archived") + (" (truncated)" if truncated else ""),
    )
