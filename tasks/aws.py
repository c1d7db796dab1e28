"""Containment, evidence and restore actions on AWS, through boto3 (policy §6).

Side effects, only when the step is not a dry run: IAM access keys deactivated and inline deny
policies put on users and roles; EC2 instances moved into an isolation security group, protected
from termination and tagged (never stopped); EBS snapshots created; deny entries added to a WAFv2
IP set or a network ACL; S3 public access blocks set; S3 object versions copied over the latest;
Secrets Manager secrets rotated. Reads only: CloudTrail event lookups. Every action archives the
target's state before and after under actions/<stage>/<step>/ and returns an `Outcome` whose
`undo` names the action that reverses it.

Clients come from irp.aws.aws_client, when an action runs (credentials from the standard chain or
the IRP_AWS_CREDENTIALS_BLOCK block; botocore's own retries off): `with_retries` retries throttling,
5xx and timeouts with jittered backoff and never access denied or validation errors. Secret values
are never logged, returned or archived.
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from botocore.exceptions import ClientError
from pydantic import Field, field_validator

from irp.aws import aws_client, aws_error, aws_session
from irp.engine.target_rules import check_protected
from irp.errors import NotConfiguredError, PermanentError
from irp.models import utcnow
from irp.redaction import redact
from irp.settings import get_settings
from tasks.integrations import (
    CommaList,
    Failure,
    Journal,
    Outcome,
    UndoPlan,
    slug,
    third_party_failed,
    with_retries,
)
from tasks.registry import ActionArgs, ActionContext, Target, action, requires

TAG_QUARANTINE = "irp:quarantine"
TAG_INCIDENT = "irp:incident"
DENY_ALL_POLICY = "irp-deny-all"
REVOKE_POLICY = "AWSRevokeOlderSessions"  # the name the IAM console uses for the same policy

requires("aws", aws_session)  # preflight: AWS credentials and region

# --- calls ---------------------------------------------------------------------------------------


def classify(exc: BaseException) -> Failure | None:
    """Transient (throttling, 5xx, timeouts, lost connections) or not; None for non-AWS errors."""
    error = aws_error(exc)
    if error is None or error.kind == "other":
        return None
    if isinstance(exc, ClientError):
        code = error.code or "Unknown"
        text = f"{code}: {error.message}" if error.message else code
        if error.kind == "throttled":
            return Failure(True, code, f"throttled ({text})")
        if error.kind == "unavailable":
            return Failure(True, code, f"{text} (HTTP {error.status})")
        return Failure(False, code, text)
    if error.kind in ("no_credentials", "not_configured"):
        return Failure(False, error.code, error.message, not_configured=True)
    if error.kind == "timeout":
        return Failure(True, "Timeout", f"timed out ({exc})")
    if error.kind == "connection":
        return Failure(True, "ConnectionError", f"connection failed ({exc})")
    return Failure(False, "ParamValidationError", f"invalid request: {exc}")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _provider(client: Any) -> str:
    return f"AWS {client.meta.service_model.service_name}"


def _call(ctx: ActionContext, client: Any, operation: str, *, absent: tuple[str, ...] = (), **kwargs: Any) -> Any:
    """`client.operation(**kwargs)` with retries; None when the error code is one of `absent`."""

    def once() -> Any:
        try:
            return getattr(client, operation)(**kwargs)
        except ClientError as exc:
            if _code(exc) in absent:
                return None
            raise

    return with_retries(ctx, _provider(client), operation, once, classify)


def _dry_run(ctx: ActionContext, client: Any, operation: str, **kwargs: Any) -> str:
    """Ask AWS whether `operation` would be allowed (DryRun=True); PermanentError when it is not."""

    def once() -> str:
        try:
            getattr(client, operation)(DryRun=True, **kwargs)
        except ClientError as exc:
            if _code(exc) == "DryRunOperation":
                return f"{operation}: allowed (AWS DryRun)"
            raise
        return ""

    provider = _provider(client)
    checked = with_retries(ctx, provider, f"{operation} (DryRun)", once, classify)
    if not checked:  # the API answered as if it had acted: never report that as a harmless check
        failure = Failure(False, "DryRunIgnored", f"{operation} did not honour DryRun and may have made the change")
        third_party_failed(ctx, provider, f"{operation} (DryRun)", failure, 1)
        raise PermanentError(f"{provider} {operation} did not honour DryRun: check {kwargs} by hand",
                             provider=provider, code="DryRunIgnored")
    return checked


def _finish(ctx: ActionContext, journal: Journal, outcome: Outcome, *, source_system: str) -> Outcome:
    """Archive the state after, put the outcome on the timeline, return it."""
    if outcome.after is not None and not outcome.dry_run:
        journal.archive("after", outcome.after, source_system=source_system)
    kind = "change" if outcome.changed else "note"
    ctx.record(outcome.message, kind=kind, target=outcome.target, changed=outcome.changed, dry_run=outcome.dry_run)
    return outcome


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


# --- IAM -----------------------------------------------------------------------------------------


class AccessKeyArgs(ActionArgs):
    access_key_id: Annotated[str, Target("access_key")] = Field(..., pattern=r"^AKIA[A-Z0-9]{12,124}$",
                               description="Long-term access key id (AKIA...); temporary ASIA keys: revoke sessions.")
    user_name: Annotated[str | None, Target("iam_user")] = Field(
        None, description="Owner of the key; looked up from the key when unset.")


def _key_status(ctx: ActionContext, iam: Any, args: AccessKeyArgs) -> tuple[str, str]:
    user = args.user_name
    if user is None:
        found = _call(ctx, iam, "get_access_key_last_used", AccessKeyId=args.access_key_id)
        user = found.get("UserName") if found else None
        if not user:
            raise PermanentError(f"access key {args.access_key_id} belongs to no IAM user of this account",
                                 provider="AWS iam", code="NoSuchEntity")
    keys = _call(ctx, iam, "list_access_keys", UserName=user)["AccessKeyMetadata"]
    for key in keys:
        if key["AccessKeyId"] == args.access_key_id:
            return user, key["Status"]
    listed = ", ".join(k["AccessKeyId"] for k in keys) or "none"
    raise PermanentError(f"IAM user {user} has no access key {args.access_key_id}; its keys: {listed}",
                         provider="AWS iam", code="NoSuchEntity")


def _set_key(args: AccessKeyArgs, ctx: ActionContext, wanted: Literal["Active", "Inactive"]) -> Outcome:
    iam = aws_client("iam")
    user, status = _key_status(ctx, iam, args)
    if args.user_name is None:  # the owner was looked up: the engine could not check it before the step
        check_protected(f"aws.{'deactivate' if wanted == 'Inactive' else 'activate'}_access_key", "iam_user", user)
    target = f"iam-user/{user}/{args.access_key_id}"
    journal = Journal(ctx, target)
    before, replayed = journal.first("before", {"user_name": user, "status": status}, source_system="aws-iam")
    verb = "deactivate" if wanted == "Inactive" else "reactivate"
    undo = None
    if wanted == "Inactive" and before["status"] == "Active":
        undo = UndoPlan(action="aws.activate_access_key",
                        args={"access_key_id": args.access_key_id, "user_name": user})
    if ctx.dry_run:
        state = "already " + wanted.lower() if status == wanted else f"currently {status.lower()}"
        return _finish(ctx, journal, Outcome(
            target=target, changed=False, dry_run=True, before=before,
            message=f"dry run: would {verb} access key {args.access_key_id} of {user} ({state})",
            checks=["iam:GetAccessKeyLastUsed and iam:ListAccessKeys: target found (IAM has no DryRun)"],
            details={"would_change": status != wanted},
        ), source_system="aws-iam")
    if status == wanted:
        why = "by an earlier attempt of this step" if replayed and before["status"] != wanted else "already"
        return _finish(ctx, journal, Outcome(
            target=target, changed=False, before=before, after={"user_name": user, "status": status}, undo=undo,
            message=f"access key {args.access_key_id} of {user} is already {wanted.lower()} ({why}): nothing changed",
        ), source_system="aws-iam")
    _call(ctx, iam, "update_access_key", UserName=user, AccessKeyId=args.access_key_id, Status=wanted)
    _, after = _key_status(ctx, iam, args.model_copy(update={"user_name": user}))
    return _finish(ctx, journal, Outcome(
        target=target, changed=True, before=before, after={"user_name": user, "status": after}, undo=undo,
        message=f"access key {args.access_key_id} of {user} {verb}d (was {status.lower()})",
    ), source_system="aws-iam")


@action("aws")
def deactivate_access_key(args: AccessKeyArgs, ctx: ActionContext) -> Outcome:
    """Deactivate an IAM user's access key (reversible: aws.activate_access_key)."""
    return _set_key(args, ctx, "Inactive")


