"""The one place irp makes boto3 clients (actions and the evidence store) and classifies AWS errors.

Clients are made when they are needed, never at import time. Actions get `aws_client`: a session
from the standard chain or the prefect-aws block IRP_AWS_CREDENTIALS_BLOCK names, botocore's own
retries off (the actions' `with_retries` apply). The evidence store gets `s3_client`: the standard
chain, botocore's retries (AWS_RETRY_MODE / AWS_MAX_ATTEMPTS, default standard mode with 3 attempts).
`aws_error` sorts any botocore exception into one `AwsErrorKind`, from one table of error codes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from irp.errors import ConfigurationError, NotConfiguredError
from irp.settings import get_settings

__all__ = ["AwsError", "aws_client", "aws_error", "aws_session", "client_hooks", "s3_client"]

USER_AGENT = "irp-incident-response"

# --- sessions and clients ------------------------------------------------------------------------


def _block_credentials(name: str) -> dict[str, Any]:
    """The fields of the prefect-aws AwsCredentials block `name`, read through the Prefect API."""
    from prefect.client.orchestration import get_client  # Prefect's client only when a block is configured
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
    """The actions' boto3 session (block or standard chain) and the endpoint a block overrides, if any."""
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


_CLIENT_HOOKS: list[tuple[str, Callable[..., Any]]] = []  # (botocore event, handler) set on every new client


@contextmanager
def client_hooks(*hooks: tuple[str, Callable[..., Any]]) -> Iterator[None]:
    """Register botocore event handlers on every client made meanwhile (playbook tests replay and record
    provider answers at this edge, as botocore's Stubber does: irp/playtest/replay.py)."""
    _CLIENT_HOOKS.extend(hooks)
    try:
        yield
    finally:
        for hook in hooks:
            _CLIENT_HOOKS.remove(hook)


def _client(session: boto3.Session, service: str, region: str | None, endpoint: str | None, **config: Any) -> Any:
    try:
        client = session.client(service, region_name=region, endpoint_url=endpoint,
                                config=Config(user_agent_extra=USER_AGENT, **config))
    except BotoCoreError as exc:
        raise ConfigurationError(f"cannot create an AWS {service} client: {exc}") from None
    for event, handler in _CLIENT_HOOKS:
        client.meta.events.register_first(event, handler)
    return client


def aws_client(service: str, region: str | None = None) -> Any:
    """A client for actions: timeouts from IRP_ACTION_TIMEOUT_SECONDS, botocore retries off (the caller's apply)."""
    session, endpoint = aws_session()
    timeout = get_settings().action_timeout_seconds
    return _client(session, service, region or session.region_name, endpoint,
                   retries={"total_max_attempts": 1, "mode": "standard"},
                   connect_timeout=timeout, read_timeout=timeout)


def s3_client(endpoint_url: str = "", access_key_id: str = "", secret_access_key: str = "") -> Any:
    """The evidence store's S3 client: the standard credential chain, botocore's retries.

    The endpoint is botocore's own AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3; with a custom endpoint
    (MinIO, Ceph, moto) buckets are addressed by path. The anchor bucket passes its own endpoint and keys.
    """
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    try:
        attempts = int(os.environ.get("AWS_MAX_ATTEMPTS", "3"))
    except ValueError:
        raise ConfigurationError(f"AWS_MAX_ATTEMPTS={os.environ['AWS_MAX_ATTEMPTS']!r} is not a number") from None
    try:
        session = boto3.session.Session(aws_access_key_id=access_key_id or None,
                                        aws_secret_access_key=secret_access_key or None)
    except BotoCoreError as exc:
        raise ConfigurationError(f"cannot create an AWS s3 client: {exc}") from None
    return _client(
        session, "s3", None, endpoint_url or None,
        signature_version="s3v4",
        # Every body we send carries its x-amz-checksum-sha256, a signed header the store checks the body
        # against: hashing each part once more for the SigV4 payload hash (botocore does it on http://)
        # would cost a third SHA-256 pass. Multipart results are checked by size and re-hashed by verify.
        s3={"addressing_style": "path" if endpoint else "auto", "payload_signing_enabled": False},
        retries={"mode": os.environ.get("AWS_RETRY_MODE", "standard"), "max_attempts": attempts},
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=32,
    )


# --- errors --------------------------------------------------------------------------------------

AwsErrorKind = Literal[
    "throttled",       # slow down and retry
    "unavailable",     # 5xx, internal errors: retry
    "timeout",         # connect or read timeout: retry
    "connection",      # refused, reset, closed: retry
    "conflict",        # a precondition (If-None-Match) failed
    "not_found",       # no such key, version, upload, configuration
    "denied",          # credentials refused or not allowed
    "no_credentials",  # nothing in the credential chain
    "not_configured",  # no region, unknown profile
    "invalid",         # the request itself is wrong (parameter validation)
    "refused",         # any other answer of AWS
    "other",           # any other botocore error
]
RETRYABLE: frozenset[str] = frozenset({"throttled", "unavailable", "timeout", "connection"})

THROTTLING = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException", "RequestLimitExceeded",
    "BandwidthLimitExceeded", "RequestThrottled", "SlowDown", "PriorRequestNotComplete",
    "EC2ThrottledException", "TransactionInProgressException",
})
TRANSIENT = frozenset({
    "InternalError", "InternalFailure", "InternalServerError", "ServiceUnavailable",
    "ServiceUnavailableException", "RequestTimeout", "RequestTimeoutException", "IDPCommunicationError",
    "WAFInternalErrorException", "WAFOptimisticLockException", "InternalServiceError",
    "InternalServiceErrorException", "ServiceFailure", "ServiceFailureException",
})
DENIED = frozenset({"AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                    "AccountProblem", "InvalidToken", "ExpiredToken", "InvalidSecurity"})
NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchVersion", "NoSuchUpload", "NoSuchTagSet",
                       "ObjectLockConfigurationNotFoundError"})


@dataclass(frozen=True)
class AwsError:
    """What a botocore exception means: its kind, AWS's error code and HTTP status, and a message."""

    kind: AwsErrorKind
    code: str
    status: int
    message: str

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE


def _client_error_kind(code: str, status: int) -> AwsErrorKind:
    if code == "PreconditionFailed" or status == 412:
        return "conflict"
    if code in NOT_FOUND:
        return "not_found"
    if code in THROTTLING or status == 429:
        return "throttled"
    if code in TRANSIENT or status >= 500:
        return "unavailable"
    if code in DENIED or status == 403:
        return "denied"
    return "refused"


def aws_error(exc: BaseException) -> AwsError | None:
    """The meaning of a botocore exception; None for any other exception."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return AwsError(_client_error_kind(code, status), code, status, str(error.get("Message") or ""))
    kinds: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], AwsErrorKind], ...] = (
        ((NoCredentialsError, PartialCredentialsError), "no_credentials"),
        ((NoRegionError, ProfileNotFound), "not_configured"),
        ((ConnectTimeoutError, ReadTimeoutError), "timeout"),
        ((BotoConnectionError, HTTPClientError), "connection"),
        (ParamValidationError, "invalid"),
        (BotoCoreError, "other"),
    )
    for types, kind in kinds:
        if isinstance(exc, types):
            return AwsError(kind, type(exc).__name__, 0, str(exc))
    return None
