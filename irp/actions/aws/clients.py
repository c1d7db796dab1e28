"""The AWS calls every AWS action uses: retries, the error classification, DryRun.

Clients come from irp.aws.aws_client (the one factory, shared with the evidence store), when an
action runs: credentials from the standard chain or the IRP_AWS_CREDENTIALS_BLOCK block, botocore's
own retries off: `call` retries throttling, 5xx and timeouts with jittered backoff (`with_retries`)
and never access denied or validation errors.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from irp.actions.base import Failure, WindowArgs, archive_facts, third_party_failed, with_retries
from irp.actions.registry import ActionContext, requires
from irp.aws import aws_client, aws_error, aws_session
from irp.errors import PermanentError
from irp.settings import get_settings

__all__ = ["WindowArgs", "archive_facts", "aws_client", "aws_session", "call", "check_dry_run", "classify", "error_code",
           "fact_tags", "pages"]

requires("aws", aws_session)  # preflight: AWS credentials and region


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


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def provider_of(client: Any) -> str:
    return f"AWS {client.meta.service_model.service_name}"


def call(ctx: ActionContext, client: Any, operation: str, *, absent: tuple[str, ...] = (), **kwargs: Any) -> Any:
    """`client.operation(**kwargs)` with retries; None when the error code is one of `absent`."""

    def once() -> Any:
        try:
            return getattr(client, operation)(**kwargs)
        except ClientError as exc:
            if error_code(exc) in absent:
                return None
            raise

    return with_retries(ctx, provider_of(client), operation, once, classify)


def check_dry_run(ctx: ActionContext, client: Any, operation: str, **kwargs: Any) -> str:
    """Ask AWS whether `operation` would be allowed (DryRun=True); PermanentError when it is not."""

    def once() -> str:
        try:
            getattr(client, operation)(DryRun=True, **kwargs)
        except ClientError as exc:
            if error_code(exc) == "DryRunOperation":
                return f"{operation}: allowed (AWS DryRun)"
            raise
        return ""

    provider = provider_of(client)
    checked = with_retries(ctx, provider, f"{operation} (DryRun)", once, classify)
    if not checked:  # the API answered as if it had acted: never report that as a harmless check
        failure = Failure(False, "DryRunIgnored", f"{operation} did not honour DryRun and may have made the change")
        third_party_failed(ctx, provider, f"{operation} (DryRun)", failure, 1)
        raise PermanentError(f"{provider} {operation} did not honour DryRun: check {kwargs} by hand",
                             provider=provider, code="DryRunIgnored")
    return checked


def pages(ctx: ActionContext, client: Any, operation: str, items: str, *, token: tuple[str, str] = ("Marker", "Marker"),
          limit: int = 10_000, **kwargs: Any) -> list[Any]:
    """Every `items` of a paginated `operation` (request token, answer token), at most `limit` of them."""
    found: list[Any] = []
    paging: dict[str, Any] = {}
    while len(found) < limit:
        page = call(ctx, client, operation, **kwargs, **paging)
        found.extend(page.get(items, []))
        if not page.get(token[1]) or page.get("IsTruncated") is False:
            break
        paging = {token[0]: page[token[1]]}
    return found[:limit]


def fact_tags(tags: list[dict[str, str]] | dict[str, str]) -> dict[str, Any]:
    """All tags, and the owner, tenant and data classification read from the keys IRP_AWS_*_TAG name."""
    pairs = tags if isinstance(tags, dict) else {t["Key"]: t["Value"] for t in tags}
    lowered = {key.lower(): value for key, value in pairs.items()}
    settings = get_settings()
    return {"tags": pairs, "owner": lowered.get(settings.aws_owner_tag.lower()),
            "tenant": lowered.get(settings.aws_tenant_tag.lower()),
            "data_classification": lowered.get(settings.aws_classification_tag.lower())}
