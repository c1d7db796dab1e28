"""Actions on the CallCenterRate platform's admin API (namespace `platform`): read-only enrichment and
evidence (describe a user or an API token, export the audit log) and containment.

Enrichment: platform.describe_user and platform.describe_token record the Client the admin API names
as an affected Client with origin "enrichment", confirmed only when the user or token id was written
in the playbook or given by a responder: when alert data chose the id, the alert chose whose Client is
looked up, so §7 letters to it wait for a responder's confirmation like any Client alert data names.

Side effects, only when the step is not a dry run: Client accounts suspended or reactivated, users
disabled or enabled, logged out everywhere or made to reset their password, API tokens revoked, tenants or features put
in or out of maintenance. Every request and response is archived as evidence under
actions/<stage>/<step>/http/ with the token redacted (irp/actions/http.py); the token is never
logged, returned or archived.

The admin API contract these actions assume is in docs/platform-api.md: base URL from
IRP_PLATFORM_API_URL, a bearer token from the Prefect Secret block named by
IRP_PLATFORM_TOKEN_BLOCK. Every write goes through `run_change`: the target is read first, the
write skipped when it is already in the wanted state, verified after; it carries an Idempotency-Key
stable across retries.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

import httpx
from pydantic import Field, model_validator

from irp.actions.base import Change, CommaList, Journal, Outcome, UndoPlan, WindowArgs, archive_facts, run_change
from irp.actions.http import secret_value, send
from irp.actions.registry import ActionArgs, ActionContext, Target, action, requires
from irp.errors import NotConfiguredError, PermanentError
from irp.redaction import redact
from irp.settings import get_settings

__all__ = ["PlatformApi", "stand_in"]

PROVIDER = "CallCenterRate admin API"


_STAND_IN: list[tuple[httpx.BaseTransport, str | None]] = []  # playbook tests: (transport, token) instead of HTTP


@contextmanager
def stand_in(transport: httpx.BaseTransport, token: str | None = None) -> Iterator[None]:
    """Send the admin API's requests to `transport` meanwhile (playbook tests replay and record answers at this
    edge: irp/playtest/replay.py); `token` stands in for the Secret block's."""
    _STAND_IN.append((transport, token))
    try:
        yield
    finally:
        _STAND_IN.pop()


def _token() -> str:
    if _STAND_IN and _STAND_IN[-1][1]:
        return _STAND_IN[-1][1]
    return secret_value(get_settings().platform_token_block)


def admin_api_configured() -> None:
    """Raise NotConfiguredError unless the admin API's URL and token are configured."""
    settings = get_settings()
    if not settings.platform_api_url:
        raise NotConfiguredError("CallCenterRate admin API: IRP_PLATFORM_API_URL is unset")
    _token()


requires("platform", admin_api_configured)


# --- the admin API -------------------------------------------------------------------------------


