"""The evidence store: archived items with their SHA-256 in a per-incident manifest (policy §10).

`open_store(url)` picks the backend from `IRP_EVIDENCE_URL`; `file://` is the embedded default.
Items are written once: the same name with the same content is a no-op, other content under a
taken name gets a numbered name, so nothing archived is ever replaced.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field

from irp.errors import ConfigurationError, EvidenceError
from irp.models import Incident, TimelineEntry, utcnow

__all__ = ["CollectedBy", "EvidenceItem", "EvidenceStore", "LocalEvidenceStore", "open_store"]

CHUNK_SIZE = 8 * 1024 * 1024
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class CollectedBy(BaseModel):
    """Which step of which run collected an item."""

    model_config = ConfigDict(extra="forbid")

    stage: str = ""
    step: str = ""
    action: str = ""
    flow_run_id: str = ""


class EvidenceItem(BaseModel):
    """One manifest line: an archived item and its integrity data."""

    model_config = ConfigDict(extra="forbid")

    name: str
    size: int
    sha256: str
    content_type: str
    collected_by: CollectedBy = Field(default_factory=CollectedBy)
    collected_at: datetime = Field(default_factory=utcnow)
    source_time: str | None = Field(None, description="The source's own timestamp, as it was given.")
    source_system: str = ""
    retention_until: datetime | None = None


def _check_id(incident_id: str) -> str:
    if not _SAFE_ID.match(incident_id):
        raise EvidenceError(f"invalid incident id {incident_id!r}: use letters, digits, '.', '_' and '-'")
    return incident_id


def _check_name(name: str) -> str:
    if not _SAFE_NAME.match(name) or ".." in name.split("/"):
        raise EvidenceError(
            f"invalid evidence name {name!r}: use path segments of letters, digits, '.', '_' and '-'"
        )
    return name


def _numbered(name: str, n: int) -> str:
    stem, dot, ext = name.rpartition(".")
    if not dot or "/" in ext:
        return f"{name}-{n}"
    return f"{stem}-{n}.{ext}"


class EvidenceStore(ABC):
    """What every backend provides."""

    url: str

    @abstractmethod
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
        """Archive `data` (bytes or a binary stream, read in chunks) and list it in the manifest."""

    @abstractmethod
    def manifest(self, incident_id: str) -> list[EvidenceItem]:
        """Every item archived for the incident, in archiving order."""

    @abstractmethod
    @contextmanager
    def open(self, incident_id: str, name: str) -> Iterator[IO[bytes]]:
        """Read an archived item as a stream."""

    @abstractmethod
    def incident_ids(self) -> list[str]:
        """Every incident that has a record or evidence in the store."""

    @abstractmethod
    def save_incident(self, incident: Incident) -> None:
        """Write the incident's current record (the one document that is updated in place)."""

    @abstractmethod
    def load_incident(self, incident_id: str) -> Incident:
        """Read the incident's current record."""

    @abstractmethod
    def append_event(self, incident_id: str, entry: TimelineEntry) -> None:
        """Append a timeline entry from outside the run (e.g. a duplicate alert joining the incident)."""

    @abstractmethod
    def location(self, incident_id: str) -> str:
        """Where the incident's evidence lives, for people to find it."""

    def put_json(self, incident_id: str, name: str, value: Any, **kwargs: Any) -> EvidenceItem:
        """Archive a JSON document."""
        data = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str).encode()
        return self.put(incident_id, name, data, content_type="application/json", **kwargs)


