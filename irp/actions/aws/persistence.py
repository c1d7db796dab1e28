"""IAM persistence an attacker may have left: aws.list_persistence (read only) and aws.remove_persistence.

list_persistence reads, for one IAM user or the whole account, what was created in a time window:
access keys, users, console passwords (login profiles), MFA devices, and roles that trust an account
other than this one and IRP_AWS_TRUSTED_ACCOUNTS; the list is archived and returned, with the lists
remove_persistence takes. remove_persistence changes each item as its own target (journal, dry run,
idempotent): access keys deactivated, login profiles deleted, virtual MFA devices deactivated and
deleted, users and roles given the inline deny-all policy. Only the keys and the deny-all policies
can be undone (aws.restore_persistence): a deleted login profile or MFA device cannot be restored.
Playbooks put remove_persistence behind an approval: what it removes may be legitimate.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import unquote

from pydantic import Field, ValidationInfo, field_validator

from irp.actions.aws.clients import aws_client, call
from irp.actions.aws.iam import DENY_ALL_DOCUMENT, DENY_ALL_POLICY, AccessKeyArgs, _apply_inline, _set_key
from irp.actions.base import Change, CommaList, Journal, Outcome, UndoPlan, run_change, slug
from irp.actions.registry import ActionArgs, ActionContext, Target, action
from irp.errors import PermanentError, ProtectedTargetError
from irp.models import utcnow
from irp.settings import get_settings


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _pages(ctx: ActionContext, iam: Any, operation: str, key: str, limit: int = 10_000, **kwargs: Any) -> list[dict]:
    """Every item of an IAM listing (Marker paging), at most `limit`."""
    items: list[dict] = []
    marker = None
    while len(items) < limit:
        page = call(ctx, iam, operation, **kwargs, **({"Marker": marker} if marker else {}))
        items += page.get(key, [])
        if not page.get("IsTruncated"):
            break
        marker = page["Marker"]
    return items[:limit]


def _trusted_accounts(document: Any) -> set[str]:
    """The accounts (or '*') an assume-role policy lets in through AWS principals."""
    if isinstance(document, str):
        document = json.loads(unquote(document))
    found = set()
    statements = document.get("Statement", [])
    for statement in statements if isinstance(statements, list) else [statements]:
        principal = statement.get("Principal", {}) if statement.get("Effect") == "Allow" else {}
        values = principal.get("AWS", []) if isinstance(principal, dict) else [principal]
        for value in values if isinstance(values, list) else [values]:
            found.add("*" if value == "*" else value.split(":")[4] if value.startswith("arn:") else value)
    return found


class ListPersistenceArgs(ActionArgs):
    user_name: str | None = Field(None, min_length=1, max_length=64,
                                  description="Only this IAM user (keys, login profile, MFA); default: the account.")
    since: datetime | None = Field(None, description="Start of the window; default: detection minus lookback_hours.")
    until: datetime | None = Field(None, description="End of the window; default: now.")
    lookback_hours: float = Field(72, gt=0, le=2160, description="Window before detection when since is unset.")
    max_users: int = Field(1000, ge=1, le=10_000, description="Read at most this many users (truncated is set).")


def _user_items(ctx: ActionContext, iam: Any, user: dict[str, Any], within: Callable[[Any], bool]) -> list[dict]:
    name = user["UserName"]
    items = [{"kind": "user", "id": name, "user_name": name, "created": user["CreateDate"]}] \
        if within(user["CreateDate"]) else []
    items += [{"kind": "access_key", "id": k["AccessKeyId"], "user_name": name, "created": k["CreateDate"],
               "status": k["Status"]} for k in _pages(ctx, iam, "list_access_keys", "AccessKeyMetadata", UserName=name)
              if within(k["CreateDate"])]
    profile = call(ctx, iam, "get_login_profile", absent=("NoSuchEntity",), UserName=name)
    if profile and within(profile["LoginProfile"]["CreateDate"]):
        items.append({"kind": "login_profile", "id": name, "user_name": name,
                      "created": profile["LoginProfile"]["CreateDate"]})
    items += [{"kind": "mfa_device", "id": m["SerialNumber"], "user_name": name, "created": m["EnableDate"]}
              for m in _pages(ctx, iam, "list_mfa_devices", "MFADevices", UserName=name) if within(m["EnableDate"])]
    return items


@action
def list_persistence(args: ListPersistenceArgs, ctx: ActionContext) -> Outcome:
    """List the IAM keys, users, console passwords, MFA devices and trusting roles created in a window (read only)."""
    iam = aws_client("iam")
    until = _aware(args.until or utcnow())
    since = _aware(args.since or (ctx.incident.detected_at - timedelta(hours=args.lookback_hours)))
    scope = f"iam-user/{args.user_name}" if args.user_name else "account"
    if ctx.dry_run:
        call(ctx, iam, "list_users", MaxItems=1)
        return Outcome(target=f"iam-persistence/{scope}", changed=False, dry_run=True, checks=["iam:ListUsers: allowed"],
                       message=f"dry run: would list what was created in {scope} from {since:%Y-%m-%d %H:%M} UTC")

    def within(moment: Any) -> bool:
        return since <= _aware(moment if isinstance(moment, datetime) else datetime.fromisoformat(moment)) <= until

    if args.user_name:
        found = call(ctx, iam, "get_user", absent=("NoSuchEntity",), UserName=args.user_name)
        if not found:
            raise PermanentError(f"no IAM user named {args.user_name!r} in this account", provider="AWS iam",
                                 code="NoSuchEntity")
        users, truncated = [found["User"]], False
    else:
        users = _pages(ctx, iam, "list_users", "Users", limit=args.max_users + 1)
        truncated, users = len(users) > args.max_users, users[: args.max_users]
    items = [item for user in users for item in _user_items(ctx, iam, user, within)]
    if not args.user_name:
        known = {call(ctx, aws_client("sts"), "get_caller_identity")["Account"], *get_settings().aws_trusted_accounts}
        for role in _pages(ctx, iam, "list_roles", "Roles"):
            outside = sorted(_trusted_accounts(role.get("AssumeRolePolicyDocument") or {}) - known)
            if outside and within(role["CreateDate"]):
                items.append({"kind": "role", "id": role["RoleName"], "created": role["CreateDate"], "trusts": outside})
    items = json.loads(json.dumps(items, default=str))  # dates as text; nothing secret is read
    lists = {kind: [i["id"] for i in items if i["kind"] == kind]
             for kind in ("access_key", "login_profile", "mfa_device", "user", "role")}
    item = ctx.archive_json(f"actions/{ctx.stage.value}/{ctx.step}/iam-persistence-{slug(scope)}.json", {
        "query": {"scope": scope, "since": since.isoformat(), "until": until.isoformat()}, "truncated": truncated,
        "items": items}, source_system="aws-iam", source_time=until.isoformat())
    outcome = Outcome(
        target=f"iam-persistence/{scope}", changed=False,
        message=f"{len(items)} IAM item(s) created in {scope} between {since:%Y-%m-%d %H:%M} and {until:%Y-%m-%d %H:%M}"
                f" UTC archived" + (" (users truncated)" if truncated else ""),
        details={"items": items, "truncated": truncated, "evidence": item.name, "sha256": item.sha256,
                 "since": since.isoformat(), "until": until.isoformat(),
                 **{f"{kind}s": ids for kind, ids in lists.items()}},
    )
    ctx.record(outcome.message, kind="evidence", evidence=item.name)
    return outcome


# --- removing it ---------------------------------------------------------------------------------


_IDS = {"access_keys": (r"AKIA[A-Z0-9]{12,124}", "access key ids (AKIA...)"),
        "mfa_devices": (r"arn:aws[a-z-]*:iam::[0-9]{12}:mfa/[A-Za-z0-9_+=,.@/-]+",
                        "virtual MFA device serial numbers (arn:aws:iam::ACCOUNT:mfa/NAME)")}


class RemovePersistenceArgs(ActionArgs):
    access_keys: Annotated[CommaList, Target("access_key")] = Field(
        default_factory=list, description="Access key ids to deactivate (undo: reactivated).")
    login_profiles: Annotated[CommaList, Target("iam_user")] = Field(
        default_factory=list, description="IAM users whose console password is deleted (cannot be restored).")
    mfa_devices: Annotated[CommaList, Target("mfa_device")] = Field(
        default_factory=list, description="Virtual MFA device serial numbers to deactivate and delete (cannot be "
                                          "restored).")
    users: Annotated[CommaList, Target("iam_user")] = Field(
        default_factory=list, description="IAM users to deny everything (inline deny-all policy; undo: removed).")
    roles: Annotated[CommaList, Target("iam_role")] = Field(
        default_factory=list, description="IAM roles to deny everything, e.g. trusting an unknown account (undo: "
                                          "removed).")

    @field_validator("access_keys", "mfa_devices")
    @classmethod
    def _ids(cls, values: list[str], info: ValidationInfo) -> list[str]:
        pattern, valid = _IDS[info.field_name]
        bad = [v for v in values if not re.fullmatch(pattern, v)]
        if bad:
            raise ValueError(f"{', '.join(bad)}: not {valid}")
        return values


def _delete_login_profile(ctx: ActionContext, iam: Any, user: str) -> Outcome:
    def read() -> dict[str, Any] | None:
        found = call(ctx, iam, "get_login_profile", absent=("NoSuchEntity",), UserName=user)
        return json.loads(json.dumps(found["LoginProfile"], default=str)) if found else None

    current = read()
    journal, before, _ = Journal.begin(ctx, f"iam-user/{user}/login-profile", {"login_profile": current},
                                       source_system="aws-iam")

    def write() -> dict[str, Any]:
        call(ctx, iam, "delete_login_profile", absent=("NoSuchEntity",), UserName=user)
        return {"login_profile": read()}

    return run_change(ctx, Change(
        journal=journal, source_system="aws-iam", before=before, done=current is None, write=write,
        current={"login_profile": None}, checks=lambda: ["iam:GetLoginProfile: read (IAM has no DryRun)"],
        dry_run=f"dry run: would delete the console password of {user}" + ("" if current else " (has none)"),
        unchanged=f"IAM user {user} has no console password ({{why}}): nothing changed",
        changed=lambda _: f"console password (login profile) of {user} deleted: it cannot be restored, set a new one "
                          "if the user needs the console",
    ))


def _delete_mfa_device(ctx: ActionContext, iam: Any, serial: str) -> Outcome:
    def read() -> dict[str, Any] | None:
        devices = _pages(ctx, iam, "list_virtual_mfa_devices", "VirtualMFADevices", AssignmentStatus="Any")
        found = next((d for d in devices if d["SerialNumber"] == serial), None)
        return {"serial": serial, "user_name": (found.get("User") or {}).get("UserName")} if found else None

    current = read()
    journal, before, _ = Journal.begin(ctx, f"mfa-device/{serial}", {"device": current}, source_system="aws-iam")

    def write() -> dict[str, Any]:
        if current["user_name"]:
            call(ctx, iam, "deactivate_mfa_device", absent=("NoSuchEntity",), UserName=current["user_name"],
                 SerialNumber=serial)
        call(ctx, iam, "delete_virtual_mfa_device", absent=("NoSuchEntity",), SerialNumber=serial)
        return {"device": read()}

    return run_change(ctx, Change(
        journal=journal, source_system="aws-iam", before=before, done=current is None, write=write,
        current={"device": None}, checks=lambda: ["iam:ListVirtualMFADevices: read (IAM has no DryRun)"],
        dry_run=f"dry run: would deactivate and delete virtual MFA device {serial}" + ("" if current else " (gone)"),
        unchanged=f"virtual MFA device {serial} does not exist ({{why}}): nothing changed",
        changed=lambda _: f"virtual MFA device {serial} deactivated and deleted: it cannot be restored",
    ))


def _items(args: RemovePersistenceArgs, ctx: ActionContext, iam: Any) -> list[tuple[str, Callable[[], Outcome]]]:
    """Each item to change, named, with the function that changes it."""
    def deny(kind: str, name: str) -> Callable[[], Outcome]:
        return lambda: _apply_inline(ctx, kind, name, DENY_ALL_POLICY, DENY_ALL_DOCUMENT,
                                     f"deny everything to {kind} {name} ({DENY_ALL_POLICY})")

    return [
        *[(f"access key {k}", lambda k=k: _set_key(AccessKeyArgs(access_key_id=k), ctx, "Inactive"))
          for k in args.access_keys],
        *[(f"login profile of {u}", lambda u=u: _delete_login_profile(ctx, iam, u)) for u in args.login_profiles],
        *[(f"MFA device {m}", lambda m=m: _delete_mfa_device(ctx, iam, m)) for m in args.mfa_devices],
        *[(f"user {u}", deny("user", u)) for u in args.users],
        *[(f"role {r}", deny("role", r)) for r in args.roles],
    ]


@action
def remove_persistence(args: RemovePersistenceArgs, ctx: ActionContext) -> Outcome:
    """Deactivate or delete what aws.list_persistence found: keys, console passwords, MFA devices (with approval)."""
    iam = aws_client("iam")
    done: list[Outcome] = []
    skipped: dict[str, str] = {}
    for name, change in _items(args, ctx, iam):
        try:
            done.append(change())
        except ProtectedTargetError as exc:
            skipped[name] = str(exc)
        except PermanentError as exc:
            if exc.code != "NoSuchEntity":
                raise
            skipped[name] = str(exc)  # gone already: nothing to remove
    undo_args: dict[str, list[str]] = {"access_keys": [], "users": [], "roles": []}
    for outcome in done:
        if outcome.undo and outcome.undo.action == "aws.activate_access_key":
            undo_args["access_keys"].append(outcome.undo.args["access_key_id"])
        elif outcome.undo and outcome.undo.args.get("document") is None:  # the deny-all policy this step put
            undo_args[f"{outcome.undo.args['principal_type']}s"].append(outcome.undo.args["name"])
    acted = [o for o in done if o.changed or o.details.get("would_change")]
    final = [o.target for o in acted if o.target.endswith("/login-profile") or o.target.startswith("mfa-device/")]
    verb = "would remove or deactivate" if ctx.dry_run else "removed or deactivated"
    return Outcome(
        target="iam-persistence", changed=any(o.changed for o in done), dry_run=ctx.dry_run,
        message=f"{'dry run: ' if ctx.dry_run else ''}{verb} {len(acted)} of {len(done) + len(skipped)} persistence "
                f"item(s)" + (f", {len(skipped)} skipped (gone or protected)" if skipped else "")
                + (f"; cannot be restored: {', '.join(final)}" if final else ""),
        undo=UndoPlan(action="aws.restore_persistence", args=undo_args) if any(undo_args.values()) else None,
        checks=[check for o in done for check in o.checks],
        details={"items": [{"target": o.target, "changed": o.changed, "message": o.message} for o in done],
                 "skipped": skipped, "cannot_be_restored": final},
    )


class RestorePersistenceArgs(ActionArgs):
    access_keys: Annotated[CommaList, Target("access_key")] = Field(default_factory=list,
                                                                    description="Access key ids to reactivate.")
    users: Annotated[CommaList, Target("iam_user")] = Field(
        default_factory=list, description="IAM users whose inline deny-all policy is removed.")
    roles: Annotated[CommaList, Target("iam_role")] = Field(
        default_factory=list, description="IAM roles whose inline deny-all policy is removed.")


@action
def restore_persistence(args: RestorePersistenceArgs, ctx: ActionContext) -> Outcome:
    """Reactivate the keys and lift the deny-all policies aws.remove_persistence set (its undo)."""
    done = [_set_key(AccessKeyArgs(access_key_id=k), ctx, "Active") for k in args.access_keys]
    done += [_apply_inline(ctx, kind, name, DENY_ALL_POLICY, None, f"delete inline policy {DENY_ALL_POLICY} of {kind} "
                           f"{name}", undo_of=True) for kind, names in (("user", args.users), ("role", args.roles))
             for name in names]
    changed = [o for o in done if o.changed]
    return Outcome(
        target="iam-persistence", changed=bool(changed), dry_run=ctx.dry_run,
        message=f"{'dry run: ' if ctx.dry_run else ''}{len(changed)} of {len(done)} item(s) restored",
        checks=[check for o in done for check in o.checks],
        details={"items": [{"target": o.target, "changed": o.changed, "message": o.message} for o in done]},
    )
