"""The embedded evidence store: a local folder per incident (the default, `file://`).

    <root>/<incident>/objects/<name>    the items, read-only once written
    <root>/<incident>/manifest.jsonl    one line per item: size, SHA-256, who collected it, retention
    <root>/<incident>/custody.jsonl     the hash-chained custody log (custody.py)
    <root>/<incident>/incident.json     the incident record, updated in place
    <root>/<incident>/events.jsonl      timeline entries appended from outside the run

Each manifest line, event line and incident.json version has a custody entry with its digest
(chained.py). Every write takes an flock on <incident>/.lock and is fsync'd; a run responding to the
incident holds an flock on <incident>/.run.lock (released by the kernel if its process dies). A plain filesystem
cannot enforce a retention period: it is recorded in the manifest for whoever moves the evidence to
WORM storage, and extended there when the incident's severity rises.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from irp.errors import EvidenceError
from irp.evidence.base import (
    CHUNK_SIZE,
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
from irp.evidence.chained import StoredRecord, content_digest, vouched
from irp.evidence.custody import GENESIS, digest, encode, head_of, seal
from irp.evidence.models import CollectedBy, CustodyEntry, EvidenceItem, IntegrityProblem, RawEntry, StoredObject
from irp.models import Incident, Severity, TimelineEntry

__all__ = ["LocalEvidenceStore", "remove_tree", "temporary_store"]

log = logging.getLogger(__name__)


class LocalEvidenceStore(EvidenceStore):
    """Evidence in a local folder: <root>/<incident>/objects/<name>, manifest.jsonl, custody.jsonl."""

    def __init__(self, root: Path, *, retention_mode: str = "off",
                 retention_days: dict[Any, int] | None = None) -> None:
        self.root = root
        self.url = f"file://{root}"
        self._lock = threading.Lock()
        self._retention_mode = retention_mode
        self._retention_days = retention_days or {}

    def _dir(self, incident_id: str) -> Path:
        return self.root / check_id(incident_id)

    def _made(self, incident_id: str) -> Path:
        folder = self._dir(incident_id)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EvidenceError(f"cannot create evidence folder {folder}: {exc.strerror}") from exc
        return folder

    @contextmanager
    def _locked(self, incident_id: str) -> Iterator[Path]:
        folder = self._made(incident_id)
        with self._lock, _flocked(folder / ".lock"):
            yield folder

    def run_lock(self, incident_id: str, on_wait: Callable[[], None]) -> AbstractContextManager[None]:
        """An flock on <incident>/.run.lock: one per open file, so two runs of one process exclude each other too."""
        return _flocked(self._made(incident_id) / ".run.lock", on_wait)

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
        check_name(name)
        stream = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
        with self._locked(incident_id) as folder:
            objects = folder / "objects"
            objects.mkdir(exist_ok=True)
            digest, size, tmp_path = _copy_hashed(stream, objects)
            try:
                existing = {item.name: item for item in self._read_manifest(folder)}
                final, n = name, 1
                while final in existing:
                    if existing[final].sha256 == digest:
                        return existing[final]
                    n += 1
                    final = numbered(name, n)
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
                    retention_until=retention_until(self._severity(folder), self._retention_mode,
                                                    self._retention_days),
                )
                _append_line(folder / "manifest.jsonl", item.model_dump_json())
                self._append_custody(folder, incident_id, "collected", actor=collector(item.collected_by),
                                     object=final, sha256=digest, details={
                                         "size": size, "content_type": content_type,
                                         "collected_at": item.collected_at.isoformat(),
                                         "collected_by": item.collected_by.model_dump(),
                                         "source_system": source_system, "source_time": source_time})
                self._append_custody(folder, incident_id, "archived", actor=collector(item.collected_by),
                                     object=final, sha256=digest, details={
                                         "location": str(target), "read_only": True,
                                         "retention_until": item.retention_until.isoformat()
                                         if item.retention_until else None,
                                         "manifest": item.model_dump(mode="json")})
                return item
            finally:
                Path(tmp_path).unlink(missing_ok=True)

    def _severity(self, folder: Path) -> Severity | None:
        try:
            return Incident.model_validate_json((folder / "incident.json").read_bytes()).severity
        except (OSError, ValidationError):
            return None

    def _read_manifest(self, folder: Path) -> list[EvidenceItem]:
        path = folder / "manifest.jsonl"
        if not path.exists():
            return []
        return [EvidenceItem.model_validate_json(line) for line in path.read_text().splitlines() if line]

    def manifest(self, incident_id: str) -> list[EvidenceItem]:
        try:
            return self._read_manifest(self._dir(incident_id))
        except ValidationError:
            raise EvidenceError(f"the manifest of {incident_id} in {self.url} is damaged; "
                                f"run irp evidence verify {incident_id}") from None

    @contextmanager
    def _open_raw(self, incident_id: str, name: str) -> Iterator[IO[bytes]]:
        path = self._dir(incident_id) / "objects" / check_name(name)
        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            raise EvidenceError(f"no evidence {name!r} for incident {incident_id} in {self.url}") from None
        with handle:
            yield handle

    def incident_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and is_incident_id(p.name))

    def save_incident(self, incident: Incident) -> None:
        """Write the record and its `record_saved` custody entry (nothing when it is unchanged); a rise in
        severity extends the retention of the objects archived so far."""
        text = incident.model_dump_json(indent=2).encode()
        with self._locked(incident.id) as folder:
            path = folder / "incident.json"
            try:
                before = path.read_bytes()
            except FileNotFoundError:
                before = None
            if before == text:
                return
            tmp = folder / "incident.json.tmp"
            tmp.write_bytes(text)
            os.replace(tmp, path)
            self._append_custody(folder, incident.id, "record_saved", actor=local_actor(),
                                 sha256=digest(json.loads(text)),
                                 details={"status": incident.status.value, "severity": incident.severity.value})
            if before is not None and _severity_of(before) != incident.severity.value:
                try:
                    self._extend_retention(folder, incident.id, incident.severity)
                except (OSError, ValidationError) as exc:  # the record is saved; the response goes on
                    log.error("incident %s: retention of its evidence not extended to severity %s: %s",
                              incident.id, incident.severity.value, exc)

    def _extend_retention(self, folder: Path, incident_id: str, severity: Severity) -> None:
        """Each object's retention_until to at least its archiving time + the severity's period; one custody entry."""
        if self._retention_mode == "off" or not self._retention_days:
            return
        items = self._read_manifest(folder)
        table = {str(getattr(k, "value", k)): v for k, v in self._retention_days.items()}
        period = table.get(severity.value)
        if period is None:
            return
        extended: dict[str, str] = {}
        for n, item in enumerate(items):
            until = (item.collected_at + timedelta(days=period)).replace(microsecond=0)
            if item.retention_until is None or item.retention_until >= until:
                continue
            items[n] = item.model_copy(update={"retention_until": until})
            extended[item.name] = items[n].model_dump(mode="json")["retention_until"]
        if not extended:
            return
        tmp = folder / "manifest.jsonl.tmp"
        tmp.write_bytes("".join(item.model_dump_json() + "\n" for item in items).encode())
        os.replace(tmp, folder / "manifest.jsonl")
        self._append_custody(folder, incident_id, "retention_extended", actor=local_actor(),
                             details={"severity": severity.value, "mode": self._retention_mode, "objects": extended})

    def load_incident(self, incident_id: str) -> Incident:
        folder = self._dir(incident_id)
        try:
            incident = Incident.model_validate_json((folder / "incident.json").read_bytes())
        except FileNotFoundError:
            raise EvidenceError(f"no incident {incident_id} in {self.url}") from None
        stored = self._events_for_verify(incident_id)
        if stored:
            stored = vouched(incident_id, stored, _chain_records(folder / "custody.jsonl"))
        return with_events(incident, [TimelineEntry.model_validate_json(record.text) for record in stored])

    def append_event(self, incident_id: str, entry: TimelineEntry) -> None:
        line = entry.model_dump_json()
        with self._locked(incident_id) as folder:
            _append_line(folder / "events.jsonl", line)
            self._append_custody(folder, incident_id, "event_appended", actor=local_actor(),
                                 sha256=content_digest(line.encode()),
                                 details={"kind": entry.kind, "at": entry.at.isoformat()})

    def location(self, incident_id: str) -> str:
        return str(self._dir(incident_id))

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
        with self._locked(incident_id) as folder:
            return self._append_custody(folder, incident_id, event, actor=actor or local_actor(), object=object,
                                        sha256=sha256, details=details)

    def _append_custody(self, folder: Path, incident_id: str, event: str, **fields: Any) -> CustodyEntry:
        """Append under the incident lock: chain to the last line of custody.jsonl."""
        path = folder / "custody.jsonl"
        head = head_of(_last_line(path)) if path.exists() else None
        if head is None and path.exists() and path.stat().st_size:
            last = _last_line(path) or b""
            head = (_count_lines(path), hashlib.sha256(last).hexdigest())  # a damaged last line: verify reports it
        seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
        record = seal(incident_id, seq, prev, event, **fields)
        _append_line(path, encode(record).decode())
        return CustodyEntry.model_validate(record)

    def _custody_raw(self, incident_id: str) -> list[RawEntry]:
        path = self._dir(incident_id) / "custody.jsonl"
        if not path.exists():
            return []
        with open(path, "rb") as handle:
            return [RawEntry(label=f"custody.jsonl line {n}", text=line.rstrip(b"\n"))
                    for n, line in enumerate(handle, start=1) if line.strip()]

    # ---- verify --------------------------------------------------------------------------------

    def _manifest_for_verify(self, incident_id: str) -> tuple[list[EvidenceItem], list[IntegrityProblem]]:
        path = self._dir(incident_id) / "manifest.jsonl"
        items: list[EvidenceItem] = []
        problems: list[IntegrityProblem] = []
        if not path.exists():
            return items, problems
        lines: dict[str, int] = {}
        for n, line in enumerate(path.read_bytes().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = EvidenceItem.model_validate_json(line)
            except ValidationError:
                problems.append(IntegrityProblem(kind="altered", subject=f"manifest.jsonl line {n}",
                                                 detail="not a valid manifest entry"))
                continue
            if item.name in lines:
                problems.append(IntegrityProblem(kind="unexpected", subject=f"manifest.jsonl line {n}",
                                                 detail=f"duplicated: lists {item.name} again (line {lines[item.name]})"))
                continue
            lines[item.name] = n
            items.append(item)
        return items, problems

    def _events_for_verify(self, incident_id: str) -> list[StoredRecord]:
        path = self._dir(incident_id) / "events.jsonl"
        if not path.exists():
            return []
        return [StoredRecord(label=f"events.jsonl line {n}", key=None, text=line)
                for n, line in enumerate(path.read_bytes().splitlines(), start=1) if line.strip()]

    def _record_for_verify(self, incident_id: str) -> bytes | None:
        try:
            return (self._dir(incident_id) / "incident.json").read_bytes()
        except FileNotFoundError:
            return None

    def _strays(self, incident_id: str) -> list[str]:
        folder = self._dir(incident_id)
        if not folder.is_dir():
            return []
        found = (path.relative_to(folder) for path in folder.rglob("*") if not path.is_dir())
        return sorted(p.as_posix() for p in found if p.parts[0] != "objects" and p.as_posix() not in _LAYOUT)

    def _inventory(self, incident_id: str) -> dict[str, StoredObject]:
        objects = self._dir(incident_id) / "objects"
        if not objects.is_dir():
            return {}
        found = {}
        for path in objects.rglob("*"):
            if path.is_file() and not path.name.startswith(".incoming-"):
                found[path.relative_to(objects).as_posix()] = StoredObject(size=path.stat().st_size)
        return found

    def _rehash(self, incident_id: str, item: EvidenceItem, stored: StoredObject) -> tuple[str, int, list[IntegrityProblem]]:
        with self._open_raw(incident_id, item.name) as handle:
            sha, size = hash_stream(handle)
        return sha, size, []


_LAYOUT = {"manifest.jsonl", "custody.jsonl", "incident.json", "events.jsonl", ".lock", ".run.lock"}


@contextmanager
def _flocked(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """An exclusive flock on `path` while inside; `on_wait` is called first when another holder has it."""
    try:
        handle = open(path, "a")  # noqa: SIM115 (held across the yield)
    except OSError as exc:
        raise EvidenceError(f"cannot open the lock file {path}: {exc.strerror}") from exc
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (fcntl.LOCK_NB if on_wait else 0))
        except BlockingIOError:
            on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _severity_of(record: bytes) -> str | None:
    try:
        return json.loads(record).get("severity")
    except (ValueError, AttributeError):
        return None


def _chain_records(path: Path) -> list[dict[str, Any]]:
    """The custody log's entries as plain dicts (the read side of events: chained.vouched); bad lines left out."""
    records = []
    try:
        with open(path, "rb") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    records.append(record)
    except FileNotFoundError:
        pass
    return records


def _copy_hashed(stream: IO[bytes], folder: Path) -> tuple[str, int, str]:
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


def _last_line(path: Path) -> bytes | None:
    """The last non-empty line of a file, read from its end."""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        end = handle.tell()
        block = b""
        position = end
        while position > 0:
            step = min(4096, position)
            position -= step
            handle.seek(position)
            block = handle.read(step) + block
            lines = [line for line in block.split(b"\n") if line.strip()]
            if len(lines) > 1 or (lines and position == 0):
                return lines[-1]
    return None


def _count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())


def temporary_store() -> tuple[LocalEvidenceStore, Path]:
    """A throw-away local store for dry runs; the caller removes the folder."""
    folder = Path(tempfile.mkdtemp(prefix="irp-dry-run-"))
    return LocalEvidenceStore(folder), folder


def remove_tree(folder: Path) -> None:
    """Remove a dry-run store, including its read-only files."""
    shutil.rmtree(folder, ignore_errors=True)