class LocalEvidenceStore(EvidenceStore):
    """Evidence in a local folder: <root>/<incident>/objects/<name>, manifest.jsonl, incident.json."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"file://{root}"
        self._lock = threading.Lock()

    def _dir(self, incident_id: str) -> Path:
        return self.root / _check_id(incident_id)

    @contextmanager
    def _locked(self, incident_id: str) -> Iterator[Path]:
        folder = self._dir(incident_id)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EvidenceError(f"cannot create evidence folder {folder}: {exc.strerror}") from exc
        with self._lock, open(folder / ".lock", "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield folder
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

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
        _check_name(name)
        stream = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
        with self._locked(incident_id) as folder:
            objects = folder / "objects"
            objects.mkdir(exist_ok=True)
            digest, size, tmp_path = _spool(stream, objects)
            try:
                existing = {item.name: item for item in self._read_manifest(folder)}
                final, n = name, 1
                while final in existing:
                    if existing[final].sha256 == digest:
                        return existing[final]
                    n += 1
                    final = _numbered(name, n)
                target = objects / final
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp_path, target)
                os.chmod(target, 0o440)
                item = EvidenceItem(
                    name=final,
                    size=size,
                    sha256=digest,
                    content_type=content_type,
                    collected_by=collected_by or CollectedBy(),
                    source_system=source_system,
                    source_time=source_time,
                )
                _append_line(folder / "manifest.jsonl", item.model_dump_json())
                return item
            finally:
                Path(tmp_path).unlink(missing_ok=True)

    def _read_manifest(self, folder: Path) -> list[EvidenceItem]:
        path = folder / "manifest.jsonl"
        if not path.exists():
            return []
        return [EvidenceItem.model_validate_json(line) for line in path.read_text().splitlines() if line]

    def manifest(self, incident_id: str) -> list[EvidenceItem]:
        return self._read_manifest(self._dir(incident_id))

    @contextmanager
    def open(self, incident_id: str, name: str) -> Iterator[IO[bytes]]:
        path = self._dir(incident_id) / "objects" / _check_name(name)
        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            raise EvidenceError(f"no evidence {name!r} for incident {incident_id} in {self.url}") from None
        with handle:
            yield handle

    def incident_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _SAFE_ID.match(p.name))

    def save_incident(self, incident: Incident) -> None:
        with self._locked(incident.id) as folder:
            tmp = folder / "incident.json.tmp"
            tmp.write_text(incident.model_dump_json(indent=2))
            os.replace(tmp, folder / "incident.json")

    def load_incident(self, incident_id: str) -> Incident:
        folder = self._dir(incident_id)
        try:
            incident = Incident.model_validate_json((folder / "incident.json").read_bytes())
        except FileNotFoundError:
            raise EvidenceError(f"no incident {incident_id} in {self.url}") from None
        events_path = folder / "events.jsonl"
        if events_path.exists():
            events = [TimelineEntry.model_validate_json(line) for line in events_path.read_text().splitlines() if line]
            incident = with_events(incident, events)
        return incident

    def append_event(self, incident_id: str, entry: TimelineEntry) -> None:
        with self._locked(incident_id) as folder:
            _append_line(folder / "events.jsonl", entry.model_dump_json())

    def location(self, incident_id: str) -> str:
        return str(self._dir(incident_id))


def with_events(incident: Incident, events: list[TimelineEntry]) -> Incident:
    """The incident with external timeline entries merged in time order (each entry once)."""
    seen = {(e.at, e.kind, e.message) for e in incident.timeline}
    merged = [*incident.timeline, *(e for e in events if (e.at, e.kind, e.message) not in seen)]
    return incident.model_copy(update={"timeline": sorted(merged, key=lambda e: e.at)})


def _spool(stream: IO[bytes], folder: Path) -> tuple[str, int, str]:
    """Copy `stream` to a temporary file in `folder`, hashing it in the same pass."""
    sha = hashlib.sha256()
    size = 0
    fd, tmp_path = tempfile.mkstemp(dir=folder, prefix=".incoming-")
    with os.fdopen(fd, "wb") as out:
        while chunk := stream.read(CHUNK_SIZE):
            sha.update(chunk)
            out.write(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return sha.hexdigest(), size, tmp_path


def _append_line(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def open_store(url: str) -> EvidenceStore:
    """The evidence store for `url` (file:///abs/path or file://./relative/path)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = Path(parsed.netloc + parsed.path).expanduser()
        return LocalEvidenceStore(path.resolve())
    raise ConfigurationError(f"IRP_EVIDENCE_URL={url!r}: unsupported scheme {parsed.scheme!r}; valid: file://")


def temporary_store() -> tuple[LocalEvidenceStore, Path]:
    """A throw-away local store for dry runs; the caller removes the folder."""
    folder = Path(tempfile.mkdtemp(prefix="irp-dry-run-"))
    return LocalEvidenceStore(folder), folder


def remove_tree(folder: Path) -> None:
    """Remove a dry-run store, including its read-only files."""
    shutil.rmtree(folder, ignore_errors=True)
