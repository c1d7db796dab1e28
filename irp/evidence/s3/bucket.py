"""One evidence bucket through boto3: calls whose errors are mapped to ours, listings, key versions.

Every message names the bucket and the operation. What the store must react to is raised as its
own exception: `StoreUnavailable` (spool and retry), `KeyTaken` (a write-once key exists),
`KeyNotFound`; the rest is EvidenceError or ConfigurationError, worded for people.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from irp.aws import aws_error, s3_client
from irp.errors import ConfigurationError, EvidenceError


class StoreUnavailable(Exception):
    """The store did not answer (connection refused or reset, timeout, 5xx after retries)."""


class KeyTaken(Exception):
    """A write-once key is taken (412 Precondition Failed)."""


class KeyNotFound(Exception):
    """No such key, version or upload."""


class BadSpoolOp(EvidenceError):
    """A spooled operation that cannot be replayed as it is (set aside for a person to look at)."""


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


@dataclass
class KeyState:
    """Every version of one key, as listed by ListObjectVersions."""

    versions: list[dict[str, Any]] = field(default_factory=list)
    current: dict[str, Any] | None = None
    deleted: bool = False


class Bucket:
    """The bucket's calls, with the S3 client made on first use (thread-safe)."""

    def __init__(self, name: str, make_client: Any = None) -> None:
        self.name = name
        self._make_client = make_client
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._object_lock: bool | None = None

    @property
    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = (self._make_client or s3_client)()
            return self._client

    def where(self, key: str | None = None) -> str:
        return f"s3://{self.name}/{key}" if key is not None else f"s3://{self.name}"

    @contextmanager
    def errors(self, operation: str, where: str) -> Iterator[None]:
        """Map botocore's exceptions to ours: every message names the bucket and the operation."""
        try:
            yield
        except Exception as exc:
            error = aws_error(exc)
            if error is None:
                raise
            if error.kind == "conflict":
                raise KeyTaken(where) from None
            if error.code == "NoSuchBucket":
                raise EvidenceError(f"evidence bucket {self.name!r} does not exist ({operation} on {where}); "
                                    "create it (with versioning and Object Lock) or fix IRP_EVIDENCE_URL") from None
            if error.kind == "not_found":
                raise KeyNotFound(where) from None
            if error.kind == "denied":
                raise EvidenceError(f"access denied to evidence bucket {self.name!r} ({operation} on {where}: "
                                    f"{error.code}); check the AWS credentials and the bucket policy") from None
            if error.kind == "no_credentials":
                raise ConfigurationError(
                    f"no AWS credentials for evidence bucket {self.name!r} ({operation}): set AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (the standard AWS credential chain)") from None
            if not isinstance(exc, ClientError):
                if error.retryable:
                    raise StoreUnavailable(f"{operation} on {where}: {exc}") from None
                raise EvidenceError(f"{operation} on {where} failed: {exc}") from None
            if error.retryable:
                raise StoreUnavailable(f"{operation} on {where}: {error.code or error.status} {error.message}".strip()
                                       ) from None
            raise EvidenceError(f"{operation} on {where} failed: {error.code}: {error.message}") from None

    def call(self, method: str, **kwargs: Any) -> Any:
        """`client.method(Bucket=..., **kwargs)`, errors mapped."""
        operation = "".join(part.title() for part in method.split("_"))
        with self.errors(operation, self.where(kwargs.get("Key"))):
            return getattr(self.client, method)(Bucket=self.name, **kwargs)

    def pages(self, prefix: str, *, versions: bool = False, delimiter: str = "") -> Iterator[dict[str, Any]]:
        method = "list_object_versions" if versions else "list_objects_v2"
        operation = "ListObjectVersions" if versions else "ListObjectsV2"
        with self.errors(operation, self.where(prefix)):
            args: dict[str, Any] = {"Bucket": self.name, "Prefix": prefix}
            if delimiter:
                args["Delimiter"] = delimiter
            yield from self.client.get_paginator(method).paginate(**args)

    def keys(self, prefix: str) -> list[str]:
        return sorted(obj["Key"] for page in self.pages(prefix) for obj in page.get("Contents", []))

    def states(self, prefix: str) -> dict[str, KeyState]:
        """Every key under `prefix` with all its versions and delete markers."""
        states: dict[str, KeyState] = {}
        for page in self.pages(prefix, versions=True):
            for version in page.get("Versions", []):
                state = states.setdefault(version["Key"], KeyState())
                state.versions.append(version)
                if version.get("IsLatest"):
                    state.current = version
            for marker in page.get("DeleteMarkers", []):
                state = states.setdefault(marker["Key"], KeyState())
                if marker.get("IsLatest"):
                    state.deleted = True
        return states

    def get_bytes(self, key: str, version_id: str | None = None) -> bytes:
        extra = {"VersionId": version_id} if version_id else {}
        response = self.call("get_object", Key=key, **extra)
        with self.errors("GetObject", self.where(key)):
            return response["Body"].read()

    def object_lock_enabled(self) -> bool:
        """Whether the bucket has Object Lock (asked once)."""
        if self._object_lock is None:
            try:
                config = self.call("get_object_lock_configuration")
                enabled = config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
            except KeyNotFound:
                enabled = False
            self._object_lock = enabled
        return self._object_lock

    def put_bytes(self, key: str, data: bytes, content_type: str, *, exclusive: bool = True,
                  **protection: Any) -> str | None:
        """PutObject with its SHA-256 checked by the store; `exclusive`: only if the key is free."""
        digest = hashlib.sha256(data).digest()
        args: dict[str, Any] = {
            "Key": key, "Body": data, "ContentType": content_type, "ChecksumAlgorithm": "SHA256",
            "ChecksumSHA256": b64(digest), "Metadata": {"sha256": digest.hex()}, **protection,
        }
        if exclusive:
            args["IfNoneMatch"] = "*"
        return self.call("put_object", **args).get("VersionId")


class MappedReader:
    """A response body whose read errors become EvidenceError."""

    def __init__(self, body: Any, bucket: Bucket, key: str) -> None:
        self._body = body
        self._bucket = bucket
        self._key = key

    def read(self, n: int = -1) -> bytes:
        where = self._bucket.where(self._key)
        try:
            with self._bucket.errors("GetObject", where):
                return self._body.read(None if n is None or n < 0 else n)
        except StoreUnavailable as exc:
            raise EvidenceError(f"reading {where} was interrupted: {exc}") from None

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._body.close()
