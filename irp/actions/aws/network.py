"""Blocking an address: aws.block_ip and aws.unblock_ip, in a WAFv2 IP set or a network ACL.

Side effects, not in dry runs: the address added to or removed from the IP set (read-modify-write
under WAF's lock token), or deny entries created in or deleted from the network ACL.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from irp.actions.aws.clients import aws_client, call, check_dry_run, classify
from irp.actions.base import Change, Journal, Outcome, UndoPlan, run_change, with_retries
from irp.actions.registry import ActionArgs, ActionContext, Target, action
from irp.errors import NotConfiguredError, PermanentError
from irp.settings import get_settings


def _network(value: str) -> str:
    """An IP address or CIDR as a normalised network; refuses networks too wide to block safely."""
    try:
        network = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or CIDR") from None
    minimum = 8 if network.version == 4 else 32
    if network.prefixlen < minimum:
        raise ValueError(f"{network} is wider than /{minimum}: refusing to block that much of the internet")
    return str(network)


def parse_wafv2_arn(arn: str, kind: str = "ipset") -> tuple[str, str, str, str]:
    """(region, scope, name, id) of arn:aws:wafv2:REGION:ACCOUNT:regional|global/KIND/NAME/ID (ipset, webacl)."""
    what = {"ipset": "IP set", "webacl": "web ACL"}[kind]
    wrong = f"{arn!r} is not a WAFv2 {what} ARN (arn:aws:wafv2:REGION:ACCOUNT:regional/{kind}/NAME/ID)"
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[2] != "wafv2":
        raise ValueError(wrong)
    resource = parts[5].split("/")
    if len(resource) != 4 or resource[1] != kind or resource[0] not in ("regional", "global"):
        raise ValueError(wrong)
    scope = "REGIONAL" if resource[0] == "regional" else "CLOUDFRONT"
    region = parts[3] if scope == "REGIONAL" else "us-east-1"
    return region, scope, resource[2], resource[3]


class BlockIpArgs(ActionArgs):
    cidr: Annotated[str, Target("cidr")] = Field(
        ..., description="IP address or CIDR to block, IPv4 (/8 or narrower) or IPv6 (/32 or narrower).")
    method: Literal["waf", "nacl"] = Field("waf", description="waf: add to the WAFv2 IP set; nacl: deny entries.")
    ip_set_arn: Annotated[str | None, Target("ip_set")] = Field(
        None, description="WAFv2 IP set ARN; default IRP_AWS_WAF_IP_SET_ARN.")
    network_acl_id: Annotated[str | None, Target("network_acl")] = Field(
        None, description="Network ACL id; default IRP_AWS_NETWORK_ACL_ID.")
    direction: Literal["ingress", "egress", "both"] = Field("both", description="nacl only: which traffic to deny.")
    rule_number: int | None = Field(None, ge=1, le=32766, description="nacl only: rule number (default: lowest free).")

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        return _network(value)

    @field_validator("ip_set_arn")
    @classmethod
    def _arn(cls, value: str | None) -> str | None:
        if value is not None:
            parse_wafv2_arn(value)
        return value


class UnblockIpArgs(ActionArgs):
    cidr: Annotated[str, Target("cidr")] = Field(..., description="IP address or CIDR to unblock.")
    method: Literal["waf", "nacl"] = Field(..., description="Where it was blocked.")
    ip_set_arn: Annotated[str | None, Target("ip_set")] = Field(
        None, description="WAFv2 IP set ARN; default IRP_AWS_WAF_IP_SET_ARN.")
    network_acl_id: Annotated[str | None, Target("network_acl")] = Field(
        None, description="Network ACL id; default IRP_AWS_NETWORK_ACL_ID.")
    rule_numbers: dict[Literal["ingress", "egress"], int] = Field(
        default_factory=dict, description="nacl only: the deny entries to delete (default: every deny of the cidr)."
    )

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        return _network(value)


def _ip_set(ctx: ActionContext, arn: str | None) -> tuple[Any, str, dict[str, str]]:
    arn = arn or get_settings().aws_waf_ip_set_arn
    if not arn:
        raise NotConfiguredError("WAF IP set: no ip_set_arn argument and IRP_AWS_WAF_IP_SET_ARN is unset")
    try:
        region, scope, name, set_id = parse_wafv2_arn(arn)
    except ValueError as exc:
        raise NotConfiguredError(str(exc)) from None
    return aws_client("wafv2", region=region), arn, {"Name": name, "Scope": scope, "Id": set_id}


def _waf_change(args: BlockIpArgs | UnblockIpArgs, ctx: ActionContext, add: bool) -> Outcome:
    waf, arn, ident = _ip_set(ctx, args.ip_set_arn)
    network = ipaddress.ip_network(args.cidr)

    def read() -> tuple[list[str], str, str, str | None]:
        found = call(ctx, waf, "get_ip_set", **ident)
        ip_set = found["IPSet"]
        return list(ip_set.get("Addresses", [])), found["LockToken"], ip_set["IPAddressVersion"], ip_set.get(
            "Description")

    addresses, _, version, _ = read()
    if (version == "IPV4") != (network.version == 4):
        raise PermanentError(f"IP set {ident['Name']} holds {version} addresses, not {args.cidr}",
                             provider="AWS wafv2", code="WAFInvalidParameterException")
    present = any(ipaddress.ip_network(a, strict=False) == network for a in addresses)
    journal, before, replayed = Journal.begin(ctx, f"wafv2-ipset/{ident['Name']}/{args.cidr}", {
        "ip_set_arn": arn, "present": present, "addresses": addresses}, source_system="aws-wafv2")
    undo = None
    if add and not before["present"]:
        undo = UndoPlan(action="aws.unblock_ip", args={"cidr": args.cidr, "method": "waf", "ip_set_arn": arn})

    def read_modify_write() -> list[str]:  # retried whole on WAFOptimisticLockException
        current, lock, _, description = read()
        kept = [a for a in current if ipaddress.ip_network(a, strict=False) != network]
        wanted = [*kept, args.cidr] if add else kept
        extra = {"Description": description} if description else {}
        waf.update_ip_set(**ident, Addresses=wanted, LockToken=lock, **extra)
        return wanted

    def write() -> dict[str, Any]:
        return {"present": add, "addresses": with_retries(ctx, "AWS wafv2", "update_ip_set", read_modify_write,
                                                           classify)}

    return run_change(ctx, Change(
        journal=journal, source_system="aws-wafv2", before=before, done=present == add, write=write,
        current={"present": present}, redone=replayed and before["present"] != add, undo=undo,
        dry_run=f"dry run: would {'block' if add else 'unblock'} {args.cidr} in WAF IP set {ident['Name']}"
                + (" (nothing to do)" if present == add else ""),
        checks=lambda: ["wafv2:GetIPSet: IP set found (WAF has no DryRun)"],
        unchanged=f"{args.cidr} is {'already' if add else 'not'} in WAF IP set {ident['Name']} ({{why}}): "
                  "nothing changed",
        changed=lambda _: f"{args.cidr} {'added to' if add else 'removed from'} WAF IP set {ident['Name']}",
    ))


def _nacl_entries(ctx: ActionContext, ec2: Any, acl_id: str) -> list[dict[str, Any]]:
    found = call(ctx, ec2, "describe_network_acls", NetworkAclIds=[acl_id])["NetworkAcls"]
    if not found:
        raise PermanentError(f"no network ACL {acl_id}", provider="AWS ec2", code="InvalidNetworkAclID.NotFound")
    return found[0]["Entries"]


def _deny_entry(entries: list[dict], cidr: str, egress: bool, number: int | None = None) -> dict | None:
    network = ipaddress.ip_network(cidr)
    for entry in entries:
        block = entry.get("CidrBlock") or entry.get("Ipv6CidrBlock")
        if (entry["Egress"] == egress and entry["RuleAction"] == "deny" and block
                and ipaddress.ip_network(block, strict=False) == network
                and (number is None or entry["RuleNumber"] == number)):
            return entry
    return None


def _rules(numbers: dict[str, int]) -> str:
    return ", ".join(f"{direction} rule {number}" for direction, number in numbers.items())


def _nacl_acl(args: BlockIpArgs | UnblockIpArgs) -> str:
    acl_id = args.network_acl_id or get_settings().aws_network_acl_id
    if not acl_id:
        raise NotConfiguredError("network ACL: no network_acl_id argument and IRP_AWS_NETWORK_ACL_ID is unset")
    return acl_id


def _nacl_writes(ctx: ActionContext, ec2: Any, acl_id: str, operation: str, entries: list[dict[str, Any]],
                 absent: tuple[str, ...] = ()) -> tuple[Callable[[], list[str]], Callable[[], list[dict[str, Any]]]]:
    """The dry run checks of `operation` on each entry, and its write returning the ACL's entries after."""

    def checks() -> list[str]:
        return [check_dry_run(ctx, ec2, operation, **entry) for entry in entries]

    def write() -> list[dict[str, Any]]:
        for entry in entries:
            call(ctx, ec2, operation, absent=absent, **entry)
        return _nacl_entries(ctx, ec2, acl_id)

    return checks, write


