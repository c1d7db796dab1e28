"""What every evidence backend provides: the interface, verification and the tar export.

An incident's evidence is three things kept together: the objects, a manifest listing each object
with its SHA-256, and a custody log (custody.py) recording who collected, archived, read, exported
and verified what, hash-chained so a removed, reordered or altered entry is detectable.
"""

from __future__ import annotations

import getpass
import hashlib
import io
import json
import os
import re
import socket
import tarfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from irp.errors import EvidenceError
from irp.evidence.chained import StoredRecord, chain_vouches, check_events, check_record
from irp.evidence.custody import check_chain, cross_check, parse_entries
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
from irp.lifecycle import fold
from irp.models import Incident, Severity, TimelineEntry, utcnow

CHUNK_SIZE = 8 * 1024 * 1024
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_id(incident_id: str) -> str:
    if not _SAFE_ID.match(incident_id or ""):
        raise EvidenceError(f"invalid incident id {incident_id!r}: use letters, digits, '.', '_' and '-'")
    return incident_id


def check_name(name: str) -> str:
    if not _SAFE_NAME.match(name or "") or ".." in name.split("/"):
        raise EvidenceError(
            f"invalid evidence name {name!r}: use path segments of letters, digits, '.', '_' and '-'"
        )
    return name


def is_incident_id(text: str) -> bool:
    return bool(_SAFE_ID.match(text))


def numbered(name: str, n: int) -> str:
    """`name` with a number before its extension: logs/a.json -> logs/a-2.json."""
    stem, dot, ext = name.rpartition(".")
    if not dot or "/" in ext or not stem or stem.endswith("/"):
        return f"{name}-{n}"
    return f"{stem}-{n}.{ext}"


def local_actor() -> str:
    """Who acts from this process: user@host."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name in some containers
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def collector(collected_by: CollectedBy | None) -> str:
    """The custody actor for a collection: the step that did it, or this process."""
    if collected_by and collected_by.step:
        run = collected_by.flow_run_id or "-"
        return f"flow run {run}, step {collected_by.stage}.{collected_by.step} ({collected_by.action})"
    return f"irp engine ({local_actor()})"


def retention_until(severity: Severity | None, mode: str, days: dict[Any, int]) -> datetime | None:
    """When an object archived now may be deleted: today + the severity's days (the longest when unknown)."""
    if mode == "off" or not days:
        return None
    table = {str(k.value if isinstance(k, Severity) else k): v for k, v in days.items()}
    period = table.get(severity.value) if severity else None
    if period is None:
        period = max(table.values())
    return (utcnow() + timedelta(days=period)).replace(microsecond=0)


def with_events(incident: Incident, events: list[TimelineEntry]) -> Incident:
    """The incident with external timeline entries merged in time order (each entry once), and the
    people's decisions among them applied (irp/lifecycle.py)."""
    seen = {(e.at, e.kind, e.message) for e in incident.timeline}
    merged = [*incident.timeline, *(e for e in events if (e.at, e.kind, e.message) not in seen)]
    return fold(incident.model_copy(update={"timeline": sorted(merged, key=lambda e: e.at)}))


def manifest_lines(items: list[EvidenceItem]) -> bytes:
    return "".join(item.model_dump_json() + "\n" for item in items).encode()