@action("aws")
def activate_access_key(args: AccessKeyArgs, ctx: ActionContext) -> Outcome:
    """Reactivate an IAM access key deactivated by mistake (undo of aws.deactivate_access_key)."""
    return _set_key(args, ctx, "Active")


Principal = Literal["user", "role"]


def _get_inline(ctx: ActionContext, iam: Any, kind: Principal, name: str, policy: str) -> dict[str, Any] | None:
    if kind == "user":
        found = _call(ctx, iam, "get_user_policy", absent=("NoSuchEntity",), UserName=name, PolicyName=policy)
    else:
        found = _call(ctx, iam, "get_role_policy", absent=("NoSuchEntity",), RoleName=name, PolicyName=policy)
    if found is None:
        return None
    document = found["PolicyDocument"]
    return json.loads(document) if isinstance(document, str) else document


def _check_principal(ctx: ActionContext, iam: Any, kind: Principal, name: str) -> str:
    if kind == "user":
        found = _call(ctx, iam, "get_user", absent=("NoSuchEntity",), UserName=name)
        arn = found and found["User"]["Arn"]
    else:
        found = _call(ctx, iam, "get_role", absent=("NoSuchEntity",), RoleName=name)
        arn = found and found["Role"]["Arn"]
    if not arn:
        raise PermanentError(f"no IAM {kind} named {name!r} in this account", provider="AWS iam", code="NoSuchEntity")
    return arn


def _put_inline(ctx: ActionContext, iam: Any, kind: Principal, name: str, policy: str, document: dict) -> None:
    text = json.dumps(document)
    if kind == "user":
        _call(ctx, iam, "put_user_policy", UserName=name, PolicyName=policy, PolicyDocument=text)
    else:
        _call(ctx, iam, "put_role_policy", RoleName=name, PolicyName=policy, PolicyDocument=text)


def _delete_inline(ctx: ActionContext, iam: Any, kind: Principal, name: str, policy: str) -> None:
    if kind == "user":
        _call(ctx, iam, "delete_user_policy", absent=("NoSuchEntity",), UserName=name, PolicyName=policy)
    else:
        _call(ctx, iam, "delete_role_policy", absent=("NoSuchEntity",), RoleName=name, PolicyName=policy)


def _apply_inline(ctx: ActionContext, kind: Principal, name: str, policy: str, wanted: dict | None,
                  what: str, undo_of: bool = False) -> Outcome:
    """Make inline policy `policy` of the principal equal `wanted` (None: absent); before/after archived."""
    iam = aws_client("iam")
    arn = _check_principal(ctx, iam, kind, name)
    target = f"iam-{kind}/{name}/{policy}"
    current = _get_inline(ctx, iam, kind, name, policy)
    journal = Journal(ctx, target)
    before, replayed = journal.first("before", {"arn": arn, "policy": current}, source_system="aws-iam")
    undo = None
    if not undo_of and before["policy"] != wanted:
        undo = UndoPlan(action="aws.restore_inline_policy",
                        args={"principal_type": kind, "name": name, "policy_name": policy,
                              "document": before["policy"]})
    if ctx.dry_run:
        return _finish(ctx, journal, Outcome(
            target=target, changed=False, dry_run=True, before=before,
            message=f"dry run: would {what}" + (" (already in place)" if current == wanted else ""),
            checks=[f"iam:Get{kind.title()} and iam:Get{kind.title()}Policy: target found (IAM has no DryRun)"],
            details={"would_change": current != wanted},
        ), source_system="aws-iam")
    if current == wanted:
        why = "by an earlier attempt of this step" if replayed and before["policy"] != wanted else "already"
        return _finish(ctx, journal, Outcome(
            target=target, changed=False, before=before, after={"arn": arn, "policy": current}, undo=undo,
            message=f"inline policy {policy} of {kind} {name} is already as wanted ({why}): nothing changed",
        ), source_system="aws-iam")
    if wanted is None:
        _delete_inline(ctx, iam, kind, name, policy)
    else:
        _put_inline(ctx, iam, kind, name, policy, wanted)
    after = _get_inline(ctx, iam, kind, name, policy)
    return _finish(ctx, journal, Outcome(
        target=target, changed=True, before=before, after={"arn": arn, "policy": after}, undo=undo,
        message=f"{what[0].upper()}{what[1:]}: done",
    ), source_system="aws-iam")


class DenyPolicyArgs(ActionArgs):
    principal_type: Principal = Field(..., description="user or role.")
    name: Annotated[str, Target("iam_{principal_type}")] = Field(
        ..., min_length=1, max_length=128, description="IAM user or role name.")
    policy_name: str = Field(DENY_ALL_POLICY, description="Name of the inline deny-all policy.")


DENY_ALL_DOCUMENT = {
    "Version": "2012-10-17",
    "Statement": [{"Sid": "IrpIncidentDenyAll", "Effect": "Deny", "Action": "*", "Resource": "*"}],
}


@action("aws")
def attach_deny_policy(args: DenyPolicyArgs, ctx: ActionContext) -> Outcome:
    """Put an inline deny-all policy on an IAM user or role: every call it makes is refused."""
    return _apply_inline(ctx, args.principal_type, args.name, args.policy_name, DENY_ALL_DOCUMENT,
                         f"deny everything to {args.principal_type} {args.name} ({args.policy_name})")


class RevokeSessionsArgs(ActionArgs):
    role_name: Annotated[str, Target("iam_role")] = Field(
        ..., min_length=1, max_length=128, description="IAM role whose sessions are revoked.")
    issued_before: datetime | None = Field(
        None, description="Deny sessions whose token was issued before this time; default: the first attempt's now."
    )


def _revoke_document(cutoff: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Deny",
            "Action": ["*"],
            "Resource": ["*"],
            "Condition": {"DateLessThan": {"aws:TokenIssueTime": cutoff}},
        }],
    }


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _cutoff_of(document: dict | None) -> datetime | None:
    """The aws:TokenIssueTime cutoff of a revoke-older-sessions policy document."""
    statements = (document or {}).get("Statement", [])
    for statement in statements if isinstance(statements, list) else [statements]:
        value = statement.get("Condition", {}).get("DateLessThan", {}).get("aws:TokenIssueTime")
        if isinstance(value, list):
            value = value[0] if value else None
        if value:
            try:
                return _instant(str(value))
            except ValueError:
                return None
    return None