class PlatformApi:
    """A client of the admin API for one action run: base URL, token, timeouts, evidence."""

    def __init__(self, ctx: ActionContext) -> None:
        settings = get_settings()
        if not settings.platform_api_url:
            raise NotConfiguredError("CallCenterRate admin API: IRP_PLATFORM_API_URL is unset")
        self.ctx = ctx
        self.token = _token()
        self.client = httpx.Client(
            transport=_STAND_IN[-1][0] if _STAND_IN else None,
            base_url=settings.platform_api_url.rstrip("/") + "/",
            timeout=httpx.Timeout(settings.action_timeout_seconds),
            headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json",
                     "User-Agent": "irp-incident-response", "X-IRP-Incident": ctx.incident.id},
            follow_redirects=False,
        )

    def __enter__(self) -> PlatformApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def call(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        """Send a request to the API; its JSON answer, credentials redacted (None when empty)."""
        headers = {}
        if method not in ("GET", "HEAD"):
            key = uuid.uuid5(uuid.NAMESPACE_URL,
                             f"irp:{self.ctx.incident.id}:{self.ctx.stage.value}:{self.ctx.step}:{method}:{path}")
            headers["Idempotency-Key"] = str(key)
        response = send(self.ctx, self.client, PROVIDER, method, path.lstrip("/"), secrets=(self.token,),
                         json=body, headers=headers, params=params)
        if not response.content:
            return None
        try:
            return redact(response.json(), (self.token,))  # what actions keep, journal and return
        except ValueError:
            raise PermanentError(f"{PROVIDER} {method} /{path.lstrip('/')}: answer is not JSON",
                                 provider=PROVIDER, code="NotJson") from None

    def require_scope(self, scope: str) -> str:
        """Dry runs: check the token carries `scope` (GET auth/whoami); PermanentError when it does not."""
        whoami = self.call("GET", "auth/whoami") or {}
        scopes = whoami.get("scopes", [])
        if scope not in scopes:
            raise PermanentError(f"{PROVIDER}: the token of {whoami.get('subject', '?')} lacks scope {scope!r}; "
                                 f"it has: {', '.join(scopes) or 'none'}", provider=PROVIDER, code="403")
        return f"token of {whoami.get('subject', '?')} has scope {scope}"


def _target_get(api: PlatformApi, path: str, what: str) -> dict[str, Any]:
    found = api.call("GET", path)
    if not isinstance(found, dict):
        raise PermanentError(f"{PROVIDER}: GET /{path} did not return a {what}", provider=PROVIDER, code="Shape")
    return found



def _toggle(
    ctx: ActionContext,
    *,
    target: str,
    read_path: str,
    scope: str,
    is_done: Callable[[dict[str, Any]], bool],
    write: tuple[str, str, dict[str, Any]],
    describe: str,
    undo: Callable[[dict[str, Any]], UndoPlan] | None = None,
) -> Outcome:
    """Read the target; if not `is_done`, write and verify it is (run_change)."""
    method, path, body = write
    with PlatformApi(ctx) as api:
        current = _target_get(api, read_path, target)
        journal, before, replayed = Journal.begin(ctx, target, current, source_system=PROVIDER)
        plan = undo(before) if undo and not is_done(before) else None

        def change() -> dict[str, Any]:
            api.call(method, path, body)
            return _target_get(api, read_path, target)

        def verify(after: dict[str, Any]) -> None:
            if not is_done(after):
                raise PermanentError(f"{PROVIDER}: {method} /{path} answered OK but {target} is not changed",
                                     provider=PROVIDER, code="NoEffect")

        return run_change(ctx, Change(
            journal=journal, source_system=PROVIDER, before=before, done=is_done(current), write=change,
            verify=verify, current=current, redone=replayed and plan is not None, undo=plan,
            dry_run=f"dry run: would {describe}" + (" (already done)" if is_done(current) else ""),
            checks=lambda: [f"GET /{read_path}: target found", api.require_scope(scope)],
            unchanged=f"{target}: {describe} — already done ({{why}}): nothing changed",
            changed=lambda _: f"{describe}: done",
        ))


_ID = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"


class AccountArgs(ActionArgs):
    client_id: Annotated[str, Target("tenant")] = Field(..., pattern=_ID, description="Client account id on the platform.")
    reason: str = Field("security incident", min_length=1, max_length=500, description="Shown to the Client's admins.")


def _set_status(ctx: ActionContext, *, path: str, scope: str, verb: str, wanted: str, what: str, reason: str,
                undo: tuple[str, dict[str, Any]] | None) -> Outcome:
    """POST `path/verb` unless the object's status is already `wanted`; `undo`: (action, args) that reverses it."""
    def undo_plan(before: dict[str, Any]) -> UndoPlan:
        action, args = undo
        return UndoPlan(action=action, args={**args, "reason": f"undo of incident {ctx.incident.id} containment"})

    return _toggle(
        ctx, target=path.replace("clients/", "client/").replace("users/", "user/"), read_path=path, scope=scope,
        is_done=lambda found: found.get("status") == wanted,
        write=("POST", f"{path}/{verb}", {"reason": reason, "incident_id": ctx.incident.id}),
        describe=f"{verb} {what}", undo=undo_plan if undo else None,
    )


def _set_account(args: AccountArgs, ctx: ActionContext, verb: Literal["suspend", "reactivate"]) -> Outcome:
    return _set_status(
        ctx, path=f"clients/{args.client_id}", scope="clients:suspend", verb=verb, reason=args.reason,
        wanted="suspended" if verb == "suspend" else "active", what=f"Client account {args.client_id}",
        undo=("platform.reactivate_account", {"client_id": args.client_id}) if verb == "suspend" else None)


@action
def suspend_account(args: AccountArgs, ctx: ActionContext) -> Outcome:
    """Suspend a Client account on the platform: its users and API calls are refused (reversible)."""
    return _set_account(args, ctx, "suspend")


@action
def reactivate_account(args: AccountArgs, ctx: ActionContext) -> Outcome:
    """Reactivate a suspended Client account (undo of platform.suspend_account)."""
    return _set_account(args, ctx, "reactivate")


class UserArgs(ActionArgs):
    user_id: Annotated[str, Target("platform_user")] = Field(..., pattern=_ID, description="Platform user id.")


@action
def logout_user(args: UserArgs, ctx: ActionContext) -> Outcome:
    """End every session of a platform user (nothing to undo: the user logs in again)."""
    return _toggle(
        ctx, target=f"user/{args.user_id}/sessions", read_path=f"users/{args.user_id}", scope="users:logout",
        is_done=lambda u: int(u.get("active_sessions") or 0) == 0,
        write=("POST", f"users/{args.user_id}/logout", {"incident_id": ctx.incident.id}),
        describe=f"log user {args.user_id} out of every session",
    )


class UserStatusArgs(ActionArgs):
    user_id: Annotated[str, Target("platform_user")] = Field(..., pattern=_ID, description="Platform user id.")
    reason: str = Field("security incident", min_length=1, max_length=500,
                        description="Kept in the platform's audit log, shown to the Client's admins.")


def _set_user(args: UserStatusArgs, ctx: ActionContext, verb: Literal["disable", "enable"]) -> Outcome:
    return _set_status(
        ctx, path=f"users/{args.user_id}", scope="users:disable", verb=verb, reason=args.reason,
        wanted="disabled" if verb == "disable" else "active", what=f"platform user {args.user_id}",
        undo=("platform.enable_user", {"user_id": args.user_id}) if verb == "disable" else None)


@action
def disable_user(args: UserStatusArgs, ctx: ActionContext) -> Outcome:
    """Disable one platform user: no login, sessions ended; the Client account and its other users untouched."""
    return _set_user(args, ctx, "disable")


@action
def enable_user(args: UserStatusArgs, ctx: ActionContext) -> Outcome:
    """Enable a disabled platform user again (undo of platform.disable_user)."""
    return _set_user(args, ctx, "enable")


class PasswordResetArgs(ActionArgs):
    user_id: Annotated[str, Target("platform_user")] = Field(..., pattern=_ID, description="Platform user id.")
    notify_user: bool = Field(True, description="Email the user a reset link.")


@action
def reset_password(args: PasswordResetArgs, ctx: ActionContext) -> Outcome:
    """Force a platform user to set a new password at next login (not undone: the old one is burnt)."""
    return _toggle(
        ctx, target=f"user/{args.user_id}/password", read_path=f"users/{args.user_id}",
        scope="users:reset-password",
        is_done=lambda u: bool(u.get("password_reset_required")),
        write=("POST", f"users/{args.user_id}/password-reset",
               {"notify": args.notify_user, "incident_id": ctx.incident.id}),
        describe=f"require a password reset of user {args.user_id}",
    )


class RevokeTokensArgs(ActionArgs):
    client_id: Annotated[str, Target("tenant")] = Field(
        ..., pattern=_ID, description="Client account whose API tokens are revoked.")
    token_ids: CommaList | None = Field(None, description="Only these tokens (default: every active one).")


@action
def revoke_api_tokens(args: RevokeTokensArgs, ctx: ActionContext) -> Outcome:
    """Revoke a Client's active API tokens, or the listed ones (not undone: issue new tokens instead)."""
    target = f"client/{args.client_id}/api-tokens"
    with PlatformApi(ctx) as api:
        listed = api.call("GET", f"clients/{args.client_id}/api-tokens") or []
        if not isinstance(listed, list):
            raise PermanentError(f"{PROVIDER}: GET /clients/{args.client_id}/api-tokens did not return a list",
                                 provider=PROVIDER, code="Shape")
        tokens = {t["id"]: t for t in listed}
        if args.token_ids:
            unknown = sorted(set(args.token_ids) - set(tokens))
            if unknown:
                raise PermanentError(f"Client {args.client_id} has no API token {', '.join(unknown)}; its tokens: "
                                     f"{', '.join(sorted(tokens)) or 'none'}", provider=PROVIDER, code="404")
        wanted = args.token_ids or list(tokens)
        active = [tid for tid in wanted if tokens[tid].get("status") == "active"]
        journal, before, _ = Journal.begin(ctx, target, listed, source_system=PROVIDER)

        def revoke() -> list[dict[str, Any]]:
            for token_id in active:
                api.call("POST", f"api-tokens/{token_id}/revoke", {"incident_id": ctx.incident.id})
            return api.call("GET", f"clients/{args.client_id}/api-tokens") or []

        def verify(after: list[dict[str, Any]]) -> None:
            still = [t["id"] for t in after if t["id"] in active and t.get("status") == "active"]
            if still:
                raise PermanentError(f"{PROVIDER}: tokens {', '.join(still)} are still active after revocation",
                                     provider=PROVIDER, code="NoEffect")

        return run_change(ctx, Change(
            journal=journal, source_system=PROVIDER, before=before, done=not active, write=revoke, verify=verify,
            current=listed, checks=lambda: [api.require_scope("tokens:revoke")],
            dry_run=f"dry run: would revoke {len(active)} API token(s) of Client {args.client_id}",
            unchanged=f"Client {args.client_id} has no active API token among those asked: nothing changed",
            changed=lambda _: f"{len(active)} API token(s) of Client {args.client_id} revoked",
            dry_details={"token_ids": active}, changed_details={"revoked": active},
        ))


class MaintenanceArgs(ActionArgs):
    scope: Literal["tenant", "feature"] = Field(..., description="tenant: one Client's tenant; feature: platform-wide.")
    target: Annotated[str, Target("{scope}")] = Field(
        ..., pattern=_ID, description="Tenant id or feature name (e.g. exports).")
    enabled: bool = Field(True, description="true: put in maintenance; false: bring back.")
    message: str = Field("", max_length=500, description="Shown to users while in maintenance.")


@action
def set_maintenance(args: MaintenanceArgs, ctx: ActionContext) -> Outcome:
    """Put a tenant or a feature in maintenance mode, or take it out (reversible)."""
    path = f"maintenance/{args.scope}s/{args.target}"
    return _toggle(
        ctx, target=f"{args.scope}/{args.target}/maintenance", read_path=path, scope="maintenance:write",
        is_done=lambda m: bool(m.get("enabled")) == args.enabled,
        write=("PUT", path, {"enabled": args.enabled, "message": args.message, "incident_id": ctx.incident.id}),
        describe=f"{'put' if args.enabled else 'take'} {args.scope} {args.target} "
                 f"{'in' if args.enabled else 'out of'} maintenance",
        undo=lambda before: UndoPlan(action="platform.set_maintenance", args={
            "scope": args.scope, "target": args.target, "enabled": bool(before.get("enabled")),
            "message": before.get("message") or ""}),
    )


# --- enrichment and evidence (read only) ---------------------------------------------------------


def _record_client(ctx: ActionContext, client_id: str, argument: str, what: str) -> None:
    """Name the Client the admin API gave for `what` as affected (origin "enrichment", see the module docstring)."""
    if ctx.dry_run or not client_id:
        return
    trusted = argument not in ctx.from_run_data
    changes = ctx.incident.with_clients([client_id], "enrichment", by=f"step {ctx.step}: {what}")
    if trusted:
        changes["client_origins"] = [o.model_copy(update={"confirmed": True})
                                     if o.client == client_id and o.source == "enrichment" else o
                                     for o in changes["client_origins"]]
    ctx.update_incident(**changes)
    if not ctx.incident.client_confirmed(client_id):
        ctx.record(f"Client {client_id} found by the admin API for {what}, which alert data named: not confirmed; "
                   f"§7 letters to it wait for: irp incidents confirm-clients {ctx.incident.id} --clients {client_id} "
                   "--by NAME", kind="finding", clients=[client_id])


class DescribeUserArgs(ActionArgs):
    user_id: str = Field(..., pattern=_ID, description="Platform user id to describe.")


@action
def describe_user(args: DescribeUserArgs, ctx: ActionContext) -> Outcome:
    """Archive and return a platform user's Client, role, status, last login and sessions (read only)."""
    with PlatformApi(ctx) as api:
        user = _target_get(api, f"users/{args.user_id}", "user")
    facts = {key: user.get(key) for key in ("id", "client_id", "email", "role", "status", "last_login_at",
                                            "last_login_ip", "mfa_enabled", "active_sessions", "created_at")}
    outcome = archive_facts(ctx, f"platform-user-{args.user_id}", facts, target=f"user/{args.user_id}",
                            source_system=PROVIDER,
                            message=f"platform user {args.user_id}: Client {facts['client_id'] or 'unknown'}, role "
                                    f"{facts['role'] or 'unknown'}, {facts['status'] or 'status unknown'}, last login "
                                    f"{facts['last_login_at'] or 'never'}")
    _record_client(ctx, facts["client_id"] or "", "user_id", f"user {args.user_id}")
    return outcome


class DescribeTokenArgs(ActionArgs):
    token_id: str = Field(..., pattern=_ID, description="Platform API token id to describe (never its value).")


@action
def describe_token(args: DescribeTokenArgs, ctx: ActionContext) -> Outcome:
    """Archive and return an API token's Client, owner, scopes, status and last use (read only, never its value)."""
    with PlatformApi(ctx) as api:
        token = _target_get(api, f"api-tokens/{args.token_id}", "token")
    facts = {key: token.get(key) for key in ("id", "client_id", "name", "status", "scopes", "created_by",
                                             "created_at", "last_used_at", "last_used_ip")}
    outcome = archive_facts(ctx, f"platform-token-{args.token_id}", facts, target=f"api-token/{args.token_id}",
                            source_system=PROVIDER,
                            message=f"API token {args.token_id}: Client {facts['client_id'] or 'unknown'}, "
                                    f"{facts['status'] or 'status unknown'}, last used {facts['last_used_at'] or 'never'}")
    _record_client(ctx, facts["client_id"] or "", "token_id", f"API token {args.token_id}")
    return outcome


class AuditLogArgs(WindowArgs):
    client_id: str | None = Field(None, pattern=_ID, description="Only this Client's entries.")
    user_id: str | None = Field(None, pattern=_ID, description="Only this user's entries.")
    max_entries: int = Field(10_000, ge=1, le=200_000, description="Keep at most this many entries (truncated).")

    @model_validator(mode="after")
    def _someone(self) -> AuditLogArgs:
        if not self.client_id and not self.user_id:
            raise ValueError("give client_id, user_id or both: the whole platform's log is not an incident's evidence")
        return self


@action
def export_audit_log(args: AuditLogArgs, ctx: ActionContext) -> Outcome:
    """Archive the platform audit log of a Client or user for a window, with the query (read only)."""
    start, end = args.window(ctx)
    query = {key: value for key, value in (("client_id", args.client_id), ("user_id", args.user_id),
                                            ("since", start.isoformat()), ("until", end.isoformat())) if value}
    entries: list[dict[str, Any]] = []
    truncated, cursor = False, None
    with PlatformApi(ctx) as api:
        while True:
            page = api.call("GET", "audit-log", params={**query, **({"cursor": cursor} if cursor else {})}) or {}
            if not isinstance(page, dict) or not isinstance(page.get("entries"), list):
                raise PermanentError(f"{PROVIDER}: GET /audit-log did not return {{entries: [...]}}", provider=PROVIDER,
                                     code="Shape")
            entries += page["entries"]
            cursor = page.get("next_cursor")
            if len(entries) >= args.max_entries:
                truncated, entries = bool(cursor) or len(entries) > args.max_entries, entries[: args.max_entries]
                break
            if not cursor or ctx.dry_run:  # a dry run reads one page: the query is allowed
                break
    who = " ".join(f"{k} {v}" for k, v in query.items() if k in ("client_id", "user_id"))
    return archive_facts(
        ctx, f"platform-audit-log-{args.user_id or args.client_id}",
        {"query": query, "truncated": truncated, "entries": entries},
        target=f"audit-log/{args.user_id or args.client_id}", source_system=PROVIDER,
        summary={"query": query, "count": len(entries), "truncated": truncated,
                 "actions": sorted({str(e.get("action")) for e in entries if e.get("action")})[:50],
                 "first": entries[0].get("at") if entries else None, "last": entries[-1].get("at") if entries else None},
        message=f"{len(entries)} platform audit log entr{'y' if len(entries) == 1 else 'ies'} of {who} from "
                f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC" + (" (truncated)" if truncated else ""),
    )
