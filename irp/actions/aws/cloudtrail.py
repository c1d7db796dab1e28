"""CloudTrail: archive the management events of an actor as evidence (read only).

Side effects: one evidence item per lookup under actions/<stage>/<step>/, credentials redacted.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import Field

from irp.actions.aws.clients import aws_client, call
from irp.actions.base import Outcome, slug
from irp.actions.registry import ActionArgs, ActionContext, action
from irp.models import utcnow
from irp.redaction import redact


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class CloudTrailArgs(ActionArgs):
    value: str = Field(..., min_length=1, description="The actor or thing to look up, e.g. a user name or key id.")
    attribute: Literal["Username", "AccessKeyId", "EventName", "ResourceName", "ResourceType", "EventSource",
                       "EventId", "ReadOnly"] = Field("Username", description="CloudTrail lookup attribute.")
    start: datetime | None = Field(None, description="Start of the window; default: detection minus lookback_hours.")
    end: datetime | None = Field(None, description="End of the window; default: now.")
    lookback_hours: float = Field(24, gt=0, le=2160, description="Window before detection when start is unset.")
    max_events: int = Field(1000, ge=1, le=50_000, description="Stop after this many events (truncated is set).")


@action
def lookup_cloudtrail_events(args: CloudTrailArgs, ctx: ActionContext) -> Outcome:
    """Archive the CloudTrail management events of an actor as evidence (read only)."""
    cloudtrail = aws_client("cloudtrail")
    end = _aware(args.end or utcnow())
    start = _aware(args.start or (ctx.incident.detected_at - timedelta(hours=args.lookback_hours)))
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