@action("aws")
def revoke_role_sessions(args: RevokeSessionsArgs, ctx: ActionContext) -> Outcome:
    """Revoke a role's active sessions: deny every token issued before now (AWSRevokeOlderSessions)."""
    wanted_time = args.issued_before or utcnow()
    if wanted_time.tzinfo is None:
        wanted_time = wanted_time.replace(tzinfo=UTC)
    plan, _ = Journal(ctx, f"iam-role/{args.role_name}/{REVOKE_POLICY}").first(
        "plan", {"cutoff": wanted_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}, source_system="irp")
    cutoff = plan["cutoff"]
    iam = aws_client("iam")
    _check_principal(ctx, iam, "role", args.role_name)
    current = _get_inline(ctx, iam, "role", args.role_name, REVOKE_POLICY)
    existing = _cutoff_of(current)
    if existing and existing >= _instant(cutoff):  # an equal or later cutoff already revokes these sessions
        wanted = current
    else:
        wanted = _revoke_document(cutoff)
    return _apply_inline(ctx, "role", args.role_name, REVOKE_POLICY, wanted,
                         f"revoke sessions of role {args.role_name} issued before {cutoff}")


class InlinePolicyArgs(ActionArgs):
    principal_type: Principal = Field(..., description="user or role.")
    name: Annotated[str, Target("iam_{principal_type}")] = Field(
        ..., min_length=1, max_length=128, description="IAM user or role name.")
    policy_name: str = Field(..., min_length=1, description="Inline policy name.")
    document: dict[str, Any] | None = Field(None, description="Policy document to put back; null deletes it.")


@action("aws")
def restore_inline_policy(args: InlinePolicyArgs, ctx: ActionContext) -> Outcome:
    """Put an inline IAM policy back as it was, or delete it (undo of deny and revoke actions)."""
    what = (f"delete inline policy {args.policy_name} of {args.principal_type} {args.name}" if args.document is None
            else f"restore inline policy {args.policy_name} of {args.principal_type} {args.name}")
    return _apply_inline(ctx, args.principal_type, args.name, args.policy_name, args.document, what, undo_of=True)


# --- EC2 -----------------------------------------------------------------------------------------


def _describe_instance(ctx: ActionContext, ec2: Any, instance_id: str) -> dict[str, Any]:
    reservations = _call(ctx, ec2, "describe_instances", InstanceIds=[instance_id])["Reservations"]
    if not reservations or not reservations[0]["Instances"]:
        raise PermanentError(f"no EC2 instance {instance_id}", provider="AWS ec2", code="InvalidInstanceID.NotFound")
    return reservations[0]["Instances"][0]


def _instance_state(ctx: ActionContext, ec2: Any, instance_id: str) -> dict[str, Any]:
    instance = _describe_instance(ctx, ec2, instance_id)
    protection = _call(ctx, ec2, "describe_instance_attribute", InstanceId=instance_id,
                       Attribute="disableApiTermination")["DisableApiTermination"]["Value"]
    return {
        "instance_id": instance_id,
        "state": instance["State"]["Name"],
        "vpc_id": instance.get("VpcId"),
        "interfaces": {
            eni["NetworkInterfaceId"]: sorted(group["GroupId"] for group in eni.get("Groups", []))
            for eni in instance.get("NetworkInterfaces", [])
        },
        "termination_protection": bool(protection),
        "tags": {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])},
    }


def _isolation_group(ctx: ActionContext, ec2: Any, value: str, vpc_id: str | None) -> tuple[str, dict[str, Any]]:
    if value.startswith("sg-"):
        groups = _call(ctx, ec2, "describe_security_groups", absent=("InvalidGroup.NotFound",),
                       GroupIds=[value])
        groups = groups["SecurityGroups"] if groups else []
        if not groups:
            raise PermanentError(f"isolation security group {value} does not exist", provider="AWS ec2",
                                 code="InvalidGroup.NotFound")
        if vpc_id and groups[0].get("VpcId") != vpc_id:
            raise PermanentError(f"isolation security group {value} is in {groups[0].get('VpcId')}, the instance in "
                                 f"{vpc_id}: give the group name to find it per VPC", provider="AWS ec2",
                                 code="InvalidGroup.WrongVpc")
    else:
        filters = [{"Name": "group-name", "Values": [value]}]
        if vpc_id:
            filters.append({"Name": "vpc-id", "Values": [vpc_id]})
        groups = _call(ctx, ec2, "describe_security_groups", Filters=filters)["SecurityGroups"]
        if not groups:
            raise PermanentError(f"no security group named {value!r} in {vpc_id}: create the isolation group there",
                                 provider="AWS ec2", code="InvalidGroup.NotFound")
    return groups[0]["GroupId"], groups[0]


class QuarantineArgs(ActionArgs):
    instance_id: Annotated[str, Target("instance")] = Field(..., pattern=r"^i-[0-9a-f]{8,17}$", description="EC2 instance id.")
    isolation_group: Annotated[str | None, Target("security_group")] = Field(
        None, description="sg- id or group name in the instance's VPC; default IRP_AWS_ISOLATION_SECURITY_GROUP."
    )
    protect_from_termination: bool = Field(True, description="Also turn on termination protection (evidence).")


