"""IAM actions: describe an access key; deactivate and reactivate access keys, deny-all and revoke-sessions
inline policies.

Side effects, not in dry runs: what aws.describe_access_key read archived (redacted); access key
status changed, inline policies put or deleted on users and roles; the state before and after
archived under actions/<stage>/<step>/ (IAM has no DryRun).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from irp.actions.aws.clients import archive_facts, aws_client, call, fact_tags, pages
from irp.actions.base import Change, Journal, Outcome, UndoPlan, run_change
from irp.actions.registry import ActionArgs, ActionContext, Target, action
from irp.actions.target_rules import check_protected
from irp.errors import PermanentError
from irp.models import utcnow

DENY_ALL_POLICY = "irp-deny-all"
REVOKE_POLICY = "AWSRevokeOlderSessions"  # the name the IAM console uses for the same policy


class AccessKeyArgs(ActionArgs):
    access_key_id: Annotated[str, Target("access_key")] = Field(..., pattern=r"^AKIA[A-Z0-9]{12,124}$",
                               description="Long-term access key id (AKIA...); temporary ASIA keys: revoke sessions.")
    user_name: Annotated[str | None, Target("iam_user")] = Field(
        None, description="Owner of the key; looked up from the key when unset.")


def _key_status(ctx: ActionContext, iam: Any, args: AccessKeyArgs) -> tuple[str, str]:
    user = args.user_name
    if user is None:
        found = call(ctx, iam, "get_access_key_last_used", AccessKeyId=args.access_key_id)
        user = found.get("UserName") if found else None
        if not user:
            raise PermanentError(f"access key {args.access_key_id} belongs to no IAM user of this account",
                                 provider="AWS iam", code="NoSuchEntity")
    keys = call(ctx, iam, "list_access_keys", UserName=user)["AccessKeyMetadata"]
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
    journal, before, replayed = Journal.begin(ctx, f"iam-user/{user}/{args.access_key_id}",
                                                   {"user_name": user, "status": status}, source_system="aws-iam")
    verb = "deactivate" if wanted == "Inactive" else "reactivate"
    undo = None
    if wanted == "Inactive" and before["status"] == "Active":
        undo = UndoPlan(action="aws.activate_access_key",
                        args={"access_key_id": args.access_key_id, "user_name": user})

    def write() -> dict[str, Any]:
        call(ctx, iam, "update_access_key", UserName=user, AccessKeyId=args.access_key_id, Status=wanted)
        return {"user_name": user, "status": _key_status(ctx, iam, args.model_copy(update={"user_name": user}))[1]}

    state = "already " + wanted.lower() if status == wanted else f"currently {status.lower()}"
    return run_change(ctx, Change(
        journal=journal, source_system="aws-iam", before=before, done=status == wanted, write=write,
        current={"user_name": user, "status": status}, redone=replayed and before["status"] != wanted, undo=undo,
        dry_run=f"dry run: would {verb} access key {args.access_key_id} of {user} ({state})",
        checks=lambda: ["iam:GetAccessKeyLastUsed and iam:ListAccessKeys: target found (IAM has no DryRun)"],
        unchanged=f"access key {args.access_key_id} of {user} is already {wanted.lower()} ({{why}}): nothing changed",
        changed=lambda _: f"access key {args.access_key_id} of {user} {verb}d (was {status.lower()})",
    ))


@action
def deactivate_access_key(args: AccessKeyArgs, ctx: ActionContext) -> Outcome:
    """Deactivate an IAM user's access key (reversible: aws.activate_access_key)."""
    return _set_key(args, ctx, "Inactive")


@action
def activate_access_key(args: AccessKeyArgs, ctx: ActionContext) -> Outcome:
    """Reactivate an IAM access key deactivated by mistake (undo of aws.deactivate_access_key)."""
    return _set_key(args, ctx, "Active")


Principal = Literal["user", "role"]


