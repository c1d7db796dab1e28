"""Checkpoints: every incident's chain head, written outside the store to a write-once place (IRP_EVIDENCE_ANCHOR_URL).

A custody chain (custody.py) proves order only to someone who trusts its head: an insider who can write
the store can truncate it, or rewrite an entry and every later hash. A checkpoint lists each incident
of the store with its head (last entry's seq and hash), links to the checkpoint before it (`prev`) and
is hashed over its RFC 8785 canonical JSON; with IRP_TSA_URL its hash is timestamped (timestamps.py).
`verify` compares the store with the latest checkpoint: a chain shorter than anchored, an entry that
differs from its anchored hash and an anchored incident gone from the store are each named.

    file:///path/anchors.jsonl   one checkpoint per line, appended under a file lock (the embedded default:
                                 anchors.jsonl beside a local store's folder)
    s3://bucket/prefix           one object per checkpoint, Object Lock COMPLIANCE, own endpoint and keys

Checkpoints are written at each stage end (irp/engine/respond.py), every IRP_EVIDENCE_ANCHOR_INTERVAL_SECONDS
by `irp worker`, before a tar export, and by `irp evidence anchor`. A failure to anchor is logged and
retried next time; it never stops a response.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import logging
import os
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import rfc8785
from pydantic import BaseModel, Field, ValidationError

from irp.errors import ConfigurationError, EvidenceError, IrpError
from irp.evidence.custody import GENESIS
from irp.evidence.models import CustodyEntry, IntegrityProblem
from irp.models import utcnow
from irp.settings import Settings, get_settings

if TYPE_CHECKING:
    from cryptography import x509

    from irp.evidence.base import EvidenceStore

__all__ = [
    "AnchorLog",
    "Checkpoint",
    "Head",
    "anchor_problems",
    "bundle_members",
    "check_anchor",
    "checkpoint_quietly",
    "compare_heads",
    "open_anchor",
    "read_checkpoints",
    "start_periodic",
    "write_checkpoint",
]

log = logging.getLogger(__name__)
CHECKPOINTS = "anchors/checkpoints.jsonl"  # in a tar export (bundle.py)
CERTIFICATES = "anchors/tsa-certificates.pem"
S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")  # valid names, for this and IRP_EVIDENCE_URL
S3_PREFIX = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


class Head(BaseModel):
    """An incident's chain head: its last custody entry's seq and hash."""

    seq: int
    hash: str


class Checkpoint(BaseModel):
    """One checkpoint as stored; `hash` covers everything but itself and `timestamp`."""

    number: int = Field(..., ge=1)
    at: datetime
    store: str = Field(..., description="The evidence store whose heads are listed.")
    prev: str = Field(..., description="Hash of the checkpoint before it; zeros for the first.")
    heads: dict[str, Head]
    hash: str
    timestamp: str | None = Field(None, description="The TSA's TimeStampResp over the body (DER, base64).")
    label: str = Field("", exclude=True, description="Where it is stored (line or key), for messages.")

    def body(self) -> bytes:
        """The RFC 8785 canonical JSON the hash (and the TSA's imprint) is computed over."""
        return rfc8785.dumps(self.model_dump(mode="json", exclude={"hash", "timestamp", "label"}))

    def token(self) -> bytes | None:
        return base64.b64decode(self.timestamp) if self.timestamp else None


def _seal(number: int, store: str, prev: str, heads: dict[str, Head]) -> Checkpoint:
    checkpoint = Checkpoint(number=number, at=utcnow().replace(microsecond=0), store=store, prev=prev,
                            heads=heads, hash="")
    checkpoint.hash = hashlib.sha256(checkpoint.body()).hexdigest()
    return checkpoint


# ---- where checkpoints are kept ---------------------------------------------------------------------


class AnchorLog(ABC):
    """A write-once sequence of checkpoints."""

    url: str

    @abstractmethod
    def read(self) -> list[tuple[str, bytes]]:
        """Every stored checkpoint in order, as (label, bytes)."""

    @abstractmethod
    def append(self, checkpoint: Checkpoint) -> None:
        """Store one more checkpoint; never replaces one."""

    def last(self) -> tuple[str, bytes] | None:
        """The last stored checkpoint, as (label, bytes): what a stage end chains onto. Its backends read only it,
        not the whole log (which grows with every stage end of every incident)."""
        stored = self.read()
        return stored[-1] if stored else None

    def locked(self) -> Any:
        """Held while the last checkpoint is read and the next one appended."""
        return nullcontext()

    def problems(self, store: EvidenceStore, incident_ids: list[str] | None) -> dict[str, list[IntegrityProblem]]:
        """What the anchor shows per incident (EvidenceStore.verify, irp audit verify): see anchor_problems."""
        return _problems(self, store, incident_ids)

    def members(self, store: EvidenceStore, incident_id: str) -> list[tuple[str, bytes]]:
        """The files a tar export adds (EvidenceStore.export_tar): see bundle_members."""
        return _members(self, store, incident_id)


class FileAnchorLog(AnchorLog):
    """Checkpoints as lines of a local file, only ever appended (O_APPEND, fsync)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"file://{path}"
        self._thread_lock = threading.Lock()

    def read(self) -> list[tuple[str, bytes]]:
        try:
            lines = self.path.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise EvidenceError(f"cannot read the anchor file {self.path}: {exc.strerror or exc}") from None
        return [(f"{self.path.name} line {n}", line) for n, line in enumerate(lines, 1) if line.strip()]

    def last(self) -> tuple[str, bytes] | None:
        try:
            with open(self.path, "rb") as handle:
                end = handle.seek(0, os.SEEK_END)
                tail, start = b"", end
                while start > 0:  # back a block at a time until the last line is whole
                    start = max(0, start - 65536)
                    handle.seek(start)
                    tail = handle.read(end - start)
                    if tail.rstrip().count(b"\n") >= 1:
                        break
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise EvidenceError(f"cannot read the anchor file {self.path}: {exc.strerror or exc}") from None
        lines = [line for line in tail.splitlines() if line.strip()]
        return (f"{self.path.name}, last line", lines[-1]) if lines else None

    def append(self, checkpoint: Checkpoint) -> None:
        line = rfc8785.dumps(checkpoint.model_dump(mode="json", exclude={"label"})) + b"\n"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise EvidenceError(f"cannot append to the anchor file {self.path}: {exc.strerror or exc}") from None

    @contextmanager
    def locked(self) -> Iterator[None]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path.with_name(self.path.name + ".lock"), "a")
        except OSError as exc:
            raise EvidenceError(f"cannot lock the anchor file {self.path}: {exc.strerror or exc}") from None
        with self._thread_lock, handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield


class S3AnchorLog(AnchorLog):
    """One object per checkpoint, `<prefix>/<number>.json`, locked in COMPLIANCE mode; refused without Object Lock."""

    def __init__(self, bucket: str, prefix: str, settings: Settings) -> None:
        from irp.aws import s3_client
        from irp.evidence.s3.bucket import Bucket

        secret = settings.evidence_anchor_secret_access_key
        self.bucket = Bucket(bucket, lambda: s3_client(settings.evidence_anchor_endpoint_url,
                                                       settings.evidence_anchor_access_key_id,
                                                       secret.get_secret_value() if secret else ""))
        self.prefix = f"{prefix}/" if prefix else ""
        self.url = f"s3://{bucket}/{prefix}".rstrip("/")
        self.retention_days = settings.evidence_anchor_retention_days
        self._checked = False

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """The bucket's errors, worded for the anchor (its messages otherwise speak of the evidence store)."""
        from irp.evidence.s3.bucket import KeyNotFound, KeyTaken, StoreUnavailable

        try:
            yield
        except KeyTaken:
            raise EvidenceError(f"{doing} in {self.url}: another process wrote that checkpoint meanwhile; "
                                "the next checkpoint follows it") from None
        except (StoreUnavailable, KeyNotFound) as exc:
            raise EvidenceError(f"{doing} in {self.url} failed: {exc}") from None
        except IrpError as exc:
            raise type(exc)(f"anchor {self.url} (IRP_EVIDENCE_ANCHOR_URL): {exc}") from None

    def check(self) -> None:
        """Refuse a bucket without Object Lock: its checkpoints could be deleted by whoever holds its keys."""
        with self._errors("reading the Object Lock configuration"):
            enabled = self.bucket.object_lock_enabled()
        if not enabled:
            raise ConfigurationError(
                f"IRP_EVIDENCE_ANCHOR_URL={self.url}: bucket {self.bucket.name!r} has no Object Lock; anchors need a "
                "write-once bucket (create it with Object Lock enabled; checkpoints are kept in COMPLIANCE mode)")
        self._checked = True

    def read(self) -> list[tuple[str, bytes]]:
        if not self._checked:
            self.check()
        with self._errors("reading the checkpoints"):
            return [(k, self.bucket.get_bytes(k)) for k in self._keys()]

    def last(self) -> tuple[str, bytes] | None:
        if not self._checked:
            self.check()
        with self._errors("reading the last checkpoint"):
            keys = self._keys()
            return (keys[-1], self.bucket.get_bytes(keys[-1])) if keys else None

    def _keys(self) -> list[str]:
        """The checkpoints' keys in order (their numbers are zero-padded)."""
        return sorted(k for k in self.bucket.keys(self.prefix) if k.endswith(".json"))

    def append(self, checkpoint: Checkpoint) -> None:
        if not self._checked:
            self.check()
        key = f"{self.prefix}{checkpoint.number:012d}.json"
        until = (utcnow() + timedelta(days=self.retention_days)).replace(microsecond=0)
        with self._errors(f"writing checkpoint {checkpoint.number}"):
            self.bucket.put_bytes(key, rfc8785.dumps(checkpoint.model_dump(mode="json", exclude={"label"})),
                                  "application/json", ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until)


def open_anchor(store_url: str, settings: Settings) -> AnchorLog | None:
    """The anchor of the configured store at `store_url` (open_store sets it as `store.anchor`); None when none is
    configured. Parses the URL only: nothing is read or written until used."""
    url = settings.evidence_anchor_url.strip()
    if not url:
        if not store_url.startswith("file://"):
            return None
        return FileAnchorLog(Path(store_url.removeprefix("file://")).parent / "anchors.jsonl")
    parsed = urlparse(url)
    if parsed.scheme in ("file", ""):
        return FileAnchorLog(Path(parsed.netloc + parsed.path if parsed.scheme else url).expanduser().resolve())
    if parsed.scheme == "s3":
        bucket, prefix = parsed.netloc, parsed.path.strip("/")
        if not S3_BUCKET.match(bucket) or (prefix and not S3_PREFIX.match(prefix)):
            raise ConfigurationError(f"IRP_EVIDENCE_ANCHOR_URL={url!r}: not a valid s3://bucket/prefix (bucket: 3-63 "
                                     "lowercase letters, digits, '.', '-'; prefix: segments of letters, digits, '.', '_', '-')")
        return S3AnchorLog(bucket, prefix, settings)
    raise ConfigurationError(f"IRP_EVIDENCE_ANCHOR_URL={url!r}: unsupported scheme {parsed.scheme!r}; "
                             "valid: file://, s3://")


# ---- reading and checking ------------------------------------------------------------------------


def read_checkpoints(anchor: AnchorLog, certificates: list[x509.Certificate] | None = None,
                     ) -> tuple[list[Checkpoint], list[IntegrityProblem]]:
    """The sound checkpoints, and one problem per checkpoint edited, removed, reordered or badly timestamped."""
    from irp.evidence.timestamps import TimestampError, verify_timestamp

    sound: list[Checkpoint] = []
    problems: list[IntegrityProblem] = []
    prev, expected = GENESIS, 1
    for label, data in anchor.read():
        subject = f"anchor {label}"
        try:
            checkpoint = Checkpoint.model_validate({**json.loads(data), "label": label})
        except (ValueError, ValidationError):
            problems.append(IntegrityProblem(kind="broken", subject=subject, detail="not a valid checkpoint"))
            prev = ""
            continue
        reasons = []
        if hashlib.sha256(checkpoint.body()).hexdigest() != checkpoint.hash:
            reasons.append(f"checkpoint {checkpoint.number} altered: its content does not match its hash")
        if checkpoint.number != expected:
            reasons.append(f"checkpoint {checkpoint.number} where {expected} was expected (a checkpoint was removed)")
        elif prev and checkpoint.prev != prev:
            reasons.append(f"checkpoint {checkpoint.number} does not link to the one before it (removed or edited)")
        if certificates and checkpoint.timestamp and not reasons:
            try:
                verify_timestamp(checkpoint.token() or b"", checkpoint.body(), certificates)
            except TimestampError as exc:
                reasons.append(f"checkpoint {checkpoint.number}: {exc}")
        if reasons:
            problems.append(IntegrityProblem(kind="broken", subject=subject, detail="; ".join(reasons)))
        else:
            sound.append(checkpoint)
        prev, expected = checkpoint.hash, checkpoint.number + 1
    return sound, problems


def compare_heads(incident_id: str, entries: list[CustodyEntry], checkpoint: Checkpoint) -> list[IntegrityProblem]:
    """The incident's chain against its head in `checkpoint`: truncated, or rewritten at or before the anchored seq."""
    head = checkpoint.heads.get(incident_id)
    if head is None:
        return []
    where = f"anchored in checkpoint {checkpoint.number} at {checkpoint.at:%Y-%m-%d %H:%M:%S} UTC"
    last = max((e.seq for e in entries), default=0)
    if last < head.seq:
        return [IntegrityProblem(kind="missing", subject=f"custody of {incident_id}", detail=(
            f"chain truncated: it ends at entry {last} but entry {head.seq} was {where}"))]
    at_seq = next((e for e in entries if e.seq == head.seq), None)
    if at_seq is None or at_seq.hash != head.hash:
        found = f"hash {at_seq.hash[:16]}…" if at_seq else "no such entry"
        return [IntegrityProblem(kind="altered", subject=f"custody of {incident_id}", detail=(
            f"chain rewritten: entry {head.seq} has {found}, {where} with hash {head.hash[:16]}…"))]
    return []


def _latest(checkpoints: list[Checkpoint], store_url: str) -> Checkpoint | None:
    return next((c for c in reversed(checkpoints) if c.store == store_url), None)


def anchor_problems(store: EvidenceStore, incident_ids: list[str] | None) -> dict[str, list[IntegrityProblem]]:
    """Per incident, what the anchor shows (the anchor's own problems included); incidents anchored but gone from
    the store appear with a `missing` problem (all of them, or those of `incident_ids`). Empty: no anchor."""
    return store.anchor.problems(store, incident_ids) if store.anchor is not None else {}


def _problems(anchor: AnchorLog, store: EvidenceStore, incident_ids: list[str] | None
              ) -> dict[str, list[IntegrityProblem]]:
    checkpoints, own = read_checkpoints(anchor, _certificates())
    latest = _latest(checkpoints, store.url)
    present = set(store.incident_ids())
    wanted = incident_ids if incident_ids is not None else sorted(present | set(latest.heads if latest else ()))
    found: dict[str, list[IntegrityProblem]] = {}
    for incident_id in wanted:
        problems = list(own)
        if latest and incident_id in latest.heads:
            if incident_id not in present:
                problems.append(IntegrityProblem(kind="missing", subject=incident_id, detail=(
                    f"incident deleted from the store: its chain (entry {latest.heads[incident_id].seq}) was anchored in "
                    f"checkpoint {latest.number} at {latest.at:%Y-%m-%d %H:%M:%S} UTC ({anchor.url})")))
            else:
                problems.extend(compare_heads(incident_id, store.custody(incident_id), latest))
        found[incident_id] = problems
    return found


def bundle_members(store: EvidenceStore, incident_id: str) -> list[tuple[str, bytes]]:
    """The anchor files a tar export adds for `incident_id`: every checkpoint listing it (a fresh one written first,
    so the export's head is anchored) and the TSA certificates; none without an anchor."""
    return store.anchor.members(store, incident_id) if store.anchor is not None else []


def _members(anchor: AnchorLog, store: EvidenceStore, incident_id: str) -> list[tuple[str, bytes]]:
    checkpoint_quietly(store, incident_id)
    checkpoints, _ = read_checkpoints(anchor)
    covering: list[Checkpoint] = []  # each head of the incident once, by its first checkpoint (with a token if any)
    for c in checkpoints:
        if c.store != store.url or incident_id not in c.heads:
            continue
        if not covering or covering[-1].heads[incident_id] != c.heads[incident_id]:
            covering.append(c)
        elif c.timestamp and not covering[-1].timestamp:
            covering[-1] = c
    members = [(CHECKPOINTS, b"".join(c.model_dump_json(exclude={"label"}).encode() + b"\n" for c in covering))]
    pem = get_settings().tsa_certificates
    if pem is not None:
        try:
            members.append((CERTIFICATES, Path(pem).read_bytes()))
        except OSError as exc:
            raise ConfigurationError(f"IRP_TSA_CERTIFICATES={pem}: {exc.strerror or exc}") from None
    return members


def _certificates() -> list[x509.Certificate] | None:
    path = get_settings().tsa_certificates
    if path is None:
        return None
    from irp.evidence.timestamps import load_certificates

    return load_certificates(path)


# ---- writing -------------------------------------------------------------------------------------------


def write_checkpoint(store: EvidenceStore, *, incident_ids: list[str] | None = None,
                     always: bool = False) -> Checkpoint | None:
    """Anchor the chain heads now: of every incident of the store, or of `incident_ids` only (a stage end), the
    others carried over from the previous checkpoint. A head is never moved back: an incident gone from the
    store, or whose chain no longer extends its anchored head, keeps that head (and verify names it). None when
    nothing changed (unless `always`) or no anchor is configured. Raises EvidenceError/ConfigurationError."""
    anchor = store.anchor
    if anchor is None:
        return None
    with anchor.locked():
        last = _last(anchor)
        previous = last if last is not None and last.store == store.url else None
        heads = dict(previous.heads) if previous else {}
        for incident_id in store.incident_ids() if incident_ids is None else incident_ids:
            entries = store.custody(incident_id)
            if not entries:
                continue
            if previous is not None and (found := compare_heads(incident_id, entries, previous)):
                log.error("%s: not re-anchored, its anchored head is kept: %s", incident_id, found[0].detail)
                continue
            heads[incident_id] = Head(seq=entries[-1].seq, hash=entries[-1].hash)
        tsa_url = get_settings().tsa_url
        if not always and previous is not None and previous.heads == heads and (previous.timestamp or not tsa_url):
            return None  # nothing new to anchor (an untimestamped one is retried when a TSA is set)
        checkpoint = _seal(last.number + 1 if last else 1, store.url, last.hash if last else GENESIS, heads)
        if tsa_url:
            from irp.evidence.timestamps import TimestampError, request_timestamp

            try:
                checkpoint.timestamp = base64.b64encode(request_timestamp(tsa_url, checkpoint.body())).decode()
            except TimestampError as exc:  # the checkpoint still anchors the heads; the next one is timestamped
                log.warning("checkpoint %d written without a timestamp: %s", checkpoint.number, exc)
        anchor.append(checkpoint)
    return checkpoint


def _last(anchor: AnchorLog) -> Checkpoint | None:
    """The last checkpoint, refused when it does not parse or match its hash (nothing is chained onto it)."""
    stored = anchor.last()
    if stored is None:
        return None
    label, data = stored
    try:
        last = Checkpoint.model_validate_json(data)
    except ValidationError:
        last = None
    if last is None or hashlib.sha256(last.body()).hexdigest() != last.hash:
        label = anchor.read()[-1][0]  # its place in the log, for the person who looks (read whole only here)
        raise EvidenceError(f"the last checkpoint in {anchor.url} ({label}) is not valid or was altered; nothing is "
                            "anchored after it until a person looks (irp audit verify names it)")
    return last


def check_anchor(store: EvidenceStore) -> AnchorLog | None:
    """The configured anchor, checked at start: refuses an S3 bucket without Object Lock (ConfigurationError)."""
    if isinstance(store.anchor, S3AnchorLog):
        store.anchor.check()
    return store.anchor


def checkpoint_quietly(store: EvidenceStore, incident_id: str | None = None) -> Checkpoint | None:
    """write_checkpoint for the engine (one incident's stage end) and the worker (every incident): a failure is
    logged (and retried next time), never raised."""
    try:
        return write_checkpoint(store, incident_ids=[incident_id] if incident_id else None)
    except IrpError as exc:
        log.warning("chain heads not anchored (retried at the next stage end or interval): %s", exc)
    except Exception:
        log.exception("chain heads not anchored (retried at the next stage end or interval)")
    return None


def start_periodic(store: EvidenceStore, interval_seconds: float) -> threading.Event:
    """Write a checkpoint of `store` every `interval_seconds` in a daemon thread (none for 0); set the event to stop."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_seconds):
            checkpoint_quietly(store)

    if interval_seconds > 0 and store.anchor is not None:
        threading.Thread(target=loop, name="irp-anchor", daemon=True).start()
    return stop