def _block_nacl(args: BlockIpArgs, ctx: ActionContext) -> Outcome:
    acl_id = _nacl_acl(args)
    ec2 = aws_client("ec2")
    entries = _nacl_entries(ctx, ec2, acl_id)
    directions = ["ingress", "egress"] if args.direction == "both" else [args.direction]
    present = {d: _deny_entry(entries, args.cidr, d == "egress") for d in directions}
    journal, before, replayed = Journal.begin(ctx, f"network-acl/{acl_id}/{args.cidr}", {
        "network_acl_id": acl_id, "denied": {d: bool(e) for d, e in present.items()}, "entries": entries,
    }, source_system="aws-ec2")
    plan: dict[str, int] = {}
    for direction in directions:
        if present[direction]:
            continue
        taken = {e["RuleNumber"] for e in entries if e["Egress"] == (direction == "egress")}
        number = args.rule_number or next(n for n in range(1, 32767) if n not in taken)
        if number in taken:
            raise PermanentError(f"rule number {number} is taken in the {direction} rules of {acl_id}",
                                 provider="AWS ec2", code="NetworkAclEntryAlreadyExists")
        plan[direction] = number
    family = "Ipv6CidrBlock" if ipaddress.ip_network(args.cidr).version == 6 else "CidrBlock"
    checks, write = _nacl_writes(ctx, ec2, acl_id, "create_network_acl_entry", [
        {"NetworkAclId": acl_id, "RuleNumber": number, "Protocol": "-1", "RuleAction": "deny",
         "Egress": direction == "egress", family: args.cidr} for direction, number in plan.items()])
    ours = {d: (present[d]["RuleNumber"] if present[d] else plan[d]) for d in directions
            if not before["denied"][d]}
    undo = None
    if ours:
        undo = UndoPlan(action="aws.unblock_ip", args={"cidr": args.cidr, "method": "nacl",
                                                       "network_acl_id": acl_id, "rule_numbers": ours})
    return run_change(ctx, Change(
        journal=journal, source_system="aws-ec2", before=before, done=not plan, checks=checks,
        write=lambda: {"network_acl_id": acl_id, "entries": write()},
        current={"denied": dict.fromkeys(directions, True)}, redone=replayed and bool(ours), undo=undo,
        dry_run=f"dry run: would deny {args.cidr} in {acl_id} ({_rules(plan)})" if plan
        else f"dry run: {args.cidr} is already denied in {acl_id}",
        unchanged=f"{args.cidr} is already denied in {acl_id} ({{why}}): nothing changed",
        changed=lambda _: f"{args.cidr} denied in {acl_id} ({_rules(plan)}); rules with lower numbers still apply first",
        dry_details={"rule_numbers": plan}, changed_details={"rule_numbers": plan},
    ))


