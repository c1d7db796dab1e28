"""WAFv2 web ACL rules: aws.add_rate_limit_rule against floods, aws.remove_waf_rule (its undo).

Side effects, not in dry runs: a rate-based rule (requests per source IP over 5 minutes, block above
the limit) added to or removed from a web ACL. UpdateWebACL replaces the whole ACL, so every write
is a read-modify-write under the ACL's LockToken, retried whole when another writer got there first
(WAFOptimisticLockException), and carries the ACL's other settings back unchanged. Capacity: a
rate-based rule with no scope-down statement costs 2 WCUs; the rule is refused when the ACL would
exceed `capacity_limit`. WAF has no DryRun.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field, field_validator

from irp.actions.aws.clients import aws_client, call, classify
from irp.actions.aws.network import parse_wafv2_arn
from irp.actions.base import Change, Journal, Outcome, UndoPlan, run_change, slug, with_retries
from irp.actions.registry import ActionArgs, ActionContext, Target, action
from irp.errors import NotConfiguredError, PermanentError
from irp.settings import get_settings

RATE_RULE_WCU = 2  # AWS WAF: a rate-based statement without scope-down statement
_KEPT = ("Description", "CustomResponseBodies", "CaptchaConfig", "ChallengeConfig", "TokenDomains",
         "AssociationConfig")  # settings UpdateWebACL would reset when left out


def _arn(value: str | None) -> str | None:
    if value is not None:
        parse_wafv2_arn(value, "webacl")
    return value


class RateRuleArgs(ActionArgs):
    web_acl_arn: Annotated[str | None, Target("web_acl")] = Field(
        None, description="WAFv2 web ACL ARN; default IRP_AWS_WAF_WEB_ACL_ARN.")
    limit: int = Field(..., ge=10, le=2_000_000_000,
                       description="Requests per source IP in 5 minutes above which that IP is blocked.")
    rule_name: str | None = Field(None, pattern=r"^[\w-]{1,128}$",
                                  description="Rule name (default irp-rate-INCIDENT); a second run finds it by name.")
    priority: int | None = Field(None, ge=0, description="Rule priority, lower first; default: the lowest free one.")
    capacity_limit: int = Field(1500, ge=1, le=5000,
                                description="Refuse when the web ACL would use more WCUs (AWS's base maximum: 1500).")

    _check_arn = field_validator("web_acl_arn")(_arn)


class RemoveRuleArgs(ActionArgs):
    web_acl_arn: Annotated[str | None, Target("web_acl")] = Field(
        None, description="WAFv2 web ACL ARN; default IRP_AWS_WAF_WEB_ACL_ARN.")
    rule_name: str = Field(..., pattern=r"^[\w-]{1,128}$", description="Name of the rule to remove.")

    _check_arn = field_validator("web_acl_arn")(_arn)


def _web_acl(arn: str | None) -> tuple[Any, str, dict[str, str]]:
    arn = arn or get_settings().aws_waf_web_acl_arn
    if not arn:
        raise NotConfiguredError("WAF web ACL: no web_acl_arn argument and IRP_AWS_WAF_WEB_ACL_ARN is unset")
    try:
        region, scope, name, acl_id = parse_wafv2_arn(arn, "webacl")
    except ValueError as exc:
        raise NotConfiguredError(f"IRP_AWS_WAF_WEB_ACL_ARN: {exc}") from None
    return aws_client("wafv2", region=region), arn, {"Name": name, "Scope": scope, "Id": acl_id}


def _clean(value: Any) -> Any:
    """A structure read from WAF without its null fields (UpdateWebACL refuses them)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _rate_rule(name: str, priority: int, limit: int) -> dict[str, Any]:
    return {"Name": name, "Priority": priority, "Action": {"Block": {}},
            "Statement": {"RateBasedStatement": {"Limit": limit, "AggregateKeyType": "IP"}},
            "VisibilityConfig": {"SampledRequestsEnabled": True, "CloudWatchMetricsEnabled": True, "MetricName": name}}


def _same_rule(found: dict[str, Any], limit: int) -> bool:
    rate = found.get("Statement", {}).get("RateBasedStatement") or {}
    return (rate.get("Limit") == limit and rate.get("AggregateKeyType") == "IP" and "ScopeDownStatement" not in rate
            and "Block" in (found.get("Action") or {}))


def _update(ctx: ActionContext, waf: Any, ident: dict[str, str], edit: Callable[[list[dict]], list[dict]]) -> dict:
    """Read the web ACL, write it back with `edit(rules)`, under its lock token (retried when lost); the ACL after."""

    def read_modify_write() -> None:
        found = call(ctx, waf, "get_web_acl", **ident)
        acl = _clean(found["WebACL"])
        kept = {key: acl[key] for key in _KEPT if acl.get(key) not in (None, "", {}, [])}
        waf.update_web_acl(**ident, DefaultAction=acl["DefaultAction"], VisibilityConfig=acl["VisibilityConfig"],
                           Rules=edit(acl.get("Rules", [])), LockToken=found["LockToken"], **kept)

    with_retries(ctx, "AWS wafv2", "update_web_acl", read_modify_write, classify)
    return _summary(call(ctx, waf, "get_web_acl", **ident)["WebACL"])