@action("aws")
def quarantine_instance(args: QuarantineArgs, ctx: ActionContext) -> Outcome:
    """Isolate an EC2 instance: only the isolation security group, termination protection, a tag; kept running."""
    group_setting = args.isolation_group or get_settings().aws_isolation_security_group
    if not group_setting:
        raise NotConfiguredError("aws.quarantine_instance: no isolation group (argument or "
                                 "IRP_AWS_ISOLATION_SECURITY_GROUP)")
    ec2 = aws_client("ec2")
    current = _instance_state(ctx, ec2, args.instance_id)
    if current["state"] in ("shutting-down", "terminated"):
        raise PermanentError(f"instance {args.instance_id} is {current['state']}: nothing to isolate",
                             provider="AWS ec2", code="IncorrectInstanceState")
    if not current["interfaces"]:
        raise PermanentError(f"instance {args.instance_id} has no network interface", provider="AWS ec2",
                             code="NoNetworkInterface")
    group_id, group = _isolation_group(ctx, ec2, group_setting, current["vpc_id"])
    target = f"ec2-instance/{args.instance_id}"
    journal = Journal(ctx, target)
    before, replayed = journal.first("before", current, source_system="aws-ec2")
    warnings = []
    if group.get("IpPermissions") or group.get("IpPermissionsEgress"):
        warnings.append(f"isolation group {group_id} has {len(group.get('IpPermissions', []))} inbound and "
                        f"{len(group.get('IpPermissionsEgress', []))} outbound rules: it should have none")
    warnings.append("connections already tracked by security groups stay open; block them with a network ACL")
    moves = [eni for eni, groups in current["interfaces"].items() if groups != [group_id]]
    protect = args.protect_from_termination and not current["termination_protection"]
    tag = current["tags"].get(TAG_QUARANTINE) != ctx.incident.id

    def isolated(state: dict[str, Any]) -> bool:
        return (all(g == [group_id] for g in state["interfaces"].values())
                and (state["termination_protection"] or not args.protect_from_termination)
                and state["tags"].get(TAG_QUARANTINE) == ctx.incident.id)

    undo = None
    if not isolated(before):
        undo = UndoPlan(action="aws.release_instance", args={
            "instance_id": args.instance_id,
            "interfaces": before["interfaces"],
            "termination_protection": before["termination_protection"],
            "remove_tags": [] if TAG_QUARANTINE in before["tags"] else [TAG_QUARANTINE],
        })
    plan = (f"move {', '.join(moves) or 'no interface'} to {group_id}"
            + (", protect from termination" if protect else "") + (f", tag {TAG_QUARANTINE}" if tag else ""))
    if ctx.dry_run:
        checks = ["ec2:DescribeInstances, DescribeInstanceAttribute, DescribeSecurityGroups: target found"]
        for eni in moves:
            checks.append(_dry_run(ctx, ec2, "modify_network_interface_attribute", NetworkInterfaceId=eni,
                                   Groups=[group_id]))
        if protect:
            checks.append(_dry_run(ctx, ec2, "modify_instance_attribute", InstanceId=args.instance_id,
                                   DisableApiTermination={"Value": True}))
        if tag:
            checks.append(_dry_run(ctx, ec2, "create_tags", Resources=[args.instance_id],
                                   Tags=[{"Key": TAG_QUARANTINE, "Value": ctx.incident.id}]))
        return _finish(ctx, journal, Outcome(
            target=target, changed=False, dry_run=True, before=before, checks=checks,
            message=f"dry run: would quarantine {args.instance_id}: {plan}" if (moves or protect or tag)
            else f"dry run: {args.instance_id} is already quarantined",
            details={"would_change": bool(moves or protect or tag), "isolation_group": group_id,
                     "warnings": warnings},
        ), source_system="aws-ec2")
    if not (moves or protect or tag):
        why = "by an earlier attempt of this step" if replayed and undo else "already"
        return _finish(ctx, journal, Outcome(
            target=target, changed=False, before=before, after=current, undo=undo,
            message=f"instance {args.instance_id} is already quarantined in {group_id} ({why}): nothing changed",
            details={"isolation_group": group_id, "warnings": warnings},
        ), source_system="aws-ec2")
    for eni in moves:
        _call(ctx, ec2, "modify_network_interface_attribute", NetworkInterfaceId=eni, Groups=[group_id])
    if protect:
        _call(ctx, ec2, "modify_instance_attribute", InstanceId=args.instance_id,
              DisableApiTermination={"Value": True})
    if tag:
        _call(ctx, ec2, "create_tags", Resources=[args.instance_id],
              Tags=[{"Key": TAG_QUARANTINE, "Value": ctx.incident.id}])
    after = _instance_state(ctx, ec2, args.instance_id)
    return _finish(ctx, journal, Outcome(
        target=target, changed=True, before=before, after=after, undo=undo,
        message=f"instance {args.instance_id} quarantined ({plan}); still {after['state']} for forensics",
        details={"isolation_group": group_id, "warnings": warnings},
    ), source_system="aws-ec2")


class ReleaseArgs(ActionArgs):
    instance_id: Annotated[str, Target("instance")] = Field(..., pattern=r"^i-[0-9a-f]{8,17}$", description="EC2 instance id.")
    interfaces: dict[str, list[str]] = Field(..., description="Security groups to put back, per network interface.")
    termination_protection: bool | None = Field(None, description="Value to put back; null leaves it.")
    remove_tags: CommaList = Field(default_factory=list, description="Tag keys to remove.")


@action("aws")
def release_instance(args: ReleaseArgs, ctx: ActionContext) -> Outcome:
    """Put a quarantined instance's security groups, protection and tags back (undo of quarantine_instance)."""
    ec2 = aws_client("ec2")
    current = _instance_state(ctx, ec2, args.instance_id)
    target = f"ec2-instance/{args.instance_id}"
    journal = Journal(ctx, target)
    before, _ = journal.first("before", current, source_system="aws-ec2")
    missing = [eni for eni in args.interfaces if eni not in current["interfaces"]]
    moves = {eni: sorted(groups) for eni, groups in args.interfaces.items()
             if eni in current["interfaces"] and current["interfaces"][eni] != sorted(groups)}
    protection = (args.termination_protection is not None
                  and args.termination_protection != current["termination_protection"])
    tags = [key for key in args.remove_tags if key in current["tags"]]
    details = {"interfaces_gone": missing} if missing else {}
    if ctx.dry_run:
        checks = []
        for eni, groups in moves.items():
            checks.append(_dry_run(ctx, ec2, "modify_network_interface_attribute", NetworkInterfaceId=eni,
                                   Groups=groups))
        if protection:
            checks.append(_dry_run(ctx, ec2, "modify_instance_attribute", InstanceId=args.instance_id,
                                   DisableApiTermination={"Value": args.termination_protection}))
        if tags:
            checks.append(_dry_run(ctx, ec2, "delete_tags", Resources=[args.instance_id],
                                   Tags=[{"Key": key} for key in tags]))
        return _finish(ctx, journal, Outcome(
            target=target, changed=False, dry_run=True, before=before, checks=checks,
            message=f"dry run: would release {args.instance_id} (groups of {len(moves)} interface(s), "
                    f"protection {'reset' if protection else 'unchanged'}, {len(tags)} tag(s) removed)",
            details=details | {"would_change": bool(moves or protection or tags)},
        ), source_system="aws-ec2")
    if not (moves or protection or tags):
        return _finish(ctx, journal, Outcome(
            target=target, changed=False, before=before, after=current, details=details,
            message=f"instance {args.instance_id} already has its groups, protection and tags back: nothing changed",
        ), source_system="aws-ec2")
    for eni, groups in moves.items():
        _call(ctx, ec2, "modify_network_interface_attribute", NetworkInterfaceId=eni, Groups=groups)
    if protection:
        _call(ctx, ec2, "modify_instance_attribute", InstanceId=args.instance_id,
              DisableApiTermination={"Value": args.termination_protection})
    if tags:
        _call(ctx, ec2, "delete_tags", Resources=[args.instance_id], Tags=[{"Key": key} for key in tags])
    after = _instance_state(ctx, ec2, args.instance_id)
    return _finish(ctx, journal, Outcome(
        target=target, changed=True, before=before, after=after, details=details,
        message=f"instance {args.instance_id} released from quarantine: security groups restored on "
                f"{len(moves)} interface(s)",
    ), source_system="aws-ec2")


class SnapshotArgs(ActionArgs):
    instance_id: str = Field(..., pattern=r"^i-[0-9a-f]{8,17}$", description="EC2 instance whose volumes to copy.")
    volume_ids: CommaList | None = Field(None, description="Only these attached volumes (default: all).")


