"""The AWS clients and calls every AWS action uses: one client factory, retries, errors, DryRun.

Clients are made by `aws_client` only, when an action runs: credentials from the standard chain
or, when IRP_AWS_CREDENTIALS_BLOCK names one, a prefect-aws AwsCredentials block; the endpoint
from AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_<SERVICE>), as botocore reads them. botocore's own
retries are off: `call` retries throttling, 5xx and timeouts with jittered backoff (`with_retries`)
and never access denied or validation errors.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)

from irp.actions.base import Failure, third_party_failed, with_retries
from irp.actions.registry import ActionContext, requires
from irp.errors import NotConfiguredError, PermanentError
from irp.settings import get_settings

__all__ = ["aws_client", "aws_session", "call", "check_dry_run", "classify", "error_code"]


def _block_credentials(name: str) -> dict[str, Any]:
    """The fields of the prefect-aws AwsCredentials block `name`, read through the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            document = client.read_block_document_by_name(name, block_type_slug="aws-credentials",
                                                          include_secrets=True)
    except ObjectNotFound:
        raise NotConfiguredError(
            f"IRP_AWS_CREDENTIALS_BLOCK={name!r}: no aws-credentials block of that name in Prefect"
        ) from None
    return dict(document.data)


def aws_session() -> tuple[boto3.Session, str | None]:
    """A boto3 session (block or standard chain) and the endpoint a block overrides, if any."""
    settings = get_settings()
    endpoint = None
    if settings.aws_credentials_block:
        data = _block_credentials(settings.aws_credentials_block)
        client_parameters = data.get("aws_client_parameters") or {}
        endpoint = client_parameters.get("endpoint_url") or None
        try:
            session = boto3.Session(
                aws_access_key_id=data.get("aws_access_key_id") or None,
                aws_secret_access_key=data.get("aws_secret_access_key") or None,
                aws_session_token=data.get("aws_session_token") or None,
                profile_name=data.get("profile_name") or None,
                region_name=data.get("region_name") or settings.aws_region,
            )
        except ProfileNotFound as exc:
            raise NotConfiguredError(f"AWS credentials block {settings.aws_credentials_block!r}: {exc}") from None
    else:
        try:
            session = boto3.Session(region_name=settings.aws_region)
        except ProfileNotFound as exc:
            raise NotConfiguredError(f"AWS: {exc}") from None
    if session.get_credentials() is None:
        raise NotConfiguredError("AWS: no credentials (standard chain empty and IRP_AWS_CREDENTIALS_BLOCK unset)")
    if not session.region_name:
        raise NotConfiguredError("AWS: no region (set IRP_AWS_REGION or AWS_REGION)")
    return session, endpoint


requires("aws", aws_session)


def aws_client(service: str, region: str | None = None) -> Any:
    """The one place boto3 clients are made: timeouts set, botocore retries off (ours apply)."""
    session, endpoint = aws_session()
    settings = get_settings()
    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=settings.action_timeout_seconds,
        read_timeout=settings.action_timeout_seconds,
        user_agent_extra="irp-incident-response",
    )
    return session.client(service, region_name=region or session.region_name, config=config,
                          endpoint_url=endpoint)


# --- calls ---------------------------------------------------------------------------------------

_THROTTLING = {
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException", "RequestLimitExceeded",
    "BandwidthLimitExceeded", "RequestThrottled", "SlowDown", "PriorRequestNotComplete",
    "EC2ThrottledException", "TransactionInProgressException",
}
_TRANSIENT = {
    "InternalError", "InternalFailure", "InternalServerError", "ServiceUnavailable",
    "ServiceUnavailableException", "RequestTimeout", "RequestTimeoutException", "IDPCommunicationError",
    "WAFInternalErrorException", "WAFOptimisticLockException", "InternalServiceError",
    "InternalServiceErrorException", "ServiceFailure", "ServiceFailureException",
}


def classify(exc: BaseException) -> Failure | None:
    """Transient (throttling, 5xx, timeouts, lost connections) or not; None for non-AWS errors."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "Unknown")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        text = f"{code}: {error.get('Message')}" if error.get("Message") else code
        if code in _THROTTLING or status == 429:
            return Failure(True, code, f"throttled ({text})")
        if code in _TRANSIENT or status >= 500:
            return Failure(True, code, f"{text} (HTTP {status})")
        return Failure(False, code, text)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | NoRegionError | ProfileNotFound):
        return Failure(False, type(exc).__name__, str(exc), not_configured=True)
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
        return Failure(True, "Timeout", f"timed out ({exc})")
    if isinstance(exc, EndpointConnectionError | ConnectionClosedError | HTTPClientError):
        return Failure(True, "ConnectionError", f"connection failed ({exc})")
    if isinstance(exc, ParamValidationError):
        return Failure(False, "ParamValidationError", f"invalid request: {exc}")
    return None


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
