"""CloudWatch Logs: run a Logs Insights query (VPC flow logs, application and WAF logs) as evidence.

The query text is the playbook's, a constant: values from the alert go in `values` and take the
place of `${name}` in the query, escaped as Insights literals ("text", numbers, ["lists"]), so an
alert can never change what the query does. Side effects: the query, its window and its results
archived under actions/<stage>/<step>/ (credentials redacted); a dry run starts no query.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

from pydantic import Field, StrictFloat, StrictInt, StrictStr, model_validator

from irp.actions.aws.clients import WindowArgs, archive_facts, aws_client, call
from irp.actions.base import CommaList, Outcome
from irp.actions.registry import ActionContext, action
from irp.errors import InvalidArgumentsError, PermanentError, TransientError
from irp.settings import get_settings

_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")
_DONE = {"Complete": "complete", "Failed": "failed", "Cancelled": "cancelled", "Timeout": "timed out"}

Scalar = StrictStr | StrictInt | StrictFloat  # no bool, no coercion: what the alert sent, typed
Value = Scalar | list[Scalar]


def _literal(value: Value) -> str:
    """`value` as a Logs Insights literal: a quoted, escaped string, a number, or a list of them."""
    if isinstance(value, list):
        return "[" + ", ".join(_literal(item) for item in value) + "]"
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} is not a string or a finite number")
    if isinstance(value, int | float):
        return repr(value)
    if any(ord(char) < 0x20 for char in value):
        raise ValueError(f"{value!r} holds a control character (newline, tab...)")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class LogsInsightsArgs(WindowArgs):
    log_groups: CommaList = Field(..., min_length=1, max_length=50, description="Log group names (up to 50).")
    query: str = Field(..., min_length=1, max_length=10_000, description="Logs Insights query, a constant: "
                       "${name} stands for values[name], escaped. Never a template reading alert data.")
    values: dict[str, Value] = Field(default_factory=dict, description="Values for the query's ${name} "
                                     "placeholders (alert data goes here), quoted and escaped.")
    limit: int = Field(1000, ge=1, le=10_000, description="Most result rows (Insights' own limit: 10,000).")
    wait_seconds: float | None = Field(None, gt=0, le=900, description="How long to wait for the results; "
                                       "default IRP_ACTION_DEADLINE_SECONDS.")

    @model_validator(mode="after")
    def _placeholders_match(self) -> LogsInsightsArgs:
        used = set(_PLACEHOLDER.findall(self.query))
        missing, unused = sorted(used - set(self.values)), sorted(set(self.values) - used)
        if missing:
            raise ValueError(f"query placeholders without a value: {', '.join(missing)}; values given: "
                             f"{', '.join(sorted(self.values)) or 'none'}")
        if unused:
            raise ValueError(f"values not used by the query (no ${{name}} for them): {', '.join(unused)}")
        for name, value in self.values.items():
            try:
                _literal(value)
            except ValueError as exc:
                raise ValueError(f"values.{name}: {exc}") from None
        return self

    def rendered(self) -> str:
        """The query with each ${name} replaced by its value as an escaped literal."""
        return _PLACEHOLDER.sub(lambda m: _literal(self.values[m[1]]), self.query)


def _rows(results: list[list[dict[str, str]]]) -> list[dict[str, str]]:
    return [{cell["field"]: cell.get("value") for cell in row if cell["field"] != "@ptr"} for row in results]


def _stop(ctx: ActionContext, logs: Any, query_id: str) -> None:
    try:
        call(ctx, logs, "stop_query", queryId=query_id)
    except (PermanentError, TransientError) as exc:  # the query ends by itself within 60 minutes
        ctx.record(f"could not stop Logs Insights query {query_id}: {exc}")


@action
def query_logs_insights(args: LogsInsightsArgs, ctx: ActionContext) -> Outcome:
    """Run a CloudWatch Logs Insights query over a window and archive it with its results (read only)."""
    if "query" in ctx.from_run_data:
        raise InvalidArgumentsError("aws.query_logs_insights: the query text reads alert, steps or incident data; "
                                    "write it as a constant and pass those values in `values` (${name} in the query)")
    start, end = args.window(ctx)
    logs = aws_client("logs")
    query = args.rendered()
    window = {"start": start.isoformat(), "end": end.isoformat()}
    if ctx.dry_run:
        for group in args.log_groups:
            found = call(ctx, logs, "describe_log_groups", logGroupNamePrefix=group, limit=50)["logGroups"]
            if group not in {g["logGroupName"] for g in found}:
                raise PermanentError(f"no log group {group}", provider="AWS logs", code="ResourceNotFoundException")
        return Outcome(target=f"logs/{','.join(args.log_groups)}", changed=False, dry_run=True,
                       message=f"dry run: would run a Logs Insights query on {len(args.log_groups)} log group(s)",
                       checks=["logs:DescribeLogGroups: every log group found"], details={"query": query, **window})
    query_id = call(ctx, logs, "start_query", logGroupNames=args.log_groups, queryString=query, limit=args.limit,
                    startTime=int(start.timestamp()), endTime=int(end.timestamp()))["queryId"]
    deadline = time.monotonic() + (args.wait_seconds or get_settings().action_deadline_seconds)
    delay = 0.5
    while True:
        answer = call(ctx, logs, "get_query_results", queryId=query_id)
        status = answer.get("status", "Unknown")
        if status in _DONE or time.monotonic() + delay > deadline:
            break
        time.sleep(delay)
        delay = min(delay * 2, 5)
    if status in ("Failed", "Cancelled", "Timeout"):
        raise PermanentError(f"Logs Insights query {query_id} {_DONE[status]} on {', '.join(args.log_groups)}",
                             provider="AWS logs", code=f"Query{status}")
    if status != "Complete":
        _stop(ctx, logs, query_id)
    rows = _rows(answer.get("results", []))
    matched = answer.get("statistics", {}).get("recordsMatched", 0)
    truncated = status != "Complete" or len(rows) >= args.limit or matched > len(rows)
    return archive_facts(
        ctx, f"logs-insights-{query_id}",
        {"log_groups": args.log_groups, "query": args.query, "values": args.values, "query_sent": query, **window,
         "query_id": query_id, "status": status, "statistics": answer.get("statistics", {}), "truncated": truncated,
         "results": rows},
        target=f"logs/{','.join(args.log_groups)}", source_system="aws-logs",
        summary={"query_id": query_id, "status": status, "count": len(rows), "truncated": truncated,
                 "records_matched": matched, "results": rows[:100]},
        message=f"Logs Insights query on {', '.join(args.log_groups)}: {len(rows)} row(s) archived"
                + (f" (not complete after the wait: {status}, stopped)" if status != "Complete" else "")
                + (" (truncated)" if truncated and status == "Complete" else ""),
    )