@action("aws")
def snapshot_volumes(args: SnapshotArgs, ctx: ActionContext) -> Outcome:
    """Snapshot an instance's EBS volumes as evidence, tagged with the incident (kept, never undone)."""
    ec2 = aws_client("ec2")
    instance = _describe_instance(ctx, ec2, args.instance_id)
    volumes = {m["Ebs"]["VolumeId"]: m["DeviceName"] for m in instance.get("BlockDeviceMappings", []) if "Ebs" in m}
    if args.volume_ids:
        unknown = sorted(set(args.volume_ids) - set(volumes))
        if unknown:
            raise PermanentError(f"volumes {', '.join(unknown)} are not attached to {args.instance_id}; attached: "
                                 f"{', '.join(volumes) or 'none'}", provider="AWS ec2", code="InvalidVolume.NotFound")
        volumes = {vol: dev for vol, dev in volumes.items() if vol in args.volume_ids}
    if not volumes:
        raise PermanentError(f"instance {args.instance_id} has no EBS volume to snapshot", provider="AWS ec2",
                             code="NoVolume")
    target = f"ec2-instance/{args.instance_id}/volumes"
    journal = Journal(ctx, target)
    before, _ = journal.first("before", {"instance_id": args.instance_id, "volumes": volumes}, source_system="aws-ec2")
    snapshots, created = [], 0
    checks = []
    for volume_id, device in volumes.items():
        existing = _call(ctx, ec2, "describe_snapshots", OwnerIds=["self"], Filters=[
            {"Name": "volume-id", "Values": [volume_id]},
            {"Name": f"tag:{TAG_INCIDENT}", "Values": [ctx.incident.id]},
        ])["Snapshots"]
        existing = [s for s in existing if s.get("State") != "error"]
        if existing:
            snap = existing[0]
            snapshots.append({"volume_id": volume_id, "device": device, "snapshot_id": snap["SnapshotId"],
                              "state": snap.get("State"), "start_time": snap.get("StartTime"), "reused": True})
            continue
        if ctx.dry_run:
            checks.append(_dry_run(ctx, ec2, "create_snapshot", VolumeId=volume_id))
            snapshots.append({"volume_id": volume_id, "device": device, "snapshot_id": None, "reused": False})
            continue
        snap = _call(ctx, ec2, "create_snapshot", VolumeId=volume_id,
                     Description=f"irp evidence: incident {ctx.incident.id}, {args.instance_id} {device}",
                     TagSpecifications=[{"ResourceType": "snapshot", "Tags": [
                         {"Key": TAG_INCIDENT, "Value": ctx.incident.id},
                         {"Key": "irp:step", "Value": f"{ctx.stage.value}.{ctx.step}"},
                         {"Key": "irp:instance", "Value": args.instance_id},
                     ]}])
        created += 1
        snapshots.append({"volume_id": volume_id, "device": device, "snapshot_id": snap["SnapshotId"],
                          "state": snap.get("State"), "start_time": snap.get("StartTime"), "reused": False})
    after = {"instance_id": args.instance_id, "snapshots": snapshots}
    if ctx.dry_run:
        message = f"dry run: would snapshot {len(checks)} volume(s) of {args.instance_id}"
    elif created:
        message = f"{created} snapshot(s) of {args.instance_id} started as evidence"
    else:
        message = f"the volumes of {args.instance_id} already have snapshots for this incident: nothing changed"
    return _finish(ctx, journal, Outcome(
        target=target, changed=created > 0, dry_run=ctx.dry_run, before=before, after=after, checks=checks,
        message=message, details={"snapshot_ids": [s["snapshot_id"] for s in snapshots if s["snapshot_id"]],
                                  "undo": "none: evidence snapshots are kept under the retention policy"},
    ), source_system="aws-ec2")


# --- blocking an address -------------------------------------------------------------------------


