"""Containment actions on the CallCenterRate platform's admin API, and a generic HTTP action.

Side effects, only when the step is not a dry run: Client accounts suspended or reactivated, users
logged out everywhere or made to reset their password, API tokens revoked, tenants or features put
in or out of maintenance; `http.request` sends what the playbook says, only where configuration
allows (irp/outbound.py: endpoints, secrets bound to hosts, checked and pinned addresses). Every
request and response is archived as evidence under actions/<stage>/<step>/http/ with credentials
redacted (irp/redaction.py); the token is never logged, returned or archived.

The admin API contract these actions assume is in docs/platform-api.md: base URL from
IRP_PLATFORM_API_URL, a bearer token from the Prefect Secret block named by
IRP_PLATFORM_TOKEN_BLOCK. Every write reads the target first and is skipped when the target is
already in the wanted state, and carries an Idempotency-Key stable across retries. Retries (with
jittered backoff) on 429, 408, 5xx, timeouts and lost connections only; 401, 403, 404 and 4xx
fail at once and are put on the incident's timeline.
"""

from __future__ import annotations

import json
import uuid
from email.utils import parsedate_to_datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import Field, field_validator, model_validator

from irp.errors import ActionError, NotConfiguredError, PermanentError
from irp.models import utcnow
from irp.outbound import check_destination, checked_addresses, endpoint_url, named_hosts, pinned_client
from irp.redaction import REDACTED, is_credential_key, redact, redact_text
from irp.settings import get_settings
from tasks.integrations import CommaList, Failure, Journal, Outcome, UndoPlan, slug, with_retries
from tasks.registry import ActionArgs, ActionContext, Target, action, requires

__all__ = ["PlatformApi"]

PROVIDER = "CallCenterRate admin API"
_BODY_LIMIT = 64 * 1024


# --- secrets and redaction -----------------------------------------------------------------------


def secret_value(block: str) -> str:
    """The value of the Prefect Secret block `block`; NotConfiguredError when there is none."""
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(block).get()
    except ValueError as exc:
        raise NotConfiguredError(f"Prefect Secret block {block!r} not found: {exc}") from None
    if not isinstance(value, str) or not value:
        raise NotConfiguredError(f"Prefect Secret block {block!r} holds no text value")
    return value


def _headers(headers: httpx.Headers, secrets: tuple[str, ...]) -> dict[str, str]:
    return {key: REDACTED if is_credential_key(key) else redact_text(value, secrets) for key, value in headers.items()}


def _body(content: bytes, secrets: tuple[str, ...]) -> Any:
    """A body as archived: JSON (whatever its content type says) redacted as a structure, else text."""
    if not content:
        return None
    if content.lstrip()[:1] in (b"{", b"["):
        try:
            return redact(json.loads(content), secrets)
        except ValueError:
            pass
    text = content[:_BODY_LIMIT].decode("utf-8", errors="replace")
    return redact_text(text, secrets) + ("…(truncated)" if len(content) > _BODY_LIMIT else "")


# --- HTTP with retries, evidence and classification ----------------------------------------------


class _StatusError(Exception):
    """An HTTP answer that is an error; classified by status. `detail` is already redacted."""

    def __init__(self, response: httpx.Response, detail: str) -> None:
        self.response = response
        self.detail = detail
        super().__init__(f"HTTP {response.status_code}")


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, (parsedate_to_datetime(value) - utcnow()).total_seconds())
        except (TypeError, ValueError):
            return None


def _error_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return str(body.get("error") or body.get("message") or body.get("detail") or "")[:200]
    return ""


def classify(exc: BaseException) -> Failure | None:
    """Transient: 408, 429, 5xx (not 501), timeouts, lost connections; everything else is refused."""
    if isinstance(exc, _StatusError):
        status = exc.response.status_code
        detail = exc.detail
        text = f"HTTP {status} {exc.response.reason_phrase}" + (f": {detail}" if detail else "")
        if status == 429:
            return Failure(True, "429", f"throttled ({text})", retry_after=_retry_after(exc.response))
        if status == 408 or (status >= 500 and status != 501):
            return Failure(True, str(status), text, retry_after=_retry_after(exc.response))
        if status in (401, 403):
            return Failure(False, str(status), f"access denied ({text})")
        return Failure(False, str(status), text)
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return Failure(False, type(exc).__name__, str(exc))
    if isinstance(exc, httpx.TimeoutException):
        return Failure(True, "Timeout", f"timed out ({type(exc).__name__})")
    if isinstance(exc, httpx.TransportError):
        return Failure(True, "ConnectionError", f"connection failed ({type(exc).__name__}: {exc})")
    return None


