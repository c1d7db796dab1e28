"""The local spool: what could not reach the S3 store waits here, in order, until `flush` uploads it.

    <spool>/<bucket>[~<prefix>]/<op>.json   one pending operation (put, incident, event, abort)
    <spool>/<bucket>[~<prefix>]/<op>.data   the bytes of a pending put

Op names sort in the order they were spooled. Files are written to a temporary name, fsync'd and
renamed, so a crash leaves either a whole operation or none. Folder 0700, files 0600 (policy §12).
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel, Field, ValidationError

from irp.errors import EvidenceError
from irp.evidence.base import CHUNK_SIZE
from irp.evidence.models import CollectedBy
from irp.models import utcnow

_counter = itertools.count()


class SpoolOp(BaseModel):
    """One operation waiting for the store."""

    id: str = ""
    kind: Literal["put", "incident", "event", "abort"]
    incident_id: str = ""
    spooled_at: datetime = Field(default_factory=utcnow)
    reason: str = ""
    # put
    name: str = ""
    content_type: str = "application/octet-stream"
    collected_by: CollectedBy = Field(default_factory=CollectedBy)
    collected_at: datetime | None = None
    source_system: str = ""
    source_time: str | None = None
    sha256: str = ""
    size: int = 0
    progress: dict[str, Any] = Field(default_factory=dict)
    # incident, event
    payload: dict[str, Any] | None = None
    # abort: the S3 key; event: the event's id when a first attempt may have written it
    key: str = ""
    upload_id: str = ""


class Spool:
    """Pending operations for one store, in a local folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _ensure(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise EvidenceError(f"cannot create the evidence spool {self.folder}: {exc.strerror}") from None

    def _new_id(self) -> str:
        return f"{time.time_ns():020d}-{os.getpid()}-{next(_counter):06d}"

    def add(self, op: SpoolOp, data: IO[bytes] | bytes | None = None) -> SpoolOp:
        """Spool `op`; for a put, copy `data` beside it (hashed in the same pass)."""
        self._ensure()
        op = op.model_copy(update={"id": self._new_id()})
        if data is not None:
            partial = self.folder / f"{op.id}.data.part"
            sha = hashlib.sha256()
            size = 0
            try:
                with open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
                    if isinstance(data, bytes | bytearray):
                        sha.update(data)
                        out.write(data)
                        size = len(data)
                    else:
                        while chunk := data.read(CHUNK_SIZE):
                            sha.update(chunk)
                            out.write(chunk)
                            size += len(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(partial, self.data_path(op))
            except OSError as exc:
                partial.unlink(missing_ok=True)
                raise EvidenceError(f"cannot spool evidence to {self.folder}: {exc.strerror}") from None
            op = op.model_copy(update={"sha256": sha.hexdigest(), "size": size})
        self.save(op)
        return op

    def adopt(self, op: SpoolOp, data_file: Path) -> SpoolOp:
        """Spool `op` with an already hashed file of ours (moved, not copied)."""
        self._ensure()
        op = op.model_copy(update={"id": self._new_id()})
        os.replace(data_file, self.data_path(op))
        self.save(op)
        return op

    def save(self, op: SpoolOp) -> None:
        """Write (or rewrite, to record progress) the op's JSON atomically."""
        partial = self.folder / f"{op.id}.json.part"
        with open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as out:
            out.write(op.model_dump_json())
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, self.folder / f"{op.id}.json")
        dir_fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def data_path(self, op: SpoolOp) -> Path:
        return self.folder / f"{op.id}.data"

    def pending(self) -> list[SpoolOp]:
        """Every waiting op, oldest first (unreadable files are skipped and left for a person)."""
        if not self.folder.is_dir():
            return []
        ops = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                ops.append(SpoolOp.model_validate_json(path.read_bytes()))
            except (OSError, ValidationError):
                continue
        return ops

    def has_pending(self) -> bool:
        return self.folder.is_dir() and any(self.folder.glob("*.json"))

    def done(self, op: SpoolOp) -> None:
        (self.folder / f"{op.id}.json").unlink(missing_ok=True)
        self.data_path(op).unlink(missing_ok=True)

    def set_aside(self, op: SpoolOp) -> None:
        """Keep an op that cannot be replayed out of the queue (<op>.json.failed), for a person to look at."""
        path = self.folder / f"{op.id}.json"
        if path.exists():
            os.replace(path, self.folder / f"{op.id}.json.failed")

    def temp_file(self) -> tuple[IO[bytes], Path]:
        """A private temporary file in the spool folder (for streams that cannot be re-read)."""
        self._ensure()
        path = self.folder / f"{self._new_id()}.tmp"
        return open(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600), "w+b"), path

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive use of the spool across processes (one flush at a time)."""
        self._ensure()
        with open(self.folder / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