def _unblock_nacl(args: UnblockIpArgs, ctx: ActionContext) -> Outcome:
    acl_id = _nacl_acl(args)
    ec2 = aws_client("ec2")
    entries = _nacl_entries(ctx, ec2, acl_id)
    journal, before, _ = Journal.begin(ctx, f"network-acl/{acl_id}/{args.cidr}",
                                            {"network_acl_id": acl_id, "entries": entries}, source_system="aws-ec2")
    wanted = args.rule_numbers or {"ingress": None, "egress": None}
    found = {d: _deny_entry(entries, args.cidr, d == "egress", n) for d, n in wanted.items()}
    delete = {d: e["RuleNumber"] for d, e in found.items() if e}
    checks, write = _nacl_writes(ctx, ec2, acl_id, "delete_network_acl_entry", [
        {"NetworkAclId": acl_id, "RuleNumber": n, "Egress": d == "egress"} for d, n in delete.items()],
        absent=("InvalidNetworkAclEntry.NotFound",))
    return run_change(ctx, Change(
        journal=journal, source_system="aws-ec2", before=before, done=not delete, checks=checks,
        write=lambda: {"entries": write()},
        current={"entries": entries},
        dry_run=f"dry run: would delete {len(delete)} deny entr(ies) of {args.cidr} in {acl_id}",
        unchanged=f"{args.cidr} has no deny entry left in {acl_id}: nothing changed",
        changed=lambda _: f"deny entries of {args.cidr} deleted from {acl_id} ({_rules(delete)})",
    ))


@action
def block_ip(args: BlockIpArgs, ctx: ActionContext) -> Outcome:
    """Block an IP address or CIDR: add it to a WAFv2 IP set, or deny it in a network ACL."""
    return _waf_change(args, ctx, add=True) if args.method == "waf" else _block_nacl(args, ctx)


@action
def unblock_ip(args: UnblockIpArgs, ctx: ActionContext) -> Outcome:
    """Remove a block set by aws.block_ip (from the WAFv2 IP set or the network ACL)."""
    return _waf_change(args, ctx, add=False) if args.method == "waf" else _unblock_nacl(args, ctx)
