"""S3EvidenceStore: the archive pipeline (name, upload, manifest, custody), the spool's routing, reads.

The bucket's calls are in bucket.py, uploads in upload.py, the spool's replay in spooling.py, what
verify reads in inventory.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from irp.errors import EvidenceError
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
from irp.evidence.chained import StoredRecord, content_digest, vouched
from irp.evidence.custody import GENESIS, digest, encode, head_of, seal
from irp.evidence.models import (
    CollectedBy,
    CustodyEntry,
    EvidenceItem,
    ExportedUrl,
    IntegrityProblem,
    RawEntry,
    StoredObject,
    TarExport,
    VerifyReport,
)
from irp.evidence.s3.bucket import BadSpoolOp, Bucket, KeyNotFound, KeyTaken, MappedReader, StoreUnavailable
from irp.evidence.s3.inventory import Inspector
from irp.evidence.s3.options import s3_options
from irp.evidence.s3.retry import BackgroundFlush
from irp.evidence.s3.spooling import SpoolReplay
from irp.evidence.s3.upload import Source, Uploader
from irp.evidence.spool import Spool, SpoolOp
from irp.models import Incident, Severity, TimelineEntry, utcnow

__all__ = ["S3EvidenceStore"]

log = logging.getLogger(__name__)

class S3EvidenceStore(SpoolReplay, EvidenceStore):
    """Evidence in an S3 bucket, with a local spool for outages. Thread-safe; one per URL (open_store)."""

    def __init__(self, url: str, bucket: str, prefix: str, settings: Any) -> None:
        self.url = url
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._options = options = s3_options(settings)
        spool_name = bucket + ("~" + self.prefix.replace("/", "~") if self.prefix else "")
        self.spool = Spool(Path(settings.evidence_spool_dir) / spool_name)

        self._bucket = Bucket(bucket)
        self._inspector = Inspector(self._bucket, url, self._options.sse)
        self._uploader = Uploader(self._bucket, self.spool, options.part_size, options.concurrency)
        self._lock = threading.RLock()          # manifest and custody appends, name reservations
        self._route_lock = threading.Lock()     # direct or spooled, decided one put at a time
        self._flush_lock = threading.Lock()
        self._items: dict[str, dict[str, EvidenceItem]] = {}
        self._reserved: dict[str, set[str]] = {}
        self._heads: dict[str, tuple[int, str]] = {}
        self._severities: dict[str, Severity | None] = {}
        self._chains: dict[str, dict[str, dict[str, Any]]] = {}   # custody entries read so far (write-once keys)
        self._records: dict[str, str] = {}                        # digest of the last incident.json written
        self._flusher = BackgroundFlush(url, self.flush, self._spool_empty)

    # ---- plumbing ------------------------------------------------------------------------------

    @property
    def _client(self) -> Any:
        """The bucket's S3 client, None until the first call needs it."""
        return self._bucket._client

    def _base(self, incident_id: str) -> str:
        return f"{self.prefix}/{incident_id}/" if self.prefix else f"{incident_id}/"

    def _key(self, incident_id: str, *parts: str) -> str:
        return self._base(check_id(incident_id)) + "/".join(parts)

    # ---- protection: encryption and Object Lock ------------------------------------------------

    def _retention(self, incident_id: str) -> tuple[str, datetime] | None:
        """(mode, retain-until) for an object archived now, or None without Object Lock."""
        if self._options.retention_mode == "off" or not self._bucket.object_lock_enabled():
            return None
        until = retention_until(self._severity(incident_id), self._options.retention_mode, self._options.retention_days)
        return (self._options.retention_mode, until) if until else None

    def _severity(self, incident_id: str) -> Severity | None:
        """The incident's severity (None before its record exists: the longest retention applies)."""
        if incident_id not in self._severities:
            self._severities[incident_id] = self._stored_severity(incident_id)  # None until save_incident tells
        return self._severities[incident_id]

    def _stored_severity(self, incident_id: str) -> Severity | None:
        try:
            return Incident.model_validate_json(self._bucket.get_bytes(self._key(incident_id, "incident.json"))).severity
        except (KeyNotFound, ValidationError):
            return None

    # ---- uploads -------------------------------------------------------------------------------

    def _put_bytes(self, key: str, data: bytes, content_type: str, *,
                   retention: tuple[str, datetime] | None = None, exclusive: bool = True) -> str | None:
        return self._bucket.put_bytes(key, data, content_type, exclusive=exclusive, **self._options.protection(retention))

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
        source = self._uploader.prepare(data)
        try:
            with self._route_lock:
                if self.spool.has_pending():  # keep the order: behind what is waiting
                    return self._spool_put(op, source, "earlier evidence is still waiting in the spool")
            try:
                return self._archive(op, source, lambda: None)
            except StoreUnavailable as exc:
                with self._route_lock:
                    return self._spool_put(op, source, str(exc))
        finally:
            if source.temp is not None:
                if source.stream is not None:
                    source.stream.close()
                source.temp.unlink(missing_ok=True)

    def _archive(self, op: SpoolOp, source: Source | None, save: Callable[[], None],
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
                except KeyTaken:
                    listed = EvidenceItem.model_validate_json(self._bucket.get_bytes(key))
                    if listed.sha256 != item.sha256:
                        raise BadSpoolOp(f"s3://{self.bucket}/{key} already lists other content for "
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
                                              "version_id": item.version_id, "sse": self._options.sse,
                                              "kms_key_id": self._options.kms_key_id or None,
                                              "retention_mode": item.retention_mode,
                                              "retention_until": until.isoformat() if until else None,
                                              "multipart": done.get("multipart", False),
                                              "manifest": item.model_dump(mode="json")})
                progress["archived"] = True
                save()
            self._items.setdefault(incident_id, {})[item.name] = item
            self._reserved.get(incident_id, set()).discard(item.name)
        return item

    def _upload_object(self, op: SpoolOp, source: Source, retention: tuple[str, datetime] | None) -> dict[str, Any]:
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
                    sha, size, version = self._uploader.put_stream(key, source.rewind(), source.size, op.content_type,
                                                                  retention, self._options.protection(retention))
                    multipart = True
            except KeyTaken:
                with self._lock:
                    self._reserved[incident_id].discard(final)
                stored = self._uploader.stored_sha256(key)
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

    # ---- manifest, records, events ---------------------------------------------------------------

    def _manifest_items(self, incident_id: str) -> dict[str, EvidenceItem]:
        """The manifest from the store: list the entries, fetch the ones not seen yet (they are write-once)."""
        cache = self._items.setdefault(incident_id, {})
        prefix = self._key(incident_id, "manifest/")
        for key in self._bucket.keys(prefix):
            name = key[len(prefix):].removesuffix(".json")
            if name not in cache:
                try:
                    cache[name] = EvidenceItem.model_validate_json(self._bucket.get_bytes(key))
                except ValidationError:
                    raise EvidenceError(f"s3://{self.bucket}/{key} is not a manifest entry; "
                                        f"run irp evidence verify {incident_id}") from None
                except KeyNotFound:
                    continue
        return cache

    def manifest(self, incident_id: str) -> list[EvidenceItem]:
        check_id(incident_id)
        items: dict[str, EvidenceItem]
        pending = [op for op in self.spool.pending() if op.incident_id == incident_id and op.kind == "put"]
        if self._flusher.alive():  # the store is known to be away: no waiting on it
            items = dict(self._items.get(incident_id, {}))
        else:
            try:
                items = dict(self._manifest_items(incident_id))
            except StoreUnavailable as exc:
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
            for page in self._bucket.pages(base, delimiter="/"):
                for common in page.get("CommonPrefixes", []):
                    name = common["Prefix"][len(base):].rstrip("/")
                    if is_incident_id(name):
                        found.add(name)
        except StoreUnavailable as exc:
            raise EvidenceError(f"evidence store {self.url} unreachable: {exc}") from None
        return sorted(found)

    def save_incident(self, incident: Incident) -> None:
        """Write the record (spooled while the store is away); a rise in severity extends the objects' retention."""
        check_id(incident.id)
        known = incident.id in self._severities
        before = self._severities.get(incident.id)
        self._severities[incident.id] = incident.severity
        with self._route_lock:
            if self.spool.has_pending():
                self._spool_record(incident, "earlier writes are still waiting in the spool")
                return
        try:
            if not known and self._options.retention_mode != "off":
                before = self._stored_severity(incident.id)
            self._write_incident(incident)
        except StoreUnavailable as exc:
            with self._route_lock:
                self._spool_record(incident, str(exc))
            return
        if before is not None and before != incident.severity:
            try:
                self._extend_retention(incident.id, incident.severity)
            except (EvidenceError, StoreUnavailable) as exc:  # the record is saved; the response goes on
                log.error("incident %s: retention of its evidence not extended to severity %s: %s",
                          incident.id, incident.severity.value, exc)

    def _extend_retention(self, incident_id: str, severity: Severity) -> None:
        """Object Lock of each archived object version to at least its archiving time + the severity's period
        (PutObjectRetention, in the configured mode); one `retention_extended` custody entry."""
        if not self._bucket.object_lock_enabled():
            return
        table = {str(getattr(k, "value", k)): v for k, v in self._options.retention_days.items()}
        period = table.get(severity.value)
        if period is None:
            return
        mode = self._options.retention_mode
        extended: dict[str, str] = {}
        for item in self._manifest_items(incident_id).values():
            until = (item.collected_at + timedelta(days=period)).replace(microsecond=0)
            if item.retention_until is None or item.retention_until >= until:
                continue
            version = {"VersionId": item.version_id} if item.version_id and item.version_id != "null" else {}
            self._bucket.call("put_object_retention", Key=self._key(incident_id, "objects", item.name), **version,
                              Retention={"Mode": mode, "RetainUntilDate": until})
            extended[item.name] = item.model_copy(update={"retention_until": until}).model_dump(mode="json")[
                "retention_until"]
        if extended:
            self._append_custody(incident_id, "retention_extended", actor=local_actor(),
                                 details={"severity": severity.value, "mode": mode, "objects": extended})

    def _spool_record(self, incident: Incident, reason: str) -> None:
        self.spool.add(SpoolOp(kind="incident", incident_id=incident.id, reason=reason,
                               payload=incident.model_dump(mode="json")))
        self._flusher.start()

    def _write_incident(self, incident: Incident) -> None:
        """Write incident.json and its `record_saved` custody entry (nothing when unchanged since this process wrote it)."""
        text = incident.model_dump_json(indent=2).encode()
        found = digest(json.loads(text))
        if self._records.get(incident.id) == found:
            return
        self._put_bytes(self._key(incident.id, "incident.json"), text, "application/json", exclusive=False)
        self._append_custody(incident.id, "record_saved", actor=local_actor(), sha256=found,
                             details={"status": incident.status.value, "severity": incident.severity.value})
        self._records[incident.id] = found

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
                    incident = Incident.model_validate_json(self._bucket.get_bytes(self._key(incident_id, "incident.json")))
                except KeyNotFound:
                    raise EvidenceError(f"no incident {incident_id} in {self.url}") from None
            if not (records and self._flusher.alive()):
                stored = self._stored_events(incident_id)
                if stored:
                    stored = vouched(incident_id, stored, list(self._chain_records(incident_id).values()))
                events.extend(TimelineEntry.model_validate_json(record.text) for record in stored)
        except StoreUnavailable as exc:
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
                self._flusher.start()
                return
        event_id = f"{time.time_ns():020d}-{os.getpid()}-{threading.get_ident()}"
        try:
            self._write_event(incident_id, entry, event_id)
        except StoreUnavailable as exc:  # the replay reuses the id: an event written before its custody entry is chained
            with self._route_lock:
                self.spool.add(op.model_copy(update={"reason": str(exc), "key": event_id}))
                self._flusher.start()

    def _write_event(self, incident_id: str, entry: TimelineEntry, event_id: str) -> None:
        """Write events/<event_id>.json and its `event_appended` custody entry (each once, also on a replay)."""
        text = entry.model_dump_json().encode()
        try:
            self._put_bytes(self._key(incident_id, "events", f"{event_id}.json"), text, "application/json")
        except KeyTaken:  # written by an earlier attempt: chained too, unless that attempt stopped in between
            if any((r.get("details") or {}).get("key") == event_id
                   for r in self._chain_records(incident_id).values() if r.get("event") == "event_appended"):
                return
        self._append_custody(incident_id, "event_appended", actor=local_actor(), sha256=content_digest(text),
                             details={"kind": entry.kind, "at": entry.at.isoformat(), "key": event_id})

    def _stored_events(self, incident_id: str) -> list[StoredRecord]:
        prefix = self._key(incident_id, "events/")
        return [StoredRecord(label=key[len(self._base(incident_id)):], key=key[len(prefix):].removesuffix(".json"),
                             text=self._bucket.get_bytes(key)) for key in self._bucket.keys(prefix)]

    def _chain_records(self, incident_id: str) -> dict[str, dict[str, Any]]:
        """The custody entries as plain dicts by key, fetching only the ones not read yet (they are write-once)."""
        prefix = self._key(incident_id, "custody/")
        with self._lock:
            cache = self._chains.setdefault(incident_id, {})
            for key in self._bucket.keys(prefix):
                if key not in cache:
                    try:
                        record = json.loads(self._bucket.get_bytes(key))
                    except (KeyNotFound, ValueError):
                        continue
                    if isinstance(record, dict):
                        cache[key] = record
            return dict(sorted(cache.items()))

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
        except StoreUnavailable as exc:
            raise EvidenceError(f"evidence store {self.url} unreachable ({exc}): "
                                f"cannot record '{event}' in the custody log of {incident_id}") from None

    def _append_custody(self, incident_id: str, event: str, **fields: Any) -> CustodyEntry:
        """Write the next entry with If-None-Match; another writer took the number: re-read the head and retry."""
        prefix = self._key(incident_id, "custody/")
        retention = self._retention(incident_id)
        with self._lock:
            for _ in range(50):
                if incident_id not in self._heads:
                    keys = self._bucket.keys(prefix)
                    if not keys:
                        self._heads[incident_id] = (0, GENESIS)
                    else:
                        text = self._bucket.get_bytes(keys[-1])
                        seq_of_key = int(keys[-1][len(prefix):].removesuffix(".json") or 0)
                        self._heads[incident_id] = head_of(text) or (seq_of_key, hashlib.sha256(text).hexdigest())
                seq, prev = self._heads[incident_id]
                record = seal(incident_id, seq + 1, prev, event, **fields)
                try:
                    self._put_bytes(f"{prefix}{seq + 1:08d}.json", encode(record), "application/json",
                                    retention=retention)
                except KeyTaken:
                    self._heads.pop(incident_id, None)
                    continue
                self._heads[incident_id] = (seq + 1, record["hash"])
                self._chains.get(incident_id, {})[f"{prefix}{seq + 1:08d}.json"] = record
                return CustodyEntry.model_validate(record)
        raise EvidenceError(f"could not append to the custody log of {incident_id} in {self.url}: "
                            "too many concurrent writers")

    # ---- verify and export ---------------------------------------------------------------------

    def check(self, incident_id: str) -> VerifyReport:
        try:
            return super().check(incident_id)
        except StoreUnavailable as exc:
            raise EvidenceError(f"evidence store {self.url} unreachable ({exc}): cannot verify {incident_id}") from None

    def _custody_raw(self, incident_id: str) -> list[RawEntry]:
        try:
            return self._inspector.custody(self._base(incident_id))
        except StoreUnavailable as exc:
            raise EvidenceError(f"evidence store {self.url} unreachable: {exc}") from None

    def _manifest_for_verify(self, incident_id: str) -> tuple[list[EvidenceItem], list[IntegrityProblem]]:
        return self._inspector.manifest(self._base(incident_id))

    def _inventory(self, incident_id: str) -> dict[str, StoredObject]:
        return self._inspector.objects(self._key(incident_id, "objects/"))

    def _events_for_verify(self, incident_id: str) -> list[StoredRecord]:
        return self._stored_events(incident_id)

    def _record_for_verify(self, incident_id: str) -> bytes | None:
        try:
            return self._bucket.get_bytes(self._key(incident_id, "incident.json"))
        except KeyNotFound:
            return None

    def _strays(self, incident_id: str) -> list[str]:
        return []  # keys outside the layout are named with the manifest (Inspector.manifest)

    def _rehash(self, incident_id: str, item: EvidenceItem,
                stored: StoredObject) -> tuple[str, int, list[IntegrityProblem]]:
        return self._inspector.rehash(self._key(incident_id, "objects", item.name), item, stored)

    @contextmanager
    def _open_raw(self, incident_id: str, name: str) -> Iterator[IO[bytes]]:
        item = self._archived_item(incident_id, name)
        key = self._key(incident_id, "objects", name)
        version = {"VersionId": item.version_id} if item.version_id and item.version_id != "null" else {}
        try:
            response = self._bucket.call("get_object", Key=key, **version)
        except KeyNotFound:
            raise EvidenceError(f"no evidence {name!r} for incident {incident_id} in {self.url}") from None
        except StoreUnavailable as exc:
            raise EvidenceError(f"evidence store {self.url} unreachable: {exc}") from None
        body = response["Body"]
        try:
            yield MappedReader(body, self._bucket, key)
        finally:
            body.close()

    def _archived_item(self, incident_id: str, name: str) -> EvidenceItem:
        try:
            items = self._manifest_items(incident_id)
        except StoreUnavailable as exc:
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
        expiry = expires_in or self._options.presign_expiry
        if not 1 <= expiry <= self._options.presign_expiry:
            raise EvidenceError(f"--expires {expiry}: presigned URLs live at most {self._options.presign_expiry} s "
                                "(IRP_EVIDENCE_PRESIGN_EXPIRY_SECONDS)")
        self._require_uploaded(incident_id)
        try:
            items = sorted(self._manifest_items(incident_id).values(), key=lambda i: (i.collected_at, i.name))
        except StoreUnavailable as exc:
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
            with self._bucket.errors("GeneratePresignedUrl", f"s3://{self.bucket}/{params['Key']}"):
                url = self._bucket.client.generate_presigned_url("get_object", Params=params, ExpiresIn=expiry)
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
        except StoreUnavailable as exc:
            raise EvidenceError(f"evidence store {self.url} unreachable ({exc}): "
                                f"export of {incident_id} stopped") from None