def _get_inline(ctx: ActionContext, iam: Any, kind: Principal, name: str, policy: str) -> dict[str, Any] | None:
    if kind == "user":
        found = call(ctx, iam, "get_user_policy", absent=("NoSuchEntity",), UserName=name, PolicyName=policy)
    else:
        found = call(ctx, iam, "get_role_policy", absent=("NoSuchEntity",), RoleName=name, PolicyName=policy)
    if found is None:
        return None
    document = found["PolicyDocument"]
    return json.loads(document) if isinstance(document, str) else document


def _check_principal(ctx: ActionContext, iam: Any, kind: Principal, name: str) -> str:
    if kind == "user":
        found = call(ctx, iam, "get_user", absent=("NoSuchEntity",), UserName=name)
        arn = found and found["User"]["Arn"]
    else:
        found = call(ctx, iam, "get_role", absent=("NoSuchEntity",), RoleName=name)
        arn = found and found["Role"]["Arn"]
    if not arn:
        raise PermanentError(f"no IAM {kind} named {name!r} in this account", provider="AWS iam", code="NoSuchEntity")
    return arn


def _put_inline(ctx: ActionContext, iam: Any, kind: Principal, name: str, policy: str, document: dict) -> None:
    text = json.dumps(document)
    if kind == "user":
        call(ctx, iam, "put_user_policy", UserName=name, PolicyName=policy, PolicyDocument=text)
    else:
        call(ctx, iam, "put_role_policy", RoleName=name, PolicyName=policy, PolicyDocument=text)


def _delete_inline(ctx: ActionContext, iam: Any, kind: Principal, name: str, policy: str) -> None:
    if kind == "user":
        call(ctx, iam, "delete_user_policy", absent=("NoSuchEntity",), UserName=name, PolicyName=policy)
    else:
        call(ctx, iam, "delete_role_policy", absent=("NoSuchEntity",), RoleName=name, PolicyName=policy)


def _apply_inline(ctx: ActionContext, kind: Principal, name: str, policy: str, wanted: dict | None,
                  what: str, undo_of: bool = False) -> Outcome:
    """Make inline policy `policy` of the principal equal `wanted` (None: absent); before/after archived."""
    iam = aws_client("iam")
    arn = _check_principal(ctx, iam, kind, name)
    current = _get_inline(ctx, iam, kind, name, policy)
    journal, before, replayed = Journal.begin(ctx, f"iam-{kind}/{name}/{policy}",
                                                   {"arn": arn, "policy": current}, source_system="aws-iam")
    undo = None
    if not undo_of and before["policy"] != wanted:
        undo = UndoPlan(action="aws.restore_inline_policy",
                        args={"principal_type": kind, "name": name, "policy_name": policy,
                              "document": before["policy"]})

    def write() -> dict[str, Any]:
        if wanted is None:
            _delete_inline(ctx, iam, kind, name, policy)
        else:
            _put_inline(ctx, iam, kind, name, policy, wanted)
        return {"arn": arn, "policy": _get_inline(ctx, iam, kind, name, policy)}

    return run_change(ctx, Change(
        journal=journal, source_system="aws-iam", before=before, done=current == wanted, write=write,
        current={"arn": arn, "policy": current}, redone=replayed and before["policy"] != wanted, undo=undo,
        dry_run=f"dry run: would {what}" + (" (already in place)" if current == wanted else ""),
        checks=lambda: [f"iam:Get{kind.title()} and iam:Get{kind.title()}Policy: target found (IAM has no DryRun)"],
        unchanged=f"inline policy {policy} of {kind} {name} is already as wanted ({{why}}): nothing changed",
        changed=lambda _: f"{what[0].upper()}{what[1:]}: done",
    ))


class DenyPolicyArgs(ActionArgs):
    principal_type: Principal = Field(..., description="user or role.")
    name: Annotated[str, Target("iam_{principal_type}")] = Field(
        ..., min_length=1, max_length=128, description="IAM user or role name.")
    policy_name: str = Field(DENY_ALL_POLICY, description="Name of the inline deny-all policy.")