def _summary(acl: dict[str, Any]) -> dict[str, Any]:
    return {"capacity": acl.get("Capacity"), "rules": [_clean(r) for r in acl.get("Rules", [])]}


@action
def add_rate_limit_rule(args: RateRuleArgs, ctx: ActionContext) -> Outcome:
    """Add a WAFv2 rate-based rule to a web ACL: block each source IP above `limit` requests per 5 minutes."""
    waf, arn, ident = _web_acl(args.web_acl_arn)
    name = args.rule_name or slug(f"irp-rate-{ctx.incident.id}")
    acl = call(ctx, waf, "get_web_acl", **ident)["WebACL"]
    current = _summary(acl)
    found = next((r for r in current["rules"] if r["Name"] == name), None)
    if found is not None and not _same_rule(found, args.limit):
        raise PermanentError(f"web ACL {ident['Name']} already has a rule named {name!r} that is not a rate limit of "
                             f"{args.limit} per IP with block: choose another rule_name, or remove it first",
                             provider="AWS wafv2", code="DuplicateRuleName")
    taken = {r["Priority"] for r in current["rules"]}
    priority = args.priority if args.priority is not None else next(n for n in range(len(taken) + 1) if n not in taken)
    if found is None and priority in taken:
        raise PermanentError(f"priority {priority} is taken in web ACL {ident['Name']}; taken: {sorted(taken)}",
                             provider="AWS wafv2", code="DuplicatePriority")
    needed = (current["capacity"] or 0) + RATE_RULE_WCU
    if found is None and needed > args.capacity_limit:
        raise PermanentError(f"web ACL {ident['Name']} uses {current['capacity']} WCUs: a rate-based rule "
                             f"({RATE_RULE_WCU}) would bring it to {needed}, over capacity_limit {args.capacity_limit}",
                             provider="AWS wafv2", code="WAFLimitsExceededException")
    journal, before, replayed = Journal.begin(ctx, f"wafv2-webacl/{ident['Name']}/{name}",
                                              {"web_acl_arn": arn, "rule": found, **current}, source_system="aws-wafv2")
    undo = None
    if before["rule"] is None:
        undo = UndoPlan(action="aws.remove_waf_rule", args={"web_acl_arn": arn, "rule_name": name})
    rule = _rate_rule(name, priority, args.limit)
    what = f"rate-based rule {name} (block above {args.limit} requests per IP in 5 minutes, priority {priority})"
    return run_change(ctx, Change(
        journal=journal, source_system="aws-wafv2", before=before, done=found is not None,
        write=lambda: _update(ctx, waf, ident, lambda rules: [*[r for r in rules if r["Name"] != name], rule]),
        current=current, redone=replayed and undo is not None, undo=undo,
        checks=lambda: ["wafv2:GetWebACL: web ACL found, name, priority and capacity checked (WAF has no DryRun)"],
        dry_run=f"dry run: would add {what} to web ACL {ident['Name']}" + (" (already there)" if found else ""),
        unchanged=f"web ACL {ident['Name']} already has rate-based rule {name} ({{why}}): nothing changed",
        changed=lambda after: f"{what} added to web ACL {ident['Name']} (now {after['capacity']} WCUs); rules with a "
                              "lower priority still apply first",
        details={"rule_name": name, "priority": found["Priority"] if found else priority},
    ))


@action
def remove_waf_rule(args: RemoveRuleArgs, ctx: ActionContext) -> Outcome:
    """Remove a rule from a WAFv2 web ACL by name (undo of aws.add_rate_limit_rule)."""
    waf, arn, ident = _web_acl(args.web_acl_arn)
    current = _summary(call(ctx, waf, "get_web_acl", **ident)["WebACL"])
    found = next((r for r in current["rules"] if r["Name"] == args.rule_name), None)
    journal, before, _ = Journal.begin(ctx, f"wafv2-webacl/{ident['Name']}/{args.rule_name}",
                                       {"web_acl_arn": arn, "rule": found, **current}, source_system="aws-wafv2")
    return run_change(ctx, Change(
        journal=journal, source_system="aws-wafv2", before=before, done=found is None, current=current,
        write=lambda: _update(ctx, waf, ident, lambda rules: [r for r in rules if r["Name"] != args.rule_name]),
        checks=lambda: ["wafv2:GetWebACL: web ACL found (WAF has no DryRun)"],
        dry_run=f"dry run: would remove rule {args.rule_name} from web ACL {ident['Name']}"
                + ("" if found else " (not there)"),
        unchanged=f"web ACL {ident['Name']} has no rule {args.rule_name}: nothing changed",
        changed=lambda _: f"rule {args.rule_name} removed from web ACL {ident['Name']}",
    ))