def _parse_ip_set_arn(arn: str) -> tuple[str, str, str, str]:
    """(region, scope, name, id) of arn:aws:wafv2:REGION:ACCOUNT:regional|global/ipset/NAME/ID."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[2] != "wafv2":
        raise ValueError(f"{arn!r} is not a WAFv2 IP set ARN (arn:aws:wafv2:REGION:ACCOUNT:regional/ipset/NAME/ID)")
    resource = parts[5].split("/")
    if len(resource) != 4 or resource[1] != "ipset" or resource[0] not in ("regional", "global"):
        raise ValueError(f"{arn!r} is not a WAFv2 IP set ARN (arn:aws:wafv2:REGION:ACCOUNT:regional/ipset/NAME/ID)")
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
            _parse_ip_set_arn(value)
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
        region, scope, name, set_id = _parse_ip_set_arn(arn)
    except ValueError as exc:
        raise NotConfiguredError(str(exc)) from None
    return aws_client("wafv2", region=region), arn, {"Name": name, "Scope": scope, "Id": set_id}


def _waf_change(args: BlockIpArgs | UnblockIpArgs, ctx: ActionContext, add: bool) -> Outcome:
    waf, arn, ident = _ip_set(ctx, args.ip_set_arn)
    target = f"wafv2-ipset/{ident['Name']}/{args.cidr}"
    journal = Journal(ctx, target)
    network = ipaddress.ip_network(args.cidr)

    def read() -> tuple[list[str], str, str, str | None]:
        found = _call(ctx, waf, "get_ip_set", **ident)
        ip_set = found["IPSet"]
        return list(ip_set.get("Addresses", [])), found["LockToken"], ip_set["IPAddressVersion"], ip_set.get(
            "Description")

    addresses, _, version, _ = read()
    if (version == "IPV4") != (network.version == 4):
        raise PermanentError(f"IP set {ident['Name']} holds {version} addresses, not {args.cidr}",
                             provider="AWS wafv2", code="WAFInvalidParameterException")
    present = any(ipaddress.ip_network(a, strict=False) == network for a in addresses)
    before, replayed = journal.first("before", {"ip_set_arn": arn, "present": present, "addresses": addresses},
                                     source_system="aws-wafv2")
    undo = None
    if add and not before["present"]:
        undo = UndoPlan(action="aws.unblock_ip", args={"cidr": args.cidr, "method": "waf", "ip_set_arn": arn})
    verb = "block" if add else "unblock"
    if ctx.dry_run:
        return _finish(ctx, journal, Outcome(
            target=target, changed=False, dry_run=True, before=before,
            message=f"dry run: would {verb} {args.cidr} in WAF IP set {ident['Name']}"
                    + (" (nothing to do)" if present == add else ""),
            checks=["wafv2:GetIPSet: IP set found (WAF has no DryRun)"], details={"would_change": present != add},
        ), source_system="aws-wafv2")
    if present == add:
        why = "by an earlier attempt of this step" if replayed and before["present"] != add else "already"
        return _finish(ctx, journal, Outcome(
            target=target, changed=False, before=before, after={"present": present}, undo=undo,
            message=f"{args.cidr} is {'already' if add else 'not'} in WAF IP set {ident['Name']} ({why}): "
                    "nothing changed",
        ), source_system="aws-wafv2")

    def read_modify_write() -> list[str]:  # retried whole on WAFOptimisticLockException
        current, lock, _, description = read()
        kept = [a for a in current if ipaddress.ip_network(a, strict=False) != network]
        wanted = [*kept, args.cidr] if add else kept
        extra = {"Description": description} if description else {}
        waf.update_ip_set(**ident, Addresses=wanted, LockToken=lock, **extra)
        return wanted

    addresses_after = with_retries(ctx, "AWS wafv2", "update_ip_set", read_modify_write, classify)
    return _finish(ctx, journal, Outcome(
        target=target, changed=True, before=before, after={"present": add, "addresses": addresses_after}, undo=undo,
        message=f"{args.cidr} {'added to' if add else 'removed from'} WAF IP set {ident['Name']}",
    ), source_system="aws-wafv2")


def _nacl_entries(ctx: ActionContext, ec2: Any, acl_id: str) -> list[dict[str, Any]]:
    found = _call(ctx, ec2, "describe_network_acls", NetworkAclIds=[acl_id])["NetworkAcls"]
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


def _block_nacl(args: BlockIpArgs, ctx: ActionContext) -> Outcome:
    acl_id = _nacl_acl(args)
    ec2 = aws_client("ec2")
    entries = _nacl_entries(ctx, ec2, acl_id)
    target = f"network-acl/{acl_id}/{args.cidr}"
    journal = Journal(ctx, target)
    directions = ["ingress", "egress"] if args.direction == "both" else [args.direction]
    present = {d: _deny_entry(entries, args.cidr, d == "egress") for d in directions}
    before, replayed = journal.first("before", {
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

    def entry_args(direction: str, number: int) -> dict[str, Any]:
        return {"NetworkAclId": acl_id, "RuleNumber": number, "Protocol": "-1", "RuleAction": "deny",
                "Egress": direction == "egress", family: args.cidr}

    ours = {d: (present[d]["RuleNumber"] if present[d] else plan[d]) for d in directions
            if not before["denied"][d]}
    undo = None
    if ours:
        undo = UndoPlan(action="aws.unblock_ip", args={"cidr": args.cidr, "method": "nacl",
                                                       "network_acl_id": acl_id, "rule_numbers": ours})
    if ctx.dry_run:
        checks = [_dry_run(ctx, ec2, "create_network_acl_entry", **entry_args(d, n)) for d, n in plan.items()]
        return _finish(ctx, journal, Outcome(
            target=target, changed=False, dry_run=True, before=before, checks=checks,
            message=f"dry run: would deny {args.cidr} in {acl_id} ({_rules(plan)})" if plan
            else f"dry run: {args.cidr} is already denied in {acl_id}",
            details={"would_change": bool(plan), "rule_numbers": plan},
        ), source_system="aws-ec2")
    if not plan:
        why = "by an earlier attempt of this step" if replayed and ours else "already"
        return _finish(ctx, journal, Outcome(
            target=target, changed=False, before=before, after={"denied": dict.fromkeys(directions, True)}, undo=undo,
            message=f"{args.cidr} is already denied in {acl_id} ({why}): nothing changed",
        ), source_system="aws-ec2")
    for direction, number in plan.items():
        _call(ctx, ec2, "create_network_acl_entry", **entry_args(direction, number))
    after_entries = _nacl_entries(ctx, ec2, acl_id)
    return _finish(ctx, journal, Outcome(
        target=target, changed=True, before=before, undo=undo,
        after={"network_acl_id": acl_id, "entries": after_entries},
        message=f"{args.cidr} denied in {acl_id} ({_rules(plan)}); "
                "rules with lower numbers still apply first",
        details={"rule_numbers": plan},
    ), source_system="aws-ec2")


def _unblock_nacl(args: UnblockIpArgs, ctx: ActionContext) -> Outcome:
    acl_id = _nacl_acl(args)
    ec2 = aws_client("ec2")
    entries = _nacl_entries(ctx, ec2, acl_id)
    target = f"network-acl/{acl_id}/{args.cidr}"
    journal = Journal(ctx, target)
    before, _ = journal.first("before", {"network_acl_id": acl_id, "entries": entries}, source_system="aws-ec2")
    wanted = args.rule_numbers or {"ingress": None, "egress": None}
    found = {d: _deny_entry(entries, args.cidr, d == "egress", n) for d, n in wanted.items()}
    delete = {d: e["RuleNumber"] for d, e in found.items() if e}
    if ctx.dry_run:
        checks = [_dry_run(ctx, ec2, "delete_network_acl_entry", NetworkAclId=acl_id, RuleNumber=n,
                           Egress=d == "egress") for d, n in delete.items()]
        return _finish(ctx, journal, Outcome(
            target=target, changed=False, dry_run=True, before=before, checks=checks,
            message=f"dry run: would delete {len(delete)} deny entr(ies) of {args.cidr} in {acl_id}",
            details={"would_change": bool(delete)},
        ), source_system="aws-ec2")
    if not delete:
        return _finish(ctx, journal, Outcome(
            target=target, changed=False, before=before, after={"entries": entries},
            message=f"{args.cidr} has no deny entry left in {acl_id}: nothing changed",
        ), source_system="aws-ec2")
    for direction, number in delete.items():
        _call(ctx, ec2, "delete_network_acl_entry", absent=("InvalidNetworkAclEntry.NotFound",),
              NetworkAclId=acl_id, RuleNumber=number, Egress=direction == "egress")
    return _finish(ctx, journal, Outcome(
        target=target, changed=True, before=before, after={"entries": _nacl_entries(ctx, ec2, acl_id)},
        message=f"deny entries of {args.cidr} deleted from {acl_id} ({_rules(delete)})",
    ), source_system="aws-ec2")


@action("aws")
def block_ip(args: BlockIpArgs, ctx: ActionContext) -> Outcome:
    """Block an IP address or CIDR: add it to a WAFv2 IP set, or deny it in a network ACL."""
    return _waf_change(args, ctx, add=True) if args.method == "waf" else _block_nacl(args, ctx)


@action("aws")
def unblock_ip(args: UnblockIpArgs, ctx: ActionContext) -> Outcome:
    """Remove a block set by aws.block_ip (from the WAFv2 IP set or the network ACL)."""
    return _waf_change(args, ctx, add=False) if args.method == "waf" else _unblock_nacl(args, ctx)


# --- S3 ------------------------------------------------------------------------------------------

_ALL_BLOCKED = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True}


class BucketArgs(ActionArgs):
    bucket: Annotated[str, Target("bucket")] = Field(..., min_length=3, max_length=63, description="S3 bucket name.")


class PublicAccessBlockArgs(ActionArgs):
    bucket: Annotated[str, Target("bucket")] = Field(..., min_length=3, max_length=63, description="S3 bucket name.")
    configuration: dict[str, bool] | None = Field(None, description="Configuration to put back; null removes it.")


def _public_access_block(ctx: ActionContext, s3: Any, bucket: str) -> dict[str, bool] | None:
    if _call(ctx, s3, "head_bucket", absent=("404", "NoSuchBucket"), Bucket=bucket) is None:
        raise PermanentError(f"no S3 bucket {bucket}", provider="AWS s3", code="NoSuchBucket")
    found = _call(ctx, s3, "get_public_access_block", absent=("NoSuchPublicAccessBlockConfiguration",),
                  Bucket=bucket)
    return dict(found["PublicAccessBlockConfiguration"]) if found else None


def _set_public_access_block(ctx: ActionContext, bucket: str, wanted: dict[str, bool] | None,
                             undo_of: bool) -> Outcome:
    s3 = aws_client("s3")
    current = _public_access_block(ctx, s3, bucket)
    target = f"s3-bucket/{bucket}/public-access-block"
    journal = Journal(ctx, target)
    before, replayed = journal.first("before", {"configuration": current}, source_system="aws-s3")
    undo = None
    if not undo_of and before["configuration"] != wanted:
        undo = UndoPlan(action="aws.restore_public_access_block",
                        args={"bucket": bucket, "configuration": before["configuration"]})
    what = ("block all public access to" if wanted == _ALL_BLOCKED and not undo_of
            else "remove the public access block of" if wanted is None else "restore the public access block of")
    if ctx.dry_run:
        return _finish(ctx, journal, Outcome(
            target=target, changed=False, dry_run=True, before=before,
            message=f"dry run: would {what} bucket {bucket}" + (" (already so)" if current == wanted else ""),
            checks=["s3:HeadBucket and s3:GetBucketPublicAccessBlock: bucket found (S3 has no DryRun)"],
            details={"would_change": current != wanted},
        ), source_system="aws-s3")
    if current == wanted:
        why = "by an earlier attempt of this step" if replayed and before["configuration"] != wanted else "already"
        return _finish(ctx, journal, Outcome(
            target=target, changed=False, before=before, after={"configuration": current}, undo=undo,
            message=f"public access block of bucket {bucket} is already as wanted ({why}): nothing changed",
        ), source_system="aws-s3")
    if wanted is None:
        _call(ctx, s3, "delete_public_access_block", Bucket=bucket)
    else:
        _call(ctx, s3, "put_public_access_block", Bucket=bucket, PublicAccessBlockConfiguration=wanted)
    after = _public_access_block(ctx, s3, bucket)
    return _finish(ctx, journal, Outcome(
        target=target, changed=True, before=before, after={"configuration": after}, undo=undo,
        message=f"{what[0].upper()}{what[1:]} bucket {bucket}: done",
    ), source_system="aws-s3")


@action("aws")
def block_public_access(args: BucketArgs, ctx: ActionContext) -> Outcome:
    """Turn on all four S3 public access blocks of a bucket (reversible)."""
    return _set_public_access_block(ctx, args.bucket, dict(_ALL_BLOCKED), undo_of=False)


@action("aws")
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
    found = _call(ctx, s3, "head_object", absent=("404", "NoSuchKey", "NoSuchVersion", "405"),
                  Bucket=bucket, Key=key, **extra)
    if found is None:
        return None
    return {name: found.get(name) for name in ("VersionId", "ETag", "ContentLength", "LastModified", "ContentType",
                                               "ServerSideEncryption", "SSEKMSKeyId", "ObjectLockMode")}


@action("aws")
def restore_object_version(args: ObjectVersionArgs, ctx: ActionContext) -> Outcome:
    """Make an earlier S3 object version current again by copying it over the latest (history kept)."""
    s3 = aws_client("s3")
    versioning = _call(ctx, s3, "get_bucket_versioning", absent=("NoSuchBucket",), Bucket=args.bucket)
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
    target = f"s3-object/{args.bucket}/{args.key}"
    journal = Journal(ctx, target)
    before, replayed = journal.first("before", {"latest": latest, "restoring": good}, source_system="aws-s3")
    same = latest is not None and latest["ETag"] == good["ETag"]
    created = journal.load("created")
    undo = None
    if created:
        undo = UndoPlan(action="aws.remove_object_version",
                        args={"bucket": args.bucket, "key": args.key, "version_id": created})
    if ctx.dry_run:
        return _finish(ctx, journal, Outcome(
            target=target, changed=False, dry_run=True, before=before,
            message=f"dry run: would copy version {args.version_id} of s3://{args.bucket}/{args.key} over the latest"
                    + (" (the latest already has that content)" if same else ""),
            checks=["s3:GetBucketVersioning and s3:HeadObject: bucket versioned, version found (S3 has no DryRun)"],
            details={"would_change": not same},
        ), source_system="aws-s3")
    if same:
        why = "by an earlier attempt of this step" if created else "already"
        return _finish(ctx, journal, Outcome(
            target=target, changed=False, before=before, after={"latest": latest}, undo=undo,
            message=f"the latest version of s3://{args.bucket}/{args.key} already has the content of "
                    f"{args.version_id} ({why}): nothing changed",
        ), source_system="aws-s3")
    extra: dict[str, Any] = {}
    if good.get("ServerSideEncryption") == "aws:kms":
        extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": good["SSEKMSKeyId"]}
    copied = _call(ctx, s3, "copy_object", Bucket=args.bucket, Key=args.key, MetadataDirective="COPY",
                   TaggingDirective="COPY",
                   CopySource={"Bucket": args.bucket, "Key": args.key, "VersionId": args.version_id}, **extra)
    new_version = copied.get("VersionId")
    journal.archive("created", new_version, source_system="aws-s3")
    after = _head(ctx, s3, args.bucket, args.key)
    return _finish(ctx, journal, Outcome(
        target=target, changed=True, before=before, after={"latest": after},
        undo=UndoPlan(action="aws.remove_object_version",
                      args={"bucket": args.bucket, "key": args.key, "version_id": new_version}),
        message=f"version {args.version_id} of s3://{args.bucket}/{args.key} restored as new version {new_version}",
    ), source_system="aws-s3")


@action("aws")
def remove_object_version(args: ObjectVersionArgs, ctx: ActionContext) -> Outcome:
    """Delete one S3 object version, e.g. the copy aws.restore_object_version made (its undo)."""
    s3 = aws_client("s3")
    found = _head(ctx, s3, args.bucket, args.key, args.version_id)
    target = f"s3-object/{args.bucket}/{args.key}/{args.version_id}"
    journal = Journal(ctx, target)
    before, _ = journal.first("before", {"version": found, "latest": _head(ctx, s3, args.bucket, args.key)},
                              source_system="aws-s3")
    if ctx.dry_run:
        return _finish(ctx, journal, Outcome(
            target=target, changed=False, dry_run=True, before=before,
            message=f"dry run: would delete version {args.version_id} of s3://{args.bucket}/{args.key}"
                    + ("" if found else " (already gone)"),
            checks=["s3:HeadObject: version found (S3 has no DryRun)"], details={"would_change": found is not None},
        ), source_system="aws-s3")
    if found is None:
        return _finish(ctx, journal, Outcome(
            target=target, changed=False, before=before, after={"version": None},
            message=f"version {args.version_id} of s3://{args.bucket}/{args.key} is already gone: nothing changed",
        ), source_system="aws-s3")
    _call(ctx, s3, "delete_object", Bucket=args.bucket, Key=args.key, VersionId=args.version_id)
    return _finish(ctx, journal, Outcome(
        target=target, changed=True, before=before,
        after={"version": None, "latest": _head(ctx, s3, args.bucket, args.key)},
        message=f"version {args.version_id} of s3://{args.bucket}/{args.key} deleted",
    ), source_system="aws-s3")


# --- CloudTrail ----------------------------------------------------------------------------------


class CloudTrailArgs(ActionArgs):
    value: str = Field(..., min_length=1, description="The actor or thing to look up, e.g. a user name or key id.")
    attribute: Literal["Username", "AccessKeyId", "EventName", "ResourceName", "ResourceType", "EventSource",
                       "EventId", "ReadOnly"] = Field("Username", description="CloudTrail lookup attribute.")
    start: datetime | None = Field(None, description="Start of the window; default: detection minus lookback_hours.")
    end: datetime | None = Field(None, description="End of the window; default: now.")
    lookback_hours: float = Field(24, gt=0, le=2160, description="Window before detection when start is unset.")
    max_events: int = Field(1000, ge=1, le=50_000, description="Stop after this many events (truncated is set).")


@action("aws")
def lookup_cloudtrail_events(args: CloudTrailArgs, ctx: ActionContext) -> Outcome:
    """Archive the CloudTrail management events of an actor as evidence (read only)."""
    cloudtrail = aws_client("cloudtrail")
    end = _aware(args.end or utcnow())
    start = _aware(args.start or (ctx.incident.detected_at - timedelta(hours=args.lookback_hours)))
    query = {"LookupAttributes": [{"AttributeKey": args.attribute, "AttributeValue": args.value}],
             "StartTime": start, "EndTime": end}
    target = f"cloudtrail/{args.attribute}/{args.value}"
    if ctx.dry_run:
        _call(ctx, cloudtrail, "lookup_events", MaxResults=1, **query)
        ctx.record(f"dry run: CloudTrail lookup of {args.attribute}={args.value} is allowed", kind="note")
        return Outcome(target=target, changed=False, dry_run=True,
                       message=f"dry run: would archive CloudTrail events of {args.attribute}={args.value}",
                       checks=["cloudtrail:LookupEvents: allowed (one event read)"])
    events: list[dict[str, Any]] = []
    token = None
    truncated = False
    while True:
        paging = {"NextToken": token} if token else {}
        page = _call(ctx, cloudtrail, "lookup_events", MaxResults=50, **query, **paging)
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


# --- Secrets Manager -----------------------------------------------------------------------------


class RotateSecretArgs(ActionArgs):
    secret_id: Annotated[str, Target("secret")] = Field(..., min_length=1, description="Secret name or ARN.")
    mode: Literal["auto", "rotation_function", "new_value"] = Field(
        "auto", description="rotation_function: RotateSecret (needs one); new_value: a random value put as current; "
                            "auto: the function when configured, else a new value.")
    json_key: str | None = Field(None, description="new_value on a JSON secret: the key whose value is replaced.")
    length: int = Field(40, ge=16, le=4096, description="new_value: length of the generated value.")
    exclude_punctuation: bool = Field(False, description="new_value: letters and digits only.")


def _secret_state(ctx: ActionContext, sm: Any, secret_id: str) -> dict[str, Any]:
    found = _call(ctx, sm, "describe_secret", absent=("ResourceNotFoundException",), SecretId=secret_id)
    if found is None:
        raise PermanentError(f"no secret {secret_id!r} in Secrets Manager", provider="AWS secretsmanager",
                             code="ResourceNotFoundException")
    stages = found.get("VersionIdsToStages", {})
    current = next((v for v, s in stages.items() if "AWSCURRENT" in s), None)
    previous = next((v for v, s in stages.items() if "AWSPREVIOUS" in s), None)
    return {"arn": found["ARN"], "name": found["Name"], "rotation_function": found.get("RotationLambdaARN"),
            "rotation_enabled": bool(found.get("RotationEnabled")), "current_version": current,
            "previous_version": previous, "versions": stages}


@action("aws")
def rotate_secret(args: RotateSecretArgs, ctx: ActionContext) -> Outcome:
    """Rotate a Secrets Manager secret (its rotation function, or a new random value); values never recorded."""
    sm = aws_client("secretsmanager")
    current = _secret_state(ctx, sm, args.secret_id)
    target = f"secret/{current['name']}"
    journal = Journal(ctx, target)
    before, _ = journal.first("before", current, source_system="aws-secretsmanager")
    token = str(uuid.uuid5(uuid.NAMESPACE_URL, f"irp:{ctx.incident.id}:{ctx.stage.value}:{ctx.step}:{current['arn']}"))
    mode = args.mode
    if mode == "auto":
        mode = "rotation_function" if current["rotation_function"] else "new_value"
    if mode == "rotation_function" and not current["rotation_function"]:
        raise PermanentError(f"secret {current['name']} has no rotation function: use mode new_value",
                             provider="AWS secretsmanager", code="InvalidRequestException")
    undo = None
    if before["current_version"]:
        undo = UndoPlan(action="aws.restore_secret_version", args={
            "secret_id": current["arn"], "version_id": before["current_version"], "rotated_version_id": token})
    done = "AWSCURRENT" in current["versions"].get(token, [])
    if ctx.dry_run:
        checks = ["secretsmanager:DescribeSecret: secret found (Secrets Manager has no DryRun)"]
        if mode == "new_value" and args.json_key:
            value = _call(ctx, sm, "get_secret_value", SecretId=args.secret_id)
            _replace_key(value.get("SecretString"), args.json_key, "x")  # checks the shape, value discarded
            checks.append(f"secretsmanager:GetSecretValue: JSON key {args.json_key!r} present")
        return _finish(ctx, journal, Outcome(
            target=target, changed=False, dry_run=True, before=before, checks=checks,
            message=f"dry run: would rotate secret {current['name']} ({mode})" + (" (already done)" if done else ""),
            details={"would_change": not done, "mode": mode},
        ), source_system="aws-secretsmanager")
    if done:
        return _finish(ctx, journal, Outcome(
            target=target, changed=False, before=before, after=current, undo=undo,
            message=f"secret {current['name']} was already rotated by this step (version {token}): nothing changed",
        ), source_system="aws-secretsmanager")
    if mode == "rotation_function":
        _call(ctx, sm, "rotate_secret", SecretId=current["arn"], ClientRequestToken=token, RotateImmediately=True)
    else:
        generated = _call(ctx, sm, "get_random_password", PasswordLength=args.length,
                          ExcludePunctuation=args.exclude_punctuation)["RandomPassword"]
        if args.json_key:
            old = _call(ctx, sm, "get_secret_value", SecretId=current["arn"]).get("SecretString")
            value = _replace_key(old, args.json_key, generated)
        else:
            value = generated
        _call(ctx, sm, "put_secret_value", SecretId=current["arn"], ClientRequestToken=token, SecretString=value,
              VersionStages=["AWSCURRENT"])
        del generated, value
    after = _secret_state(ctx, sm, current["arn"])
    return _finish(ctx, journal, Outcome(
        target=target, changed=True, before=before, after=after, undo=undo,
        message=f"secret {current['name']} rotated ({mode}): version {after['current_version']} is current, "
                f"{before['current_version']} previous",
        details={"mode": mode, "warning": "a new value only in Secrets Manager does not change the credential at "
                                          "its service: restart or reconfigure its consumers" if mode == "new_value"
                 else ""},
    ), source_system="aws-secretsmanager")


def _replace_key(secret_string: str | None, key: str, value: str) -> str:
    try:
        document = json.loads(secret_string or "")
    except ValueError:
        raise PermanentError("the secret is not a JSON document: drop json_key to replace the whole value",
                             provider="AWS secretsmanager", code="NotJson") from None
    if not isinstance(document, dict) or key not in document:
        keys = ", ".join(sorted(document)) if isinstance(document, dict) else "none"
        raise PermanentError(f"the secret has no key {key!r}; its keys: {keys}", provider="AWS secretsmanager",
                             code="NoSuchKey")
    document[key] = value
    return json.dumps(document)


class SecretVersionArgs(ActionArgs):
    secret_id: Annotated[str, Target("secret")] = Field(..., min_length=1, description="Secret name or ARN.")
    version_id: str = Field(..., min_length=1, description="The version to make AWSCURRENT again.")
    rotated_version_id: str | None = Field(None, description="The version the rotation made current (informative).")


@action("aws")
def restore_secret_version(args: SecretVersionArgs, ctx: ActionContext) -> Outcome:
    """Make an earlier secret version current again (undo of aws.rotate_secret)."""
    sm = aws_client("secretsmanager")
    current = _secret_state(ctx, sm, args.secret_id)
    target = f"secret/{current['name']}"
    journal = Journal(ctx, target)
    before, _ = journal.first("before", current, source_system="aws-secretsmanager")
    if args.version_id not in current["versions"]:
        raise PermanentError(f"secret {current['name']} has no version {args.version_id} any more",
                             provider="AWS secretsmanager", code="ResourceNotFoundException")
    done = current["current_version"] == args.version_id
    if ctx.dry_run:
        return _finish(ctx, journal, Outcome(
            target=target, changed=False, dry_run=True, before=before,
            message=f"dry run: would make version {args.version_id} of {current['name']} current"
                    + (" (already current)" if done else ""),
            checks=["secretsmanager:DescribeSecret: secret and version found (no DryRun)"],
            details={"would_change": not done},
        ), source_system="aws-secretsmanager")
    if done:
        return _finish(ctx, journal, Outcome(
            target=target, changed=False, before=before, after=current,
            message=f"version {args.version_id} of {current['name']} is already current: nothing changed",
        ), source_system="aws-secretsmanager")
    _call(ctx, sm, "update_secret_version_stage", SecretId=current["arn"], VersionStage="AWSCURRENT",
          MoveToVersionId=args.version_id, RemoveFromVersionId=current["current_version"])
    after = _secret_state(ctx, sm, current["arn"])
    return _finish(ctx, journal, Outcome(
        target=target, changed=True, before=before, after=after,
        message=f"version {args.version_id} of {current['name']} is current again",
    ), source_system="aws-secretsmanager")

