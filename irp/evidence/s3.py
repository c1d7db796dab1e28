"""The S3 evidence store (`IRP_EVIDENCE_URL=s3://bucket/prefix`): AWS S3, MinIO or Ceph RGW through boto3.

    s3://bucket/prefix/<incident>/objects/<name>          the items: write-once, SHA-256, SSE, Object Lock
    s3://bucket/prefix/<incident>/manifest/<name>.json    one manifest entry per item (write-once)
    s3://bucket/prefix/<incident>/custody/<seq>.json      the custody log, one entry per object (custody.py)
    s3://bucket/prefix/<incident>/incident.json           the incident record, updated in place
    s3://bucket/prefix/<incident>/events/<id>.json        timeline entries appended from outside the run

The endpoint comes from AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3), credentials from the standard AWS
chain. Write-once objects are created with `If-None-Match: *`; items of a part or more go up as a
multipart upload, parts in parallel, while one pass computes the SHA-256 (memory: about
concurrency + 1 parts). When the bucket has Object Lock, every write-once object gets the retention
of the incident's severity. When the store cannot be reached, writes go to a local spool (spool.py)
that a background thread uploads with backoff, and `irp evidence flush` on demand.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from pydantic import ValidationError

from irp.errors import ConfigurationError, EvidenceError
from irp.evidence.base import (
    EvidenceStore,
    check_id,
    check_name,
    collector,
    hash_stream,
    is_incident_id,
    local_actor,
    numbered,
    retention_until,
    with_events,
)
from irp.evidence.custody import GENESIS, encode, head_of, seal
from irp.evidence.models import (
    CollectedBy,
    CustodyEntry,
    EvidenceItem,
    ExportedUrl,
    FlushReport,
    IntegrityProblem,
    RawEntry,
    StoredObject,
    TarExport,
    VerifyReport,
)
from irp.evidence.spool import Spool, SpoolOp
from irp.models import Incident, Severity, TimelineEntry, utcnow

__all__ = ["S3EvidenceStore", "s3_client"]

log = logging.getLogger(__name__)

MIB = 1024 * 1024
MAX_PARTS = 10_000
_UNAVAILABLE = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "ThrottlingException"}
_DENIED = {"AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccountProblem",
           "InvalidToken", "ExpiredToken", "InvalidSecurity"}
_NOT_FOUND = {"NoSuchKey", "404", "NotFound", "NoSuchVersion", "NoSuchUpload", "NoSuchTagSet",
              "ObjectLockConfigurationNotFoundError"}
_PUBLIC_GROUPS = ("http://acs.amazonaws.com/groups/global/AllUsers",
                  "http://acs.amazonaws.com/groups/global/AuthenticatedUsers")


class _Unavailable(Exception):
    """The store did not answer (connection refused or reset, timeout, 5xx after retries)."""


class _Conflict(Exception):
    """A write-once key is taken (412 Precondition Failed)."""


class _NotFound(Exception):
    """No such key, version or upload."""


class _BadOp(EvidenceError):
    """A spooled operation that cannot be replayed as it is (set aside for a person to look at)."""


def s3_client() -> Any:
    """The one place evidence code creates a boto3 S3 client (called lazily, never at import time).

    The endpoint is botocore's own AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3; with a custom endpoint
    (MinIO, Ceph, moto) buckets are addressed by path. Retries: AWS_RETRY_MODE / AWS_MAX_ATTEMPTS,
    default standard mode with 3 attempts.
    """
    import boto3
    from botocore.config import Config

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    try:
        attempts = int(os.environ.get("AWS_MAX_ATTEMPTS", "3"))
    except ValueError:
        raise ConfigurationError(f"AWS_MAX_ATTEMPTS={os.environ['AWS_MAX_ATTEMPTS']!r} is not a number") from None
    config = Config(
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
    try:
        return boto3.session.Session().client("s3", config=config)
    except BotoCoreError as exc:
        raise ConfigurationError(f"cannot create an S3 client: {exc}") from None


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _read_full(stream: IO[bytes], size: int) -> bytes:
    """Up to `size` bytes: fewer only at the end of the stream (pipes may return short reads)."""
    first = stream.read(size)
    if not first or len(first) == size:
        return first or b""
    chunks = [first]
    got = len(first)
    while got < size:
        more = stream.read(size - got)
        if not more:
            break
        chunks.append(more)
        got += len(more)
    return b"".join(chunks)


def _read_into(stream: IO[bytes], buffer: bytearray) -> int:
    """Fill `buffer` from `stream`; fewer bytes only at the end of the stream."""
    view = memoryview(buffer)
    got = 0
    readinto = getattr(stream, "readinto", None)
    while got < len(buffer):
        if readinto is not None:
            n = readinto(view[got:])
        else:
            data = stream.read(len(buffer) - got)
            n = len(data) if data else 0
            view[got:got + n] = data or b""
        if not n:
            break
        got += n
    view.release()
    return got


@dataclass
class _Source:
    """The bytes of one put: in memory (one part or less), or a stream we can re-read from `start`."""

    data: bytes | None = None
    stream: IO[bytes] | None = None
    start: int = 0
    size: int = 0
    sha256: str | None = None
    temp: Path | None = None  # our own temporary copy, removed (or spooled) after the put

    def rewind(self) -> IO[bytes]:
        assert self.stream is not None
        self.stream.seek(self.start)
        return self.stream


@dataclass
class _KeyState:
    """Every version of one key, as listed by ListObjectVersions."""

    versions: list[dict[str, Any]] = field(default_factory=list)
    current: dict[str, Any] | None = None
    deleted: bool = False


class S3EvidenceStore(EvidenceStore):
    """Evidence in an S3 bucket, with a local spool for outages. Thread-safe; one per URL (open_store)."""

    def __init__(self, url: str, bucket: str, prefix: str, settings: Any) -> None:
        self.url = url
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        mode = settings.evidence_retention_mode
        if mode.lower() == "off":
            mode = "off"
        elif mode.upper() in ("GOVERNANCE", "COMPLIANCE"):
            mode = mode.upper()
        else:
            raise ConfigurationError(f"IRP_EVIDENCE_RETENTION_MODE={mode!r}: valid: GOVERNANCE, COMPLIANCE, off")
        self._retention_mode = mode
        self._retention_days = dict(settings.evidence_retention_days)
        bad = [k for k in self._retention_days if k not in {s.value for s in Severity}]
        if bad or any(not isinstance(v, int) or v < 1 for v in self._retention_days.values()):
            raise ConfigurationError(f"IRP_EVIDENCE_RETENTION_DAYS={self._retention_days}: use severities "
                                     f"({', '.join(s.value for s in Severity)}) and whole days of 1 or more")
        sse = settings.evidence_sse
        if sse.lower() == "off":
            sse = "off"
        elif sse.upper() == "AES256":
            sse = "AES256"
        elif sse.lower() == "aws:kms":
            sse = "aws:kms"
        else:
            raise ConfigurationError(f"IRP_EVIDENCE_SSE={sse!r}: valid: AES256, aws:kms, off")
        if settings.evidence_kms_key_id and sse != "aws:kms":
            raise ConfigurationError("IRP_EVIDENCE_KMS_KEY_ID is set but IRP_EVIDENCE_SSE is not aws:kms")
        self._sse = sse
        self._kms_key_id = settings.evidence_kms_key_id
        if not 1 <= settings.evidence_presign_expiry_seconds <= 7 * 24 * 3600:
            raise ConfigurationError("IRP_EVIDENCE_PRESIGN_EXPIRY_SECONDS must be between 1 and 604800 (7 days)")
        self._presign_expiry = settings.evidence_presign_expiry_seconds
        if not 5 <= settings.evidence_part_size_mb <= 5 * 1024:
            raise ConfigurationError("IRP_EVIDENCE_PART_SIZE_MB must be between 5 and 5120")
        self._part_size = settings.evidence_part_size_mb * MIB
        if not 1 <= settings.evidence_upload_concurrency <= 32:
            raise ConfigurationError("IRP_EVIDENCE_UPLOAD_CONCURRENCY must be between 1 and 32")
        self._concurrency = settings.evidence_upload_concurrency
        spool_name = bucket + ("~" + self.prefix.replace("/", "~") if self.prefix else "")
        self.spool = Spool(Path(settings.evidence_spool_dir) / spool_name)

        self._client: Any = None
        self._client_lock = threading.Lock()
        self._lock = threading.RLock()          # manifest and custody appends, name reservations
        self._route_lock = threading.Lock()     # direct or spooled, decided one put at a time
        self._flush_lock = threading.Lock()
        self._items: dict[str, dict[str, EvidenceItem]] = {}
        self._reserved: dict[str, set[str]] = {}
        self._heads: dict[str, tuple[int, str]] = {}
        self._severities: dict[str, Severity | None] = {}
        self._object_lock: bool | None = None
        self._acl_readable = True
        self._flusher: threading.Thread | None = None
        self._closed = threading.Event()

    # ---- plumbing ------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = s3_client()
            return self._client

    def _base(self, incident_id: str) -> str:
        return f"{self.prefix}/{incident_id}/" if self.prefix else f"{incident_id}/"

    def _key(self, incident_id: str, *parts: str) -> str:
        return self._base(check_id(incident_id)) + "/".join(parts)

    @contextmanager
    def _errors(self, operation: str, where: str) -> Iterator[None]:
        """Map botocore's exceptions to ours: every message names the bucket and the operation."""
        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            message = error.get("Message", "")
            if code == "PreconditionFailed" or status == 412:
                raise _Conflict(where) from None
            if code == "NoSuchBucket":
                raise EvidenceError(f"evidence bucket {self.bucket!r} does not exist ({operation} on {where}); "
                                    "create it (with versioning and Object Lock) or fix IRP_EVIDENCE_URL") from None
            if code in _NOT_FOUND:
                raise _NotFound(where) from None
            if code in _DENIED or status == 403:
                raise EvidenceError(f"access denied to evidence bucket {self.bucket!r} ({operation} on {where}: "
                                    f"{code}); check the AWS credentials and the bucket policy") from None
            if code in _UNAVAILABLE or status >= 500:
                raise _Unavailable(f"{operation} on {where}: {code or status} {message}".strip()) from None
            raise EvidenceError(f"{operation} on {where} failed: {code}: {message}") from None
        except (NoCredentialsError, PartialCredentialsError):
            raise ConfigurationError(
                f"no AWS credentials for evidence bucket {self.bucket!r} ({operation}): set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (the standard AWS credential chain)") from None
        except (BotoConnectionError, HTTPClientError, ReadTimeoutError, ResponseStreamingError) as exc:
            raise _Unavailable(f"{operation} on {where}: {exc}") from None
        except BotoCoreError as exc:
            raise EvidenceError(f"{operation} on {where} failed: {exc}") from None

    def _call(self, method: str, **kwargs: Any) -> Any:
        operation = "".join(part.title() for part in method.split("_"))
        where = f"s3://{self.bucket}/{kwargs['Key']}" if "Key" in kwargs else f"s3://{self.bucket}"
        with self._errors(operation, where):
            return getattr(self.client, method)(Bucket=self.bucket, **kwargs)

    def _list(self, prefix: str, *, versions: bool = False, delimiter: str = "") -> Iterator[dict[str, Any]]:
        method = "list_object_versions" if versions else "list_objects_v2"
        operation = "ListObjectVersions" if versions else "ListObjectsV2"
        with self._errors(operation, f"s3://{self.bucket}/{prefix}"):
            args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
            if delimiter:
                args["Delimiter"] = delimiter
            yield from self.client.get_paginator(method).paginate(**args)

    def _keys(self, prefix: str) -> list[str]:
        return sorted(obj["Key"] for page in self._list(prefix) for obj in page.get("Contents", []))

    def _get_bytes(self, key: str, version_id: str | None = None) -> bytes:
        extra = {"VersionId": version_id} if version_id else {}
        response = self._call("get_object", Key=key, **extra)
        with self._errors("GetObject", f"s3://{self.bucket}/{key}"):
            return response["Body"].read()

    # ---- protection: encryption and Object Lock ------------------------------------------------

    def _lock_enabled(self) -> bool:
        if self._object_lock is None:
            try:
                config = self._call("get_object_lock_configuration")
                enabled = config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
            except _NotFound:
                enabled = False
            self._object_lock = enabled
        return self._object_lock

    def _retention(self, incident_id: str) -> tuple[str, datetime] | None:
        """(mode, retain-until) for an object archived now, or None without Object Lock."""
        if self._retention_mode == "off" or not self._lock_enabled():
            return None
        until = retention_until(self._severity(incident_id), self._retention_mode, self._retention_days)
        return (self._retention_mode, until) if until else None

    def _severity(self, incident_id: str) -> Severity | None:
        """The incident's severity (None before its record exists: the longest retention applies)."""
        if incident_id not in self._severities:
            try:
                record = Incident.model_validate_json(self._get_bytes(self._key(incident_id, "incident.json")))
                self._severities[incident_id] = record.severity
            except (_NotFound, ValidationError):
                self._severities[incident_id] = None  # until save_incident tells
        return self._severities[incident_id]

    def _protection(self, retention: tuple[str, datetime] | None) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if self._sse != "off":
            args["ServerSideEncryption"] = self._sse
            if self._kms_key_id:
                args["SSEKMSKeyId"] = self._kms_key_id
        if retention:
            args["ObjectLockMode"], args["ObjectLockRetainUntilDate"] = retention
        return args

    # ---- uploads -------------------------------------------------------------------------------

    def _put_bytes(self, key: str, data: bytes, content_type: str, *,
                   retention: tuple[str, datetime] | None = None, exclusive: bool = True) -> str | None:
        """PutObject with its SHA-256 checked by the store; `exclusive`: only if the key is free."""
        digest = hashlib.sha256(data).digest()
        args: dict[str, Any] = {
            "Key": key, "Body": data, "ContentType": content_type, "ChecksumAlgorithm": "SHA256",
            "ChecksumSHA256": _b64(digest), "Metadata": {"sha256": digest.hex()}, **self._protection(retention),
        }
        if exclusive:
            args["IfNoneMatch"] = "*"
        return self._call("put_object", **args).get("VersionId")

    def _put_stream(self, key: str, stream: IO[bytes], size: int, content_type: str,
                    retention: tuple[str, datetime] | None) -> tuple[str, int, str | None]:
        """Multipart upload of `stream`: SHA-256 in the same pass, `concurrency` parts in flight.

        On any failure the upload is aborted (or, if the store is gone, its abort is spooled):
        an interrupted upload never becomes an object.
        """
        part_size = max(self._part_size, math.ceil(size / (MAX_PARTS - 1) / MIB) * MIB)
        created = self._call("create_multipart_upload", Key=key, ContentType=content_type,
                             ChecksumAlgorithm="SHA256", **self._protection(retention))
        upload_id = created["UploadId"]
        sha = hashlib.sha256()
        total = 0
        futures: list[Future] = []
        failures: list[BaseException] = []
        # A fixed set of part buffers, reused: memory stays at (concurrency + 1) parts whatever the size,
        # and no part-sized allocation is made per part (that fragments the heap of a threaded process).
        free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(self._concurrency + 1):
            free.put(bytearray(part_size))

        def finished(buffer: bytearray) -> Callable[[Future], None]:
            def release(future: Future) -> None:
                if not future.cancelled() and future.exception() is not None:
                    failures.append(future.exception())
                free.put(buffer)
            return release

        pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="irp-evidence-part")
        try:
            number = 0
            while True:
                buffer = free.get()
                if failures:
                    raise failures[0]
                got = _read_into(stream, buffer)
                if not got:
                    break
                number += 1
                if number > MAX_PARTS:
                    raise EvidenceError(f"{key}: the stream grew beyond {MAX_PARTS} parts of {part_size} bytes")
                body = buffer if got == part_size else bytes(memoryview(buffer)[:got])
                sha.update(body)
                total += got
                future = pool.submit(self._put_part, key, upload_id, number, body)
                future.add_done_callback(finished(buffer))
                futures.append(future)
                del body
            parts = [future.result() for future in futures]
            done = self._call("complete_multipart_upload", Key=key, UploadId=upload_id,
                              MultipartUpload={"Parts": parts}, IfNoneMatch="*")
        except BaseException:
            for future in futures:
                future.cancel()
            pool.shutdown(wait=True)
            self._abort(key, upload_id)
            raise
        pool.shutdown(wait=True)
        version = done.get("VersionId")
        digest = sha.hexdigest()
        self._check_completed(key, version, total, retention)
        try:  # the object carries its SHA-256 as a tag (multipart metadata is fixed before the hash is known)
            self._call("put_object_tagging", Key=key, **({"VersionId": version} if version else {}),
                       Tagging={"TagSet": [{"Key": "sha256", "Value": digest}]})
        except (_Unavailable, _NotFound, EvidenceError) as exc:
            log.warning("could not tag %s with its sha256: %s", key, exc)
        return digest, total, version

    def _check_completed(self, key: str, version: str | None, size: int,
                         retention: tuple[str, datetime] | None) -> None:
        """The completed object has every byte; its retention is set (moto drops CreateMultipartUpload's)."""
        where = {"VersionId": version} if version else {}
        head = self._call("head_object", Key=key, **where)
        if head.get("ContentLength") != size:
            raise EvidenceError(f"s3://{self.bucket}/{key}: the completed upload holds {head.get('ContentLength')} "
                                f"bytes, {size} were sent; run irp evidence verify")
        if retention and head.get("ObjectLockRetainUntilDate") is None:
            self._call("put_object_retention", Key=key, **where,
                       Retention={"Mode": retention[0], "RetainUntilDate": retention[1]})

    def _put_part(self, key: str, upload_id: str, number: int, chunk: bytes | bytearray) -> dict[str, Any]:
        checksum = _b64(hashlib.sha256(chunk).digest())
        response = self._call("upload_part", Key=key, UploadId=upload_id, PartNumber=number, Body=chunk,
                              ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum)
        return {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum}

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self._call("abort_multipart_upload", Key=key, UploadId=upload_id)
        except _NotFound:
            pass
        except (_Unavailable, EvidenceError) as exc:
            log.warning("could not abort the multipart upload of %s (%s); spooled for the next flush", key, exc)
            self.spool.add(SpoolOp(kind="abort", key=key, upload_id=upload_id, reason=str(exc)))

    def _stored_sha256(self, key: str) -> tuple[str, str | None] | None:
        """(sha256, version id) of what is under `key` now, or None when nothing is."""
        try:
            head = self._call("head_object", Key=key)
        except _NotFound:
            return None
        version = head.get("VersionId")
        sha = head.get("Metadata", {}).get("sha256")
        if not sha:
            try:
                tags = self._call("get_object_tagging", Key=key, **({"VersionId": version} if version else {}))
                sha = next((t["Value"] for t in tags.get("TagSet", []) if t["Key"] == "sha256"), None)
            except (_NotFound, EvidenceError):
                sha = None
        if not sha:
            response = self._call("get_object", Key=key, **({"VersionId": version} if version else {}))
            with self._errors("GetObject", f"s3://{self.bucket}/{key}"):
                sha, _ = hash_stream(response["Body"])
        return sha, version

    # ---- put: the archive pipeline -------------------------------------------------------------

    def put(
        self,
        incident_id: str,
        name: str,
        data: bytes | IO[bytes],
        *,
        content_type: str = "application/octet-stream",
        collected_by: CollectedBy | None = None,
        source_system: str = "",
        source_time: str | None = None,
    ) -> EvidenceItem:
        check_id(incident_id)
        check_name(name)
        op = SpoolOp(kind="put", incident_id=incident_id, name=name, content_type=content_type,
                     collected_by=collected_by or CollectedBy(), collected_at=utcnow(),
                     source_system=source_system, source_time=source_time)
        source = self._prepare(data)
        try:
            with self._route_lock:
                if self.spool.has_pending():  # keep the order: behind what is waiting
                    return self._spool_put(op, source, "earlier evidence is still waiting in the spool")
            try:
                return self._archive(op, source, lambda: None)
            except _Unavailable as exc:
                with self._route_lock:
                    return self._spool_put(op, source, str(exc))
        finally:
            if source.temp is not None:
                if source.stream is not None:
                    source.stream.close()
                source.temp.unlink(missing_ok=True)

    def _prepare(self, data: bytes | IO[bytes]) -> _Source:
        """Small data stays in memory; a seekable stream is re-read if needed; any other goes to a temp file."""
        if isinstance(data, bytes | bytearray | memoryview):
            return _Source(data=bytes(data))
        seekable = False
        try:
            seekable = data.seekable()
            start = data.tell() if seekable else 0
        except (AttributeError, OSError):
            seekable = False
        first = _read_full(data, self._part_size)
        if len(first) < self._part_size:
            return _Source(data=first)
        if seekable:
            end = data.seek(0, os.SEEK_END)
            data.seek(start)
            return _Source(stream=data, start=start, size=end - start)
        handle, path = self.spool.temp_file()
        sha = hashlib.sha256(first)
        size = len(first)
        handle.write(first)
        del first
        while chunk := data.read(self._part_size):
            sha.update(chunk)
            handle.write(chunk)
            size += len(chunk)
        handle.flush()
        return _Source(stream=handle, start=0, size=size, sha256=sha.hexdigest(), temp=path)

    def _archive(self, op: SpoolOp, source: _Source | None, save: Callable[[], None],
                 spooled: bool = False) -> EvidenceItem:
        """Upload (unless done), then the manifest entry and the custody entries; `op.progress` records each step."""
        incident_id = op.incident_id
        progress = op.progress
        retention = self._retention(incident_id)
        if "object" not in progress:
            assert source is not None
            progress["object"] = self._upload_object(op, source, retention)
            save()
        done = progress["object"]
        if done.get("existing"):
            return EvidenceItem.model_validate(done["existing"])
        until = datetime.fromisoformat(done["retention_until"]) if done.get("retention_until") else None
        item = EvidenceItem(
            name=done["name"], size=done["size"], sha256=done["sha256"], content_type=op.content_type,
            collected_by=op.collected_by, collected_at=op.collected_at or utcnow(), source_time=op.source_time,
            source_system=op.source_system, retention_until=until, retention_mode=done.get("retention_mode"),
            version_id=done.get("version_id"),
        )
        with self._lock:
            if not progress.get("manifest"):
                key = self._key(incident_id, "manifest", item.name + ".json")
                try:
                    self._put_bytes(key, item.model_dump_json(indent=2).encode(), "application/json",
                                    retention=(item.retention_mode, until) if until and item.retention_mode else None)
                except _Conflict:
                    listed = EvidenceItem.model_validate_json(self._get_bytes(key))
                    if listed.sha256 != item.sha256:
                        raise _BadOp(f"s3://{self.bucket}/{key} already lists other content for "
                                            f"{item.name}; run irp evidence verify {incident_id}") from None
                progress["manifest"] = True
                save()
            extra = {"spooled_at": op.spooled_at.isoformat(), "spool_reason": op.reason} if spooled else {}
            actor = collector(item.collected_by)
            if not progress.get("collected"):
                self._append_custody(incident_id, "collected", actor=actor, object=item.name, sha256=item.sha256,
                                     details={"size": item.size, "content_type": item.content_type,
                                              "collected_at": item.collected_at.isoformat(),
                                              "collected_by": item.collected_by.model_dump(),
                                              "source_system": item.source_system,
                                              "source_time": item.source_time, **extra})
                progress["collected"] = True
                save()
            if not progress.get("archived"):
                self._append_custody(incident_id, "archived", actor=actor, object=item.name, sha256=item.sha256,
                                     details={"location": f"s3://{self.bucket}/{done['key']}",
                                              "version_id": item.version_id, "sse": self._sse,
                                              "kms_key_id": self._kms_key_id or None,
                                              "retention_mode": item.retention_mode,
                                              "retention_until": until.isoformat() if until else None,
                                              "multipart": done.get("multipart", False)})
                progress["archived"] = True
                save()
            self._items.setdefault(incident_id, {})[item.name] = item
            self._reserved.get(incident_id, set()).discard(item.name)
        return item

    def _upload_object(self, op: SpoolOp, source: _Source, retention: tuple[str, datetime] | None) -> dict[str, Any]:
        """Pick the final name (same content under the name: no-op) and upload under it."""
        incident_id = op.incident_id
        digest = source.sha256 or (hashlib.sha256(source.data).hexdigest() if source.data is not None else None)
        taken: set[str] = set()
        for _ in range(100):
            with self._lock:
                items = self._manifest_items(incident_id)
                reserved = self._reserved.setdefault(incident_id, set())
                if digest is None and (op.name in items or op.name in reserved):
                    digest, _ = hash_stream(source.rewind())  # a taken name: same content is a no-op
                    source.sha256 = digest
                final, n = op.name, 1
                while final in items or final in reserved or final in taken:
                    if final in items and items[final].sha256 == digest:
                        return {"existing": items[final].model_dump(mode="json"), "name": final}
                    n += 1
                    final = numbered(op.name, n)
                reserved.add(final)
            key = self._key(incident_id, "objects", final)
            try:
                if source.data is not None:
                    version = self._put_bytes(key, source.data, op.content_type, retention=retention)
                    sha, size, multipart = digest, len(source.data), False
                else:  # a taken key shows at CompleteMultipartUpload (If-None-Match): the upload is aborted
                    sha, size, version = self._put_stream(key, source.rewind(), source.size, op.content_type,
                                                          retention)
                    multipart = True
            except _Conflict:
                with self._lock:
                    self._reserved[incident_id].discard(final)
                stored = self._stored_sha256(key)
                if stored and digest and stored[0] == digest:  # ours, from an attempt whose answer was lost
                    sha, size, version, multipart = digest, source.size or len(source.data or b""), stored[1], False
                else:
                    taken.add(final)
                    continue
            except BaseException:
                with self._lock:
                    self._reserved[incident_id].discard(final)
                raise
            return {"name": final, "key": key, "sha256": sha, "size": size, "version_id": version,
                    "multipart": multipart, "retention_mode": retention[0] if retention else None,
                    "retention_until": retention[1].isoformat() if retention else None}
        raise EvidenceError(f"{self.url}: no free name for {op.name} in incident {incident_id}")

    def _spool_put(self, op: SpoolOp, source: _Source, reason: str) -> EvidenceItem:
        """Keep the item locally until the store answers; the caller gets its manifest line now."""
        op = op.model_copy(update={"reason": reason})
        if "object" in op.progress:
            done = op.progress["object"]
            op = self.spool.add(op.model_copy(update={"sha256": done["sha256"], "size": done["size"]}))
        elif source.temp is not None and source.stream is not None:
            source.stream.close()
            op = self.spool.adopt(op.model_copy(update={"sha256": source.sha256 or "", "size": source.size}),
                                  source.temp)
            source.temp, source.stream = None, None
        elif source.data is not None:
            op = self.spool.add(op, source.data)
        else:
            op = self.spool.add(op, source.rewind())
        first = not self._flusher_alive()
        (log.warning if first else log.info)(
            "evidence store %s unreachable (%s): %s of %s kept in %s until it is back "
            "(retried automatically; `irp evidence flush` uploads on demand)",
            self.url, reason, op.name, op.incident_id, self.spool.folder)
        self._start_flusher()
        return EvidenceItem(name=op.name, size=op.size, sha256=op.sha256, content_type=op.content_type,
                            collected_by=op.collected_by, collected_at=op.collected_at or utcnow(),
                            source_time=op.source_time, source_system=op.source_system)

    # ---- the spool: flush and the background retry ---------------------------------------------

    def flush(self) -> FlushReport:
        """Upload everything spooled, oldest first; raises EvidenceError while the store is unreachable."""
        uploaded = 0
        failed: list[str] = []
        with self._flush_lock, self.spool.locked():
            ops = self.spool.pending()
            last_record = {op.incident_id: op.id for op in ops if op.kind == "incident"}
            for op in ops:
                try:
                    self._replay(op, last_record)
                except _Unavailable as exc:
                    remaining = len(self.spool.pending())
                    raise EvidenceError(f"evidence store {self.url} unreachable ({exc}): {uploaded} uploaded, "
                                        f"{remaining} still waiting in {self.spool.folder}") from None
                except _BadOp as exc:
                    failed.append(f"{op.incident_id} {op.name or op.kind}: {exc}")
                    self.spool.set_aside(op)
                    log.error("spooled %s of %s set aside: %s", op.name or op.kind, op.incident_id, exc)
                    continue
                self.spool.done(op)
                uploaded += 1
        return FlushReport(uploaded=uploaded, remaining=len(self.spool.pending()), failed=failed)

    def _replay(self, op: SpoolOp, last_record: dict[str, str]) -> None:
        if op.kind == "put":
            source = None
            if "object" not in op.progress:
                path = self.spool.data_path(op)
                if not path.exists():
                    raise _BadOp(f"its data file {path} is gone")
                source = _Source(stream=open(path, "rb"), size=op.size, sha256=op.sha256)
            try:
                self._archive(op, source, lambda: self.spool.save(op), spooled=True)
            finally:
                if source and source.stream:
                    source.stream.close()
        elif op.kind == "incident" and op.payload is not None:
            if last_record.get(op.incident_id) == op.id:
                self._write_incident(Incident.model_validate(op.payload))
        elif op.kind == "event" and op.payload is not None:
            self._write_event(op.incident_id, TimelineEntry.model_validate(op.payload), op.id)
        elif op.kind == "abort":
            try:
                self._call("abort_multipart_upload", Key=op.key, UploadId=op.upload_id)
            except _NotFound:
                pass

    def _flusher_alive(self) -> bool:
        return self._flusher is not None and self._flusher.is_alive()

    def _start_flusher(self) -> None:
        if self._flusher is not None and self._flusher.is_alive():
            return
        self._closed.clear()
        self._flusher = threading.Thread(target=self._flush_loop, name=f"irp-evidence-flush {self.url}", daemon=True)
        self._flusher.start()

    def _flush_loop(self) -> None:
        """Retry the spool with backoff (1 s, doubling, at most 60 s) until it is empty."""
        delay = 1.0
        while not self._closed.wait(delay):
            try:
                self.flush()
            except EvidenceError as exc:
                log.warning("evidence spool not uploaded yet: %s", exc)
            except Exception as exc:  # the retry thread must not die silently
                log.error("evidence spool flush failed: %s: %s", type(exc).__name__, exc)
            with self._route_lock:
                if not self.spool.has_pending():
                    log.info("evidence spool of %s uploaded", self.url)
                    return
            delay = min(delay * 2, 60.0)

    def close(self) -> None:
        """Stop the background retry (what is spooled stays spooled)."""
        self._closed.set()
        if self._flusher is not None:
            self._flusher.join(timeout=30)

    def waiting(self, incident_id: str | None = None) -> int:
        return len([op for op in self.spool.pending() if incident_id is None or op.incident_id == incident_id])

    # ---- manifest, records, events ---------------------------------------------------------------

    def _manifest_items(self, incident_id: str) -> dict[str, EvidenceItem]:
        """The manifest from the store: list the entries, fetch the ones not seen yet (they are write-once)."""
        cache = self._items.setdefault(incident_id, {})
        prefix = self._key(incident_id, "manifest/")
        for key in self._keys(prefix):
            name = key[len(prefix):].removesuffix(".json")
            if name not in cache:
                try:
                    cache[name] = EvidenceItem.model_validate_json(self._get_bytes(key))
                except ValidationError:
                    raise EvidenceError(f"s3://{self.bucket}/{key} is not a manifest entry; "
                                        f"run irp evidence verify {incident_id}") from None
                except _NotFound:
                    continue
        return cache

    def manifest(self, incident_id: str) -> list[EvidenceItem]:
        check_id(incident_id)
        items: dict[str, EvidenceItem]
        pending = [op for op in self.spool.pending() if op.incident_id == incident_id and op.kind == "put"]
        if self._flusher_alive():  # the store is known to be away: no waiting on it
            items = dict(self._items.get(incident_id, {}))
        else:
            try:
                items = dict(self._manifest_items(incident_id))
            except _Unavailable as exc:
                log.warning("evidence store %s unreachable (%s): manifest of %s from what this process knows",
                            self.url, exc, incident_id)
                items = dict(self._items.get(incident_id, {}))
        for op in pending:
            if op.name not in items:
                items[op.name] = EvidenceItem(name=op.name, size=op.size, sha256=op.sha256,
                                              content_type=op.content_type, collected_by=op.collected_by,
                                              collected_at=op.collected_at or op.spooled_at,
                                              source_time=op.source_time, source_system=op.source_system)
        return sorted(items.values(), key=lambda item: (item.collected_at, item.name))

    def incident_ids(self) -> list[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        found = {op.incident_id for op in self.spool.pending() if op.incident_id}
        try:
            for page in self._list(base, delimiter="/"):
                for common in page.get("CommonPrefixes", []):
                    name = common["Prefix"][len(base):].rstrip("/")
                    if is_incident_id(name):
                        found.add(name)
        except _Unavailable as exc:
            raise EvidenceError(f"evidence store {self.url} unreachable: {exc}") from None
        return sorted(found)

    def save_incident(self, incident: Incident) -> None:
        check_id(incident.id)
        self._severities[incident.id] = incident.severity
        with self._route_lock:
            if self.spool.has_pending():
                self._spool_record(incident, "earlier writes are still waiting in the spool")
                return
        try:
            self._write_incident(incident)
        except _Unavailable as exc:
            with self._route_lock:
                self._spool_record(incident, str(exc))

    def _spool_record(self, incident: Incident, reason: str) -> None:
        self.spool.add(SpoolOp(kind="incident", incident_id=incident.id, reason=reason,
                               payload=incident.model_dump(mode="json")))
        self._start_flusher()

    def _write_incident(self, incident: Incident) -> None:
        self._put_bytes(self._key(incident.id, "incident.json"), incident.model_dump_json(indent=2).encode(),
                        "application/json", exclusive=False)

    def load_incident(self, incident_id: str) -> Incident:
        check_id(incident_id)
        pending = [op for op in self.spool.pending() if op.incident_id == incident_id]
        records = [op.payload for op in pending if op.kind == "incident" and op.payload]
        events = [TimelineEntry.model_validate(op.payload) for op in pending if op.kind == "event" and op.payload]
        try:
            if records:
                incident = Incident.model_validate(records[-1])
            else:
                try:
                    incident = Incident.model_validate_json(self._get_bytes(self._key(incident_id, "incident.json")))
                except _NotFound:
                    raise EvidenceError(f"no incident {incident_id} in {self.url}") from None
            if not (records and self._flusher_alive()):
                for key in self._keys(self._key(incident_id, "events/")):
                    events.append(TimelineEntry.model_validate_json(self._get_bytes(key)))
        except _Unavailable as exc:
            if not records:
                raise EvidenceError(f"evidence store {self.url} unreachable ({exc}): "
                                    f"cannot read incident {incident_id}") from None
            log.warning("evidence store %s unreachable (%s): incident %s from the spool", self.url, exc, incident_id)
        return with_events(incident, events)

    def append_event(self, incident_id: str, entry: TimelineEntry) -> None:
        check_id(incident_id)
        op = SpoolOp(kind="event", incident_id=incident_id, payload=entry.model_dump(mode="json"))
        with self._route_lock:
            if self.spool.has_pending():
                self.spool.add(op.model_copy(update={"reason": "earlier writes are still waiting in the spool"}))
                self._start_flusher()
                return
        try:
            self._write_event(incident_id, entry, f"{time.time_ns():020d}-{os.getpid()}-{threading.get_ident()}")
        except _Unavailable as exc:
            with self._route_lock:
                self.spool.add(op.model_copy(update={"reason": str(exc)}))
                self._start_flusher()

    def _write_event(self, incident_id: str, entry: TimelineEntry, event_id: str) -> None:
        try:
            self._put_bytes(self._key(incident_id, "events", f"{event_id}.json"), entry.model_dump_json().encode(),
                            "application/json")
        except _Conflict:
            pass  # written by an earlier attempt

    def location(self, incident_id: str) -> str:
        return f"s3://{self.bucket}/{self._base(check_id(incident_id))}"

    # ---- custody -------------------------------------------------------------------------------

    def record_custody(
        self,
        incident_id: str,
        event: str,
        *,
        actor: str | None = None,
        object: str | None = None,
        sha256: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> CustodyEntry:
        check_id(incident_id)
        try:
            return self._append_custody(incident_id, event, actor=actor or local_actor(), object=object,
                                        sha256=sha256, details=details)
        except _Unavailable as exc:
            raise EvidenceError(f"evidence store {self.url} unreachable ({exc}): "
                                f"cannot record '{event}' in the custody log of {incident_id}") from None

    def _append_custody(self, incident_id: str, event: str, **fields: Any) -> CustodyEntry:
        """Write the next entry with If-None-Match; another writer took the number: re-read the head and retry."""
        prefix = self._key(incident_id, "custody/")
        retention = self._retention(incident_id)
        with self._lock:
            for _ in range(50):
                if incident_id not in self._heads:
                    keys = self._keys(prefix)
                    if not keys:
                        self._heads[incident_id] = (0, GENESIS)
                    else:
                        text = self._get_bytes(keys[-1])
                        seq_of_key = int(keys[-1][len(prefix):].removesuffix(".json") or 0)
                        self._heads[incident_id] = head_of(text) or (seq_of_key, hashlib.sha256(text).hexdigest())
                seq, prev = self._heads[incident_id]
                record = seal(incident_id, seq + 1, prev, event, **fields)
                try:
                    self._put_bytes(f"{prefix}{seq + 1:08d}.json", encode(record), "application/json",
                                    retention=retention)
                except _Conflict:
                    self._heads.pop(incident_id, None)
                    continue
                self._heads[incident_id] = (seq + 1, record["hash"])
                return CustodyEntry.model_validate(record)
        raise EvidenceError(f"could not append to the custody log of {incident_id} in {self.url}: "
                            "too many concurrent writers")

    def _states(self, prefix: str) -> dict[str, _KeyState]:
        states: dict[str, _KeyState] = {}
        for page in self._list(prefix, versions=True):
            for version in page.get("Versions", []):
                state = states.setdefault(version["Key"], _KeyState())
                state.versions.append(version)
                if version.get("IsLatest"):
                    state.current = version
            for marker in page.get("DeleteMarkers", []):
                state = states.setdefault(marker["Key"], _KeyState())
                if marker.get("IsLatest"):
                    state.deleted = True
        return states

    def _custody_raw(self, incident_id: str) -> list[RawEntry]:
        prefix = self._key(incident_id, "custody/")
        raws = []
        try:
            for key, state in sorted(self._states(prefix).items()):
                label = key[len(self._base(incident_id)):]
                if state.deleted or state.current is None:
                    kept = f"; {len(state.versions)} earlier version(s) still retained" if state.versions else ""
                    raws.append(RawEntry(label=label, text=None, note=f"deleted out of band{kept}"))
                    continue
                note = f"overwritten out of band ({len(state.versions)} versions)" if len(state.versions) > 1 else ""
                raws.append(RawEntry(label=label, text=self._get_bytes(key, state.current.get("VersionId")),
                                     note=note))
        except _Unavailable as exc:
            raise EvidenceError(f"evidence store {self.url} unreachable: {exc}") from None
        return raws

    # ---- verify and export ---------------------------------------------------------------------

    def verify(self, incident_id: str, *, actor: str | None = None) -> VerifyReport:
        try:
            return super().verify(incident_id, actor=actor)
        except _Unavailable as exc:
            raise EvidenceError(f"evidence store {self.url} unreachable ({exc}): cannot verify {incident_id}") from None

    def _manifest_for_verify(self, incident_id: str) -> tuple[list[EvidenceItem], list[IntegrityProblem]]:
        base = self._base(incident_id)
        items, problems = [], []
        for key, state in sorted(self._states(base).items()):
            relative = key[len(base):]
            top = relative.split("/", 1)[0]
            if relative == "incident.json" or top in ("objects", "custody", "events"):
                continue
            if top != "manifest" or not relative.endswith(".json"):
                if not state.deleted:
                    problems.append(IntegrityProblem(kind="unexpected", subject=relative,
                                            detail="not part of the evidence layout"))
                continue
            name = relative[len("manifest/"):-len(".json")]
            if state.deleted or state.current is None:
                problems.append(IntegrityProblem(kind="missing", subject=f"manifest entry of {name}",
                                        detail="deleted out of band"))
                continue
            try:
                item = EvidenceItem.model_validate_json(self._get_bytes(key, state.current.get("VersionId")))
            except ValidationError:
                problems.append(IntegrityProblem(kind="altered", subject=f"manifest entry of {name}",
                                        detail="not a valid manifest entry"))
                continue
            if item.name != name:
                problems.append(IntegrityProblem(kind="altered", subject=f"manifest entry of {name}",
                                        detail=f"names {item.name!r}"))
                continue
            if len(state.versions) > 1:
                problems.append(IntegrityProblem(kind="altered", subject=f"manifest entry of {name}",
                                        detail=f"overwritten out of band ({len(state.versions)} versions)"))
            items.append(item)
        items.sort(key=lambda item: (item.collected_at, item.name))
        return items, problems

    def _inventory(self, incident_id: str) -> dict[str, StoredObject]:
        prefix = self._key(incident_id, "objects/")
        found = {}
        for key, state in self._states(prefix).items():
            name = key[len(prefix):]
            if state.deleted or state.current is None:
                kept = (f"; version {state.versions[0]['VersionId']} is still retained"
                        if state.versions else "")
                found[name] = StoredObject(size=None, deleted=True,
                                           note=f"deleted out of band (a delete marker hides it){kept}")
                continue
            note = f"overwritten out of band ({len(state.versions)} versions)" if len(state.versions) > 1 else ""
            found[name] = StoredObject(size=state.current.get("Size"), version_id=state.current.get("VersionId"),
                                       note=note)
        return found

    def _rehash(self, incident_id: str, item: EvidenceItem, stored: StoredObject) -> tuple[str, int, list[IntegrityProblem]]:
        key = self._key(incident_id, "objects", item.name)
        version = {"VersionId": stored.version_id} if stored.version_id and stored.version_id != "null" else {}
        response = self._call("get_object", Key=key, **version)
        with self._errors("GetObject", f"s3://{self.bucket}/{key}"):
            sha, size = hash_stream(response["Body"])
        problems = []
        until = response.get("ObjectLockRetainUntilDate")
        if item.retention_until and (until is None or until < item.retention_until - timedelta(seconds=1)):
            problems.append(IntegrityProblem(kind="unprotected", subject=item.name,
                                    detail=f"Object Lock retention {until or 'none'}, archived until "
                                           f"{item.retention_until.isoformat()}"))
        if self._sse != "off" and not response.get("ServerSideEncryption"):
            problems.append(IntegrityProblem(kind="unprotected", subject=item.name, detail="not encrypted at rest"))
        grants = []
        if self._acl_readable:
            try:
                grants = self._call("get_object_acl", Key=key, **version).get("Grants", [])
            except (EvidenceError, _NotFound):
                pass  # ACLs disabled on the bucket: nothing can be public through them
            except _Unavailable as exc:  # moto answers 500 for multipart objects: stop asking
                log.warning("%s: GetObjectAcl failed (%s); public ACLs not checked", self.url, exc)
                self._acl_readable = False
        for grant in grants:
            uri = grant.get("Grantee", {}).get("URI", "")
            if uri in _PUBLIC_GROUPS:
                group = uri.rsplit("/", 1)[-1]
                problems.append(IntegrityProblem(kind="exposed", subject=item.name,
                                        detail=f"public ACL grant: {grant.get('Permission')} to {group}"))
        return sha, size, problems

    @contextmanager
    def _open_raw(self, incident_id: str, name: str) -> Iterator[IO[bytes]]:
        item = self._archived_item(incident_id, name)
        key = self._key(incident_id, "objects", name)
        version = {"VersionId": item.version_id} if item.version_id and item.version_id != "null" else {}
        try:
            response = self._call("get_object", Key=key, **version)
        except _NotFound:
            raise EvidenceError(f"no evidence {name!r} for incident {incident_id} in {self.url}") from None
        except _Unavailable as exc:
            raise EvidenceError(f"evidence store {self.url} unreachable: {exc}") from None
        body = response["Body"]
        try:
            yield _MappedReader(body, self, key)
        finally:
            body.close()

    def _archived_item(self, incident_id: str, name: str) -> EvidenceItem:
        try:
            items = self._manifest_items(incident_id)
        except _Unavailable as exc:
            raise EvidenceError(f"evidence store {self.url} unreachable: {exc}") from None
        if name not in items:
            if any(op.name == name and op.incident_id == incident_id for op in self.spool.pending()):
                raise EvidenceError(f"{name} of {incident_id} is still in the spool; run irp evidence flush")
            raise EvidenceError(f"no evidence {name!r} for incident {incident_id} in {self.url}")
        return items[name]

    def _require_uploaded(self, incident_id: str) -> None:
        waiting = [op.name or op.kind for op in self.spool.pending() if op.incident_id == incident_id]
        if waiting:
            raise EvidenceError(f"{len(waiting)} writes of {incident_id} still wait in the spool "
                                f"({', '.join(waiting[:5])}); run irp evidence flush first")

    def export_urls(self, incident_id: str, *, expires_in: int | None = None,
                    actor: str | None = None) -> list[ExportedUrl]:
        check_id(incident_id)
        expiry = expires_in or self._presign_expiry
        if not 1 <= expiry <= self._presign_expiry:
            raise EvidenceError(f"--expires {expiry}: presigned URLs live at most {self._presign_expiry} s "
                                "(IRP_EVIDENCE_PRESIGN_EXPIRY_SECONDS)")
        self._require_uploaded(incident_id)
        try:
            items = sorted(self._manifest_items(incident_id).values(), key=lambda i: (i.collected_at, i.name))
        except _Unavailable as exc:
            raise EvidenceError(f"evidence store {self.url} unreachable: {exc}") from None
        if not items:
            raise EvidenceError(f"no evidence for incident {incident_id} in {self.url}")
        urls = []
        who = actor or local_actor()
        for item in items:
            params = {"Bucket": self.bucket, "Key": self._key(incident_id, "objects", item.name)}
            if item.version_id and item.version_id != "null":
                params["VersionId"] = item.version_id
            expires_at = (utcnow() + timedelta(seconds=expiry)).replace(microsecond=0)
            with self._errors("GeneratePresignedUrl", f"s3://{self.bucket}/{params['Key']}"):
                url = self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=expiry)
            self.record_custody(incident_id, "exported", actor=who, object=item.name, sha256=item.sha256, details={
                "method": "presigned-url", "expires_at": expires_at.isoformat(), "expires_in": expiry,
                "version_id": item.version_id,
            })
            urls.append(ExportedUrl(name=item.name, sha256=item.sha256, url=url, expires_at=expires_at))
        return urls

    def export_tar(self, incident_id: str, path: Path, *, actor: str | None = None) -> TarExport:
        check_id(incident_id)
        self._require_uploaded(incident_id)
        try:
            return super().export_tar(incident_id, path, actor=actor)
        except _Unavailable as exc:
            raise EvidenceError(f"evidence store {self.url} unreachable ({exc}): "
                                f"export of {incident_id} stopped") from None


class _MappedReader:
    """A response body whose read errors become EvidenceError."""

    def __init__(self, body: Any, store: S3EvidenceStore, key: str) -> None:
        self._body = body
        self._store = store
        self._key = key

    def read(self, n: int = -1) -> bytes:
        try:
            with self._store._errors("GetObject", f"s3://{self._store.bucket}/{self._key}"):
                return self._body.read(None if n is None or n < 0 else n)
        except _Unavailable as exc:
            raise EvidenceError(f"reading s3://{self._store.bucket}/{self._key} was interrupted: {exc}") from None

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._body.close()
