"""`http.request`, and the HTTP machinery every HTTP action shares: retries, evidence, redaction.

Side effects, only when the step is not a dry run (or the method is safe): `http.request` sends what
the playbook says, only where configuration allows (irp/outbound.py: endpoints, secrets bound to
hosts, checked and pinned addresses). Every request and response is archived as evidence under
actions/<stage>/<step>/http/ with credentials redacted (irp/redaction.py); a secret is never logged,
returned or archived. Retries (jittered backoff) on 429, 408, 5xx, timeouts and lost connections
only; 401, 403, 404 and other 4xx fail at once and are put on the incident's timeline.
"""

from __future__ import annotations

import json
import uuid
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import Field, field_validator, model_validator

from irp.actions.base import Failure, Outcome, record_outcome, slug, with_retries
from irp.actions.registry import ActionArgs, ActionContext, action
from irp.errors import ActionError, NotConfiguredError
from irp.models import utcnow
from irp.outbound import check_destination, checked_addresses, endpoint_url, named_hosts, pinned_client
from irp.redaction import REDACTED, is_credential_key, redact, redact_text
from irp.settings import get_settings

__all__ = ["classify", "redacted_body", "redacted_headers", "secret_value", "send"]

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


def redacted_headers(headers: httpx.Headers, secrets: tuple[str, ...]) -> dict[str, str]:
    return {key: REDACTED if is_credential_key(key) else redact_text(value, secrets) for key, value in headers.items()}


def redacted_body(content: bytes, secrets: tuple[str, ...]) -> Any:
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


def send(
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
                        "headers": redacted_headers(request.headers, secrets),
                        "body": redacted_body(request.content, secrets)},
            "sent_at": utcnow().isoformat(),
        }
        try:
            response = client.send(request)
        except httpx.HTTPError as exc:
            exchange["error"] = f"{type(exc).__name__}: {redact(str(exc), secrets)}"
            _archive_exchange(ctx, folder, request, exchange, provider)
            raise
        exchange["response"] = {
            "status": response.status_code, "headers": redacted_headers(response.headers, secrets),
            "body": redacted_body(response.content, secrets),
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


@action
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
        return record_outcome(ctx, Outcome(
            target=target, changed=False, dry_run=True,
            message=f"dry run: would send {target} (not sent: {args.method} may change state)",
            checks=[f"host {host} allowed; its addresses {', '.join(addresses)} allowed"]
                   + ([f"Prefect Secret block {args.auth_block} bound to {host} and readable"] if args.auth_block else []),
            details={"would_change": True, "idempotency_key": key},
        ))
    content = {"json": args.body_json} if args.body_json is not None else {"content": args.body}
    with pinned_client(args.timeout_seconds or settings.action_timeout_seconds) as client:
        response = send(ctx, client, host, args.method, url, secrets=secrets,
                         ok=set(args.ok_status) if args.ok_status else None, headers=headers, **content)
    answer = redacted_body(response.content, secrets)
    return record_outcome(ctx, Outcome(
        target=target, changed=unsafe, dry_run=ctx.dry_run,
        message=f"{target} answered {response.status_code}"
                + (f" (Idempotency-Key {key}: a server honouring it applies the write once)" if unsafe else ""),
        details={"status": response.status_code, "headers": redacted_headers(response.headers, secrets), "body": answer,
                 "idempotency_key": key},
    ))