class EvidenceStore(ABC):
    """What every backend provides."""

    url: str
    anchor: Any = None  # the configured store's AnchorLog (anchors.py), set by open_store; None: not anchored

    # ---- writing -----------------------------------------------------------------------------

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
        """Archive `data` (bytes or a binary stream, read in chunks) and list it in the manifest.

        The same name with the same content is a no-op; other content under a taken name gets a
        numbered name, so nothing archived is ever replaced. Records `collected` and `archived`
        in the custody log.
        """

    def put_json(self, incident_id: str, name: str, value: Any, **kwargs: Any) -> EvidenceItem:
        """Archive a JSON document."""
        data = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str).encode()
        return self.put(incident_id, name, data, content_type="application/json", **kwargs)

    @abstractmethod
    def save_incident(self, incident: Incident) -> None:
        """Write the incident's current record (the one document that is updated in place)."""

    @abstractmethod
    def append_event(self, incident_id: str, entry: TimelineEntry) -> None:
        """Append a timeline entry from outside the run (e.g. a duplicate alert joining the incident)."""

    @abstractmethod
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
        """Append one entry to the incident's custody log, chained to the one before."""

    def flush(self) -> FlushReport:
        """Upload what was spooled locally while the store was unreachable (no-op for local stores)."""
        return FlushReport()

    def waiting(self, incident_id: str | None = None) -> int:
        """How many writes (of one incident, or all) wait in the local spool for the store."""
        return 0

    def run_lock(self, incident_id: str, on_wait: Callable[[], None]) -> AbstractContextManager[None] | None:
        """A lock on the incident that every worker reaching this store shares, held while a run responds to it
        (`on_wait` is called when another run holds it); None when the store has none (the engine then takes
        the incident's Prefect concurrency limit)."""
        return None

    # ---- reading -----------------------------------------------------------------------------

    @abstractmethod
    def manifest(self, incident_id: str) -> list[EvidenceItem]:
        """Every item archived for the incident, in archiving order."""

    @contextmanager
    def open(self, incident_id: str, name: str, *, actor: str | None = None) -> Iterator[IO[bytes]]:
        """Read an archived item as a stream; the read is recorded in the custody log (`accessed`)."""
        check_id(incident_id)
        check_name(name)
        with self._open_raw(incident_id, name) as handle:
            item = next((i for i in self.manifest(incident_id) if i.name == name), None)
            self.record_custody(incident_id, "accessed", actor=actor or local_actor(), object=name,
                                sha256=item.sha256 if item else None)
            yield handle

    @abstractmethod
    def incident_ids(self) -> list[str]:
        """Every incident that has a record or evidence in the store."""

    @abstractmethod
    def load_incident(self, incident_id: str) -> Incident:
        """Read the incident's current record."""

    @abstractmethod
    def location(self, incident_id: str) -> str:
        """Where the incident's evidence lives, for people to find it."""

    def custody(self, incident_id: str) -> list[CustodyEntry]:
        """The incident's custody log as stored (entries that do not parse are left out; see verify)."""
        return parse_entries(self._custody_raw(check_id(incident_id)))

    # ---- checking and handing over -----------------------------------------------------------

    def verify(self, incident_id: str, *, actor: str | None = None) -> VerifyReport:
        """`check`, then record `verified`; the report's chain head is that entry (what an anchor records)."""
        report = self.check(incident_id)
        entry = self.record_custody(incident_id, "verified", actor=actor or local_actor(), details={
            "intact": report.intact, "objects": report.objects,
            "problems": [str(p) for p in report.problems][:50],
        })
        return report.model_copy(update={"head_seq": entry.seq, "head_hash": entry.hash})

    def check(self, incident_id: str) -> VerifyReport:
        """Re-hash every object, compare each record beside the objects with the custody chain; read-only.

        Objects ↔ manifest (SHA-256, size); manifest entries ↔ their `archived` entries (every field);
        events ↔ `event_appended` entries; incident.json ↔ the last `record_saved` entry; the chain
        itself (custody.check_chain); files in the incident's folder or prefix that belong to none of
        these. Chain truncation or a consistent rewrite needs a checkpoint outside the store to show:
        the report carries the chain head (last entry's seq and hash) to compare with one.
        """
        check_id(incident_id)
        items, problems = self._manifest_for_verify(incident_id)
        stored = self._inventory(incident_id)
        raws = self._custody_raw(incident_id)
        events = self._events_for_verify(incident_id)
        record = self._record_for_verify(incident_id)
        if not items and not stored and not raws and not problems and not events and record is None:
            raise EvidenceError(f"no evidence for incident {incident_id} in {self.url}")
        listed = set()
        for item in items:
            listed.add(item.name)
            found = stored.get(item.name)
            if found is None or found.deleted:
                detail = found.note if found and found.note else "listed in the manifest but not in the store"
                problems.append(IntegrityProblem(kind="missing", subject=item.name, detail=detail))
                continue
            sha, size, extra = self._rehash(incident_id, item, found)
            problem_count = len(problems)
            if sha != item.sha256 or size != item.size:
                detail = (f"content differs from the manifest: sha256 {sha} ({size} bytes), "
                          f"manifest {item.sha256} ({item.size} bytes)")
                if found.note:
                    detail += f"; {found.note}"
                problems.append(IntegrityProblem(kind="altered", subject=item.name, detail=detail))
            elif found.note or (item.version_id and found.version_id and found.version_id != item.version_id):
                detail = found.note or (f"overwritten out of band: current version {found.version_id}, "
                                        f"archived version {item.version_id}")
                problems.append(IntegrityProblem(kind="altered", subject=item.name, detail=detail))
            if len(problems) == problem_count:  # an altered object's other findings are about the intruder's copy
                problems.extend(extra)
        for name in sorted(set(stored) - listed):
            if not stored[name].deleted:
                problems.append(IntegrityProblem(kind="unexpected", subject=name, detail="in the store but not in the manifest"))
        for name in self._strays(incident_id):
            problems.append(IntegrityProblem(kind="unexpected", subject=name,
                                             detail="not part of the evidence layout (planted beside the evidence)"))
        entries = parse_entries(raws)  # broken entries are named by check_chain
        problems.extend(check_chain(incident_id, raws)[1])
        problems.extend(cross_check(items, entries))
        vouching = chain_vouches(entries)
        problems.extend(check_events(events, entries, vouching))
        problems.extend(check_record(record, entries, vouching))
        if self.anchor is not None:  # truncated or rewritten since its head was anchored (anchors.py)
            problems.extend(self.anchor.problems(self, [incident_id]).get(incident_id, []))
        head = entries[-1] if entries else None
        return VerifyReport(incident_id=incident_id, store=self.url, objects=len(items),
                            custody_entries=len(raws), problems=problems,
                            head_seq=head.seq if head else None, head_hash=head.hash if head else None)

    def export_urls(self, incident_id: str, *, expires_in: int | None = None,
                    actor: str | None = None) -> list[ExportedUrl]:
        """Presigned download links, one per object, each recorded in the custody log (`exported`)."""
        raise EvidenceError(f"{self.url}: presigned URLs need an s3:// evidence store; export with --tar instead")

    def export_tar(self, incident_id: str, path: Path, *, actor: str | None = None) -> TarExport:
        """Write a tar of the objects, manifest.jsonl and custody.jsonl; re-hash every object on the way.

        Stops (and removes the partial file) when an object differs from its manifest entry.
        The export is recorded in the custody log with the tar's SHA-256.
        """
        check_id(incident_id)
        items = self.manifest(incident_id)
        raws = self._custody_raw(incident_id)
        if not items and not raws:
            raise EvidenceError(f"no evidence for incident {incident_id} in {self.url}")
        path = Path(path)
        partial = path.with_name(path.name + ".part")
        custody_text = b"".join((raw.text or b"").rstrip(b"\n") + b"\n" for raw in raws if raw.text is not None)
        try:
            with open(partial, "wb") as raw_out:
                out = _HashingWriter(raw_out)
                with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    _add_bytes(tar, f"{incident_id}/manifest.jsonl", manifest_lines(items))
                    _add_bytes(tar, f"{incident_id}/custody.jsonl", custody_text)
                    for name, data in (self.anchor.members(self, incident_id) if self.anchor else []):  # checkpoints
                        _add_bytes(tar, f"{incident_id}/{name}", data)
                    for item in items:
                        with self._open_raw(incident_id, item.name) as body:
                            info = tarfile.TarInfo(f"{incident_id}/objects/{item.name}")
                            info.size = item.size
                            info.mtime = int(item.collected_at.timestamp())
                            info.mode = 0o440
                            reader = _HashingReader(body)
                            try:
                                tar.addfile(info, reader)
                                reader.drain()
                            except (OSError, tarfile.TarError):
                                raise EvidenceError(
                                    f"export of {incident_id} stopped: {item.name} is shorter than its manifest "
                                    f"size; run irp evidence verify {incident_id}") from None
                            if reader.sha.hexdigest() != item.sha256 or reader.size != item.size:
                                raise EvidenceError(f"export of {incident_id} stopped: {item.name} differs from its "
                                                    f"manifest entry; run irp evidence verify {incident_id}")
                raw_out.flush()
                os.fsync(raw_out.fileno())
            os.replace(partial, path)
        except OSError as exc:
            raise EvidenceError(f"cannot write {path}: {exc.strerror or exc}") from None
        finally:
            partial.unlink(missing_ok=True)
        result = TarExport(path=path, objects=len(items), size=out.size, sha256=out.sha.hexdigest())
        self.record_custody(incident_id, "exported", actor=actor or local_actor(), sha256=result.sha256, details={
            "method": "tar", "file": str(path.resolve()), "size": result.size, "objects": result.objects,
        })
        return result

    # ---- what each backend implements for the above --------------------------------------------

    @abstractmethod
    @contextmanager
    def _open_raw(self, incident_id: str, name: str) -> Iterator[IO[bytes]]:
        """The archived item as a stream, without a custody entry."""

    @abstractmethod
    def _custody_raw(self, incident_id: str) -> list[RawEntry]:
        """The custody log as stored, in order, read afresh."""

    @abstractmethod
    def _manifest_for_verify(self, incident_id: str) -> tuple[list[EvidenceItem], list[IntegrityProblem]]:
        """The manifest read afresh, and any problem with the manifest itself."""

    @abstractmethod
    def _inventory(self, incident_id: str) -> dict[str, StoredObject]:
        """Every object the backend holds for the incident, by name."""

    @abstractmethod
    def _events_for_verify(self, incident_id: str) -> list[StoredRecord]:
        """The incident's timeline events as stored (events.jsonl lines, or events/ objects), in order."""

    @abstractmethod
    def _record_for_verify(self, incident_id: str) -> bytes | None:
        """incident.json as stored, None when there is none."""

    @abstractmethod
    def _strays(self, incident_id: str) -> list[str]:
        """Files in the incident's folder or prefix outside the layout (objects/ is `_inventory`'s)."""

    @abstractmethod
    def _rehash(self, incident_id: str, item: EvidenceItem, stored: StoredObject) -> tuple[str, int, list[IntegrityProblem]]:
        """SHA-256 and size of what is stored under `item.name` now, plus backend-specific problems."""


def hash_stream(stream: IO[bytes]) -> tuple[str, int]:
    """SHA-256 and size of a stream, read in chunks."""
    sha = hashlib.sha256()
    size = 0
    while chunk := stream.read(1024 * 1024):
        sha.update(chunk)
        size += len(chunk)
    return sha.hexdigest(), size


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o440
    tar.addfile(info, io.BytesIO(data))


class _HashingWriter(io.RawIOBase):
    """A write-only file that hashes what goes through it."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target = target
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self.sha.update(data)
        self.size += len(data)
        return self.target.write(data)


class _HashingReader:
    """Reads from `source`, hashing what it hands out."""

    def __init__(self, source: IO[bytes]) -> None:
        self.source = source
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.source.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        """Hash what the tar did not read (an object longer than its manifest size)."""
        while self.read(1024 * 1024):
            pass