DENY_ALL_DOCUMENT = {
    "Version": "2012-10-17",
    "Statement": [{"Sid": "IrpIncidentDenyAll", "Effect": "Deny", "Action": "*", "Resource": "*"}],
}


@action
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


@action
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


@action
def restore_inline_policy(args: InlinePolicyArgs, ctx: ActionContext) -> Outcome:
    """Put an inline IAM policy back as it was, or delete it (undo of deny and revoke actions)."""
    what = (f"delete inline policy {args.policy_name} of {args.principal_type} {args.name}" if args.document is None
            else f"restore inline policy {args.policy_name} of {args.principal_type} {args.name}")
    return _apply_inline(ctx, args.principal_type, args.name, args.policy_name, args.document, what, undo_of=True)


class DescribeAccessKeyArgs(ActionArgs):
    access_key_id: str = Field(..., pattern=r"^AKIA[A-Z0-9]{12,124}$",
                               description="Long-term access key id (AKIA...) to describe.")


def _user_facts(ctx: ActionContext, iam: Any, user: str) -> dict[str, Any]:
    inline = pages(ctx, iam, "list_user_policies", "PolicyNames", UserName=user)
    login = call(ctx, iam, "get_login_profile", absent=("NoSuchEntity",), UserName=user)
    return {
        "attached_policies": [p["PolicyName"] for p in
                              pages(ctx, iam, "list_attached_user_policies", "AttachedPolicies", UserName=user)],
        "inline_policies": {name: call(ctx, iam, "get_user_policy", UserName=user, PolicyName=name)["PolicyDocument"]
                            for name in inline},
        "groups": [g["GroupName"] for g in pages(ctx, iam, "list_groups_for_user", "Groups", UserName=user)],
        "console_login": login is not None,
        "mfa_devices": len(pages(ctx, iam, "list_mfa_devices", "MFADevices", UserName=user)),
        **fact_tags(pages(ctx, iam, "list_user_tags", "Tags", UserName=user)),
    }


@action
def describe_access_key(args: DescribeAccessKeyArgs, ctx: ActionContext) -> Outcome:
    """Archive and return an access key's user, status, last use, policies, groups, login, MFA and tags (read only)."""
    iam = aws_client("iam")
    used = call(ctx, iam, "get_access_key_last_used", absent=("NoSuchEntity",), AccessKeyId=args.access_key_id)
    if not used or not used.get("UserName"):
        raise PermanentError(f"access key {args.access_key_id} is not a key of this AWS account (or was deleted)",
                             provider="AWS iam", code="NoSuchEntity")
    user, last = used["UserName"], used.get("AccessKeyLastUsed", {})
    facts: dict[str, Any] = {
        "access_key_id": args.access_key_id, "user": user,
        "last_used": {"time": last.get("LastUsedDate"), "service": last.get("ServiceName"),
                      "region": last.get("Region")},
    }
    if call(ctx, iam, "get_user", absent=("NoSuchEntity",), UserName=user) is None:  # the root user's key
        facts.update(root=True, status=None, created=None)
    else:
        key = next((k for k in pages(ctx, iam, "list_access_keys", "AccessKeyMetadata", UserName=user)
                    if k["AccessKeyId"] == args.access_key_id), {})
        facts.update(root=False, status=key.get("Status"), created=key.get("CreateDate"),
                     **_user_facts(ctx, iam, user))
    return archive_facts(
        ctx, f"iam-access-key-{args.access_key_id}", facts, target=f"iam-user/{user}/{args.access_key_id}",
        source_system="aws-iam",
        message=f"access key {args.access_key_id}: user {user}, {facts.get('status') or 'root key'}, last used "
                f"{facts['last_used']['time'] or 'never'}"
                + (f" ({facts['last_used']['service']})" if facts["last_used"]["time"] else ""),
    )