def _send(
    ctx: ActionContext,
    client: httpx.Client,
    provider: str,
    method: str,
    url: str,
    *,
    secrets: tuple[str, ...],
    ok: set[int] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """One logical request, retried; every attempt's exchange archived, redacted."""
    folder = f"actions/{ctx.stage.value}/{ctx.step}{'/dry-run' if ctx.dry_run else ''}/http"

    def once() -> httpx.Response:
        request = client.build_request(method, url, **kwargs)
        exchange: dict[str, Any] = {
            "request": {"method": request.method, "url": redact_text(str(request.url), secrets),
                        "headers": _headers(request.headers, secrets),
                        "body": _body(request.content, secrets)},
            "sent_at": utcnow().isoformat(),
        }
        try:
            response = client.send(request)
        except httpx.HTTPError as exc:
            exchange["error"] = f"{type(exc).__name__}: {redact(str(exc), secrets)}"
            _archive_exchange(ctx, folder, request, exchange, provider)
            raise
        exchange["response"] = {
            "status": response.status_code, "headers": _headers(response.headers, secrets),
            "body": _body(response.content, secrets),
            "elapsed_ms": round(response.elapsed.total_seconds() * 1000, 1),
        }
        _archive_exchange(ctx, folder, request, exchange, provider)
        good = ok if ok is not None else set(range(200, 300))
        if response.status_code not in good:
            raise _StatusError(response, redact(_error_detail(response), secrets))
        return response

    path = urlsplit(str(client.base_url.join(url))).path or "/"
    return with_retries(ctx, provider, f"{method} {path}", once, classify)


def _archive_exchange(ctx: ActionContext, folder: str, request: httpx.Request, exchange: dict, provider: str) -> None:
    number = 1 + sum(1 for item in ctx.evidence if item.name.startswith(folder + "/"))
    name = f"{folder}/{number:02d}-{request.method}-{slug(request.url.path)}.json"
    ctx.archive_json(name, exchange, source_system=provider)


def admin_api_configured() -> None:
    """Raise NotConfiguredError unless the admin API's URL and token are configured."""
    settings = get_settings()
    if not settings.platform_api_url:
        raise NotConfiguredError("CallCenterRate admin API: IRP_PLATFORM_API_URL is unset")
    secret_value(settings.platform_token_block)


requires("platform", admin_api_configured)


# --- the admin API -------------------------------------------------------------------------------


class PlatformApi:
    """A client of the admin API for one action run: base URL, token, timeouts, evidence."""

    def __init__(self, ctx: ActionContext) -> None:
        settings = get_settings()
        if not settings.platform_api_url:
            raise NotConfiguredError("CallCenterRate admin API: IRP_PLATFORM_API_URL is unset")
        self.ctx = ctx
        self.token = secret_value(settings.platform_token_block)
        self.client = httpx.Client(
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

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """Send a request to the API; its JSON answer, credentials redacted (None when empty)."""
        headers = {}
        if method not in ("GET", "HEAD"):
            key = uuid.uuid5(uuid.NAMESPACE_URL,
                             f"irp:{self.ctx.incident.id}:{self.ctx.stage.value}:{self.ctx.step}:{method}:{path}")
            headers["Idempotency-Key"] = str(key)
        response = _send(self.ctx, self.client, PROVIDER, method, path.lstrip("/"), secrets=(self.token,),
                         json=body, headers=headers)
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


def _finish(ctx: ActionContext, outcome: Outcome) -> Outcome:
    ctx.record(outcome.message, kind="change" if outcome.changed else "note", target=outcome.target,
               changed=outcome.changed, dry_run=outcome.dry_run)
    return outcome


def _toggle(
    ctx: ActionContext,
    *,
    target: str,
    read_path: str,
    scope: str,
    is_done: Any,
    write: tuple[str, str, dict[str, Any]],
    describe: str,
    undo: Any = None,
) -> Outcome:
    """Read the target; if not `is_done`, write; journal, evidence, dry run and idempotency as one pattern."""
    with PlatformApi(ctx) as api:
        current = _target_get(api, read_path, target)
        journal = Journal(ctx, target)
        before, replayed = journal.first("before", current, source_system=PROVIDER)
        plan = undo(before) if undo and not is_done(before) else None
        done = is_done(current)
        if ctx.dry_run:
            check = api.require_scope(scope)
            return _finish(ctx, Outcome(
                target=target, changed=False, dry_run=True, before=before,
                message=f"dry run: would {describe}" + (" (already done)" if done else ""),
                checks=[f"GET /{read_path}: target found", check], details={"would_change": not done},
            ))
        if done:
            why = "by an earlier attempt of this step" if replayed and plan else "already"
            return _finish(ctx, Outcome(
                target=target, changed=False, before=before, after=current, undo=plan,
                message=f"{target}: {describe} — already done ({why}): nothing changed",
            ))
        method, path, body = write
        api.call(method, path, body)
        after = _target_get(api, read_path, target)
        journal.archive("after", after, source_system=PROVIDER)
        if not is_done(after):
            raise PermanentError(f"{PROVIDER}: {method} /{path} answered OK but {target} is not changed",
                                 provider=PROVIDER, code="NoEffect")
        return _finish(ctx, Outcome(target=target, changed=True, before=before, after=after, undo=plan,
                                    message=f"{describe}: done"))


_ID = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"


class AccountArgs(ActionArgs):
    client_id: Annotated[str, Target("tenant")] = Field(..., pattern=_ID, description="Client account id on the platform.")
    reason: str = Field("security incident", min_length=1, max_length=500, description="Shown to the Client's admins.")


@action("platform")
def suspend_account(args: AccountArgs, ctx: ActionContext) -> Outcome:
    """Suspend a Client account on the platform: its users and API calls are refused (reversible)."""
    return _toggle(
        ctx, target=f"client/{args.client_id}", read_path=f"clients/{args.client_id}", scope="clients:suspend",
        is_done=lambda c: c.get("status") == "suspended",
        write=("POST", f"clients/{args.client_id}/suspend", {"reason": args.reason, "incident_id": ctx.incident.id}),
        describe=f"suspend Client account {args.client_id}",
        undo=lambda before: UndoPlan(action="platform.reactivate_account", args={
            "client_id": args.client_id, "reason": f"undo of incident {ctx.incident.id} containment"}),
    )


@action("platform")
def reactivate_account(args: AccountArgs, ctx: ActionContext) -> Outcome:
    """Reactivate a suspended Client account (undo of platform.suspend_account)."""
    return _toggle(
        ctx, target=f"client/{args.client_id}", read_path=f"clients/{args.client_id}", scope="clients:suspend",
        is_done=lambda c: c.get("status") == "active",
        write=("POST", f"clients/{args.client_id}/reactivate", {"reason": args.reason, "incident_id": ctx.incident.id}),
        describe=f"reactivate Client account {args.client_id}",
    )


class UserArgs(ActionArgs):
    user_id: Annotated[str, Target("platform_user")] = Field(..., pattern=_ID, description="Platform user id.")


@action("platform")
def logout_user(args: UserArgs, ctx: ActionContext) -> Outcome:
    """End every session of a platform user (nothing to undo: the user logs in again)."""
    return _toggle(
        ctx, target=f"user/{args.user_id}/sessions", read_path=f"users/{args.user_id}", scope="users:logout",
        is_done=lambda u: int(u.get("active_sessions") or 0) == 0,
        write=("POST", f"users/{args.user_id}/logout", {"incident_id": ctx.incident.id}),
        describe=f"log user {args.user_id} out of every session",
    )


class PasswordResetArgs(ActionArgs):
    user_id: Annotated[str, Target("platform_user")] = Field(..., pattern=_ID, description="Platform user id.")
    notify_user: bool = Field(True, description="Email the user a reset link.")


@action("platform")
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


@action("platform")
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
        journal = Journal(ctx, target)
        before, _ = journal.first("before", listed, source_system=PROVIDER)
        if ctx.dry_run:
            check = api.require_scope("tokens:revoke")
            return _finish(ctx, Outcome(
                target=target, changed=False, dry_run=True, before=before, checks=[check],
                message=f"dry run: would revoke {len(active)} API token(s) of Client {args.client_id}",
                details={"would_change": bool(active), "token_ids": active},
            ))
        if not active:
            return _finish(ctx, Outcome(
                target=target, changed=False, before=before, after=listed,
                message=f"Client {args.client_id} has no active API token among those asked: nothing changed",
            ))
        for token_id in active:
            api.call("POST", f"api-tokens/{token_id}/revoke", {"incident_id": ctx.incident.id})
        after = api.call("GET", f"clients/{args.client_id}/api-tokens") or []
        journal.archive("after", after, source_system=PROVIDER)
        still = [t["id"] for t in after if t["id"] in active and t.get("status") == "active"]
        if still:
            raise PermanentError(f"{PROVIDER}: tokens {', '.join(still)} are still active after revocation",
                                 provider=PROVIDER, code="NoEffect")
        return _finish(ctx, Outcome(
            target=target, changed=True, before=before, after=after, details={"revoked": active},
            message=f"{len(active)} API token(s) of Client {args.client_id} revoked",
        ))


class MaintenanceArgs(ActionArgs):
    scope: Literal["tenant", "feature"] = Field(..., description="tenant: one Client's tenant; feature: platform-wide.")
    target: Annotated[str, Target("{scope}")] = Field(
        ..., pattern=_ID, description="Tenant id or feature name (e.g. exports).")
    enabled: bool = Field(True, description="true: put in maintenance; false: bring back.")
    message: str = Field("", max_length=500, description="Shown to users while in maintenance.")


@action("platform")
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


# --- generic HTTP --------------------------------------------------------------------------------

_SAFE = ("GET", "HEAD", "OPTIONS")


class HttpRequestArgs(ActionArgs):
    url: str | None = Field(None, description="http(s) URL written in the playbook, never taken from alert data "
                                              "(irp playbooks validate reports it); or endpoint.")
    endpoint: str | None = Field(None, min_length=1, max_length=200,
                                 description="Name of a URL configured in IRP_HTTP_ENDPOINTS, instead of url "
                                             "(a template may choose among them).")
    method: Literal["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"] = Field("GET")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers (no secrets: use auth_block).")
    params: dict[str, str] = Field(default_factory=dict, description="Query parameters, added to the URL's own.")
    body_json: Any = Field(None, description="JSON body.")
    body: str | None = Field(None, description="Text body (when not JSON).")
    auth_block: str | None = Field(None, description="Prefect Secret block whose value authenticates the request; "
                                                     "sent only to the hosts IRP_HTTP_SECRET_HOSTS binds to it.")
    auth_header: str = Field("Authorization", description="Header that carries the secret.")
    auth_scheme: str = Field("Bearer", description="Prefix of the secret in the header ('' for none).")
    ok_status: list[int] = Field(default_factory=list, description="Statuses that are success (default: 2xx).")
    idempotency_key: str | None = Field(None, description="Idempotency-Key of a write (default: stable per step).")
    timeout_seconds: float | None = Field(None, gt=0, le=300, description="Per-request timeout.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        parts = urlsplit(value or "")
        if value is not None and (parts.scheme not in ("http", "https") or not parts.hostname):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @model_validator(mode="after")
    def _one_target(self) -> HttpRequestArgs:
        if (self.url is None) == (self.endpoint is None):
            raise ValueError("give exactly one of url or endpoint")
        return self


@action("http")
def request(args: HttpRequestArgs, ctx: ActionContext) -> Outcome:
    """Send an HTTP request (retried on 429/5xx/timeouts); archive request and answer, secrets redacted."""
    settings = get_settings()
    url = args.url if args.url is not None else endpoint_url(args.endpoint or "")
    if args.params:
        url = str(httpx.URL(url).copy_merge_params(args.params))
    host = check_destination(url, args.auth_block)  # before the secret is even read
    if args.body is not None and args.body_json is not None:
        raise ActionError("http.request: give body or body_json, not both")
    secrets: tuple[str, ...] = ()
    headers = dict(args.headers)
    if args.auth_block:
        secret = secret_value(args.auth_block)
        secrets = (secret,)
        headers[args.auth_header] = f"{args.auth_scheme} {secret}".strip()
    unsafe = args.method not in _SAFE
    key = None
    if unsafe:
        key = args.idempotency_key or str(uuid.uuid5(
            uuid.NAMESPACE_URL, f"irp:{ctx.incident.id}:{ctx.stage.value}:{ctx.step}:{args.method}:{url}"))
        headers.setdefault("Idempotency-Key", key)
    target = f"{args.method} {redact_text(url, secrets)}"
    if ctx.dry_run and unsafe:
        parts = httpx.URL(url)
        addresses = checked_addresses(host, parts.port or (443 if parts.scheme == "https" else 80),
                                      host in named_hosts(settings))
        return _finish(ctx, Outcome(
            target=target, changed=False, dry_run=True,
            message=f"dry run: would send {target} (not sent: {args.method} may change state)",
            checks=[f"host {host} allowed; its addresses {', '.join(addresses)} allowed"]
                   + ([f"Prefect Secret block {args.auth_block} bound to {host} and readable"] if args.auth_block else []),
            details={"would_change": True, "idempotency_key": key},
        ))
    content = {"json": args.body_json} if args.body_json is not None else {"content": args.body}
    with pinned_client(args.timeout_seconds or settings.action_timeout_seconds) as client:
        response = _send(ctx, client, host, args.method, url, secrets=secrets,
                         ok=set(args.ok_status) if args.ok_status else None, headers=headers, **content)
    answer = _body(response.content, secrets)
    return _finish(ctx, Outcome(
        target=target, changed=unsafe, dry_run=ctx.dry_run,
        message=f"{target} answered {response.status_code}"
                + (f" (Idempotency-Key {key}: a server honouring it applies the write once)" if unsafe else ""),
        details={"status": response.status_code, "headers": _headers(response.headers, secrets), "body": answer,
                 "idempotency_key": key},
    ))
