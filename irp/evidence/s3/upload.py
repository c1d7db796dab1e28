"""Getting an item's bytes into the bucket: in memory or as a stream, one PutObject or a threaded multipart upload.

Items of a part or more go up as a multipart upload, parts in parallel, while one pass computes the
SHA-256 (memory: about concurrency + 1 parts). An interrupted upload is aborted (its abort spooled
when the store is gone): it never becomes an object.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import queue
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from irp.errors import EvidenceError
from irp.evidence.base import hash_stream
from irp.evidence.s3.bucket import Bucket, KeyNotFound, StoreUnavailable, b64
from irp.evidence.spool import Spool, SpoolOp

log = logging.getLogger(__name__)

MIB = 1024 * 1024
MAX_PARTS = 10_000


def read_full(stream: IO[bytes], size: int) -> bytes:
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


def read_into(stream: IO[bytes], buffer: bytearray) -> int:
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
class Source:
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


class Uploader:
    """Uploads to one bucket: parts of `part_size` bytes, `concurrency` in flight; temp files and aborts in `spool`."""

    def __init__(self, bucket: Bucket, spool: Spool, part_size: int, concurrency: int) -> None:
        self.bucket = bucket
        self.spool = spool
        self._part_size = part_size
        self._concurrency = concurrency

    def prepare(self, data: bytes | IO[bytes]) -> Source:
        """Small data stays in memory; a seekable stream is re-read if needed; any other goes to a temp file."""
        if isinstance(data, bytes | bytearray | memoryview):
            return Source(data=bytes(data))
        seekable = False
        try:
            seekable = data.seekable()
            start = data.tell() if seekable else 0
        except (AttributeError, OSError):
            seekable = False
        first = read_full(data, self._part_size)
        if len(first) < self._part_size:
            return Source(data=first)
        if seekable:
            end = data.seek(0, os.SEEK_END)
            data.seek(start)
            return Source(stream=data, start=start, size=end - start)
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
        return Source(stream=handle, start=0, size=size, sha256=sha.hexdigest(), temp=path)

    def put_stream(self, key: str, stream: IO[bytes], size: int, content_type: str,
                   retention: tuple[str, datetime] | None, protection: dict[str, Any]) -> tuple[str, int, str | None]:
        """Multipart upload of `stream`: SHA-256 in the same pass, `concurrency` parts in flight.

        On any failure the upload is aborted (or, if the store is gone, its abort is spooled):
        an interrupted upload never becomes an object.
        """
        part_size = max(self._part_size, math.ceil(size / (MAX_PARTS - 1) / MIB) * MIB)
        created = self.bucket.call("create_multipart_upload", Key=key, ContentType=content_type,
                             ChecksumAlgorithm="SHA256", **protection)
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
                got = read_into(stream, buffer)
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
            done = self.bucket.call("complete_multipart_upload", Key=key, UploadId=upload_id,
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
            self.bucket.call("put_object_tagging", Key=key, **({"VersionId": version} if version else {}),
                       Tagging={"TagSet": [{"Key": "sha256", "Value": digest}]})
        except (StoreUnavailable, KeyNotFound, EvidenceError) as exc:
            log.warning("could not tag %s with its sha256: %s", key, exc)
        return digest, total, version

    def _check_completed(self, key: str, version: str | None, size: int,
                         retention: tuple[str, datetime] | None) -> None:
        """The completed object has every byte; its retention is set (moto drops CreateMultipartUpload's)."""
        where = {"VersionId": version} if version else {}
        head = self.bucket.call("head_object", Key=key, **where)
        if head.get("ContentLength") != size:
            raise EvidenceError(f"s3://{self.bucket}/{key}: the completed upload holds {head.get('ContentLength')} "
                                f"bytes, {size} were sent; run irp evidence verify")
        if retention and head.get("ObjectLockRetainUntilDate") is None:
            self.bucket.call("put_object_retention", Key=key, **where,
                       Retention={"Mode": retention[0], "RetainUntilDate": retention[1]})

    def _put_part(self, key: str, upload_id: str, number: int, chunk: bytes | bytearray) -> dict[str, Any]:
        checksum = b64(hashlib.sha256(chunk).digest())
        response = self.bucket.call("upload_part", Key=key, UploadId=upload_id, PartNumber=number, Body=chunk,
                              ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum)
        return {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum}

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self.bucket.call("abort_multipart_upload", Key=key, UploadId=upload_id)
        except KeyNotFound:
            pass
        except (StoreUnavailable, EvidenceError) as exc:
            log.warning("could not abort the multipart upload of %s (%s); spooled for the next flush", key, exc)
            self.spool.add(SpoolOp(kind="abort", key=key, upload_id=upload_id, reason=str(exc)))

    def stored_sha256(self, key: str) -> tuple[str, str | None] | None:
        """(sha256, version id) of what is under `key` now, or None when nothing is."""
        try:
            head = self.bucket.call("head_object", Key=key)
        except KeyNotFound:
            return None
        version = head.get("VersionId")
        sha = head.get("Metadata", {}).get("sha256")
        if not sha:
            try:
                tags = self.bucket.call("get_object_tagging", Key=key, **({"VersionId": version} if version else {}))
                sha = next((t["Value"] for t in tags.get("TagSet", []) if t["Key"] == "sha256"), None)
            except (KeyNotFound, EvidenceError):
                sha = None
        if not sha:
            response = self.bucket.call("get_object", Key=key, **({"VersionId": version} if version else {}))
            with self.bucket.errors("GetObject", self.bucket.where(key)):
                sha, _ = hash_stream(response["Body"])
        return sha, version
