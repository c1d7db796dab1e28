"""The S3 store's spool: what it keeps locally while the bucket is unreachable, and its replay (flush).

A mixin of S3EvidenceStore (store.py), which owns the spool, the bucket and the archive pipeline.
"""

from __future__ import annotations

import logging
from typing import Any

from irp.errors import EvidenceError
from irp.evidence.base import numbered
from irp.evidence.models import EvidenceItem, FlushReport
from irp.evidence.s3.bucket import BadSpoolOp, KeyNotFound, StoreUnavailable
from irp.evidence.s3.upload import Source
from irp.evidence.spool import SpoolOp
from irp.models import Incident, TimelineEntry, utcnow

__all__ = ["SpoolReplay"]

log = logging.getLogger("irp.evidence.s3.store")


class SpoolReplay:
    """Spooling an item the bucket cannot take now, and uploading what is spooled, oldest first."""

    url: str
    spool: Any
    _items: dict[str, Any]
    _flusher: Any
    _flush_lock: Any
    _route_lock: Any
    _bucket: Any

    def _spool_put(self, op: SpoolOp, source: Source, reason: str) -> EvidenceItem:
        """Keep the item locally until the store answers; the caller gets its manifest line now.

        A name this process already used for the incident (archived or spooled) is numbered now, as an
        upload would number it, so the name the caller gets is the one the manifest will hold.
        """
        op = op.model_copy(update={"reason": reason})
        if "object" not in op.progress:
            taken = set(self._items.get(op.incident_id, {})) | {
                p.name for p in self.spool.pending() if p.incident_id == op.incident_id and p.kind == "put"}
            final, n = op.name, 1
            while final in taken:
                n += 1
                final = numbered(op.name, n)
            op = op.model_copy(update={"name": final})
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
        first = not self._flusher.alive()
        (log.warning if first else log.info)(
            "evidence store %s unreachable (%s): %s of %s kept in %s until it is back "
            "(retried automatically; `irp evidence flush` uploads on demand)",
            self.url, reason, op.name, op.incident_id, self.spool.folder)
        self._flusher.start()
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
                except StoreUnavailable as exc:
                    remaining = len(self.spool.pending())
                    raise EvidenceError(f"evidence store {self.url} unreachable ({exc}): {uploaded} uploaded, "
                                        f"{remaining} still waiting in {self.spool.folder}") from None
                except BadSpoolOp as exc:
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
                    raise BadSpoolOp(f"its data file {path} is gone")
                source = Source(stream=open(path, "rb"), size=op.size, sha256=op.sha256)
            try:
                self._archive(op, source, lambda: self.spool.save(op), spooled=True)
            finally:
                if source and source.stream:
                    source.stream.close()
        elif op.kind == "incident" and op.payload is not None:
            if last_record.get(op.incident_id) == op.id:
                self._write_incident(Incident.model_validate(op.payload))
        elif op.kind == "event" and op.payload is not None:
            self._write_event(op.incident_id, TimelineEntry.model_validate(op.payload), op.key or op.id)
        elif op.kind == "abort":
            try:
                self._bucket.call("abort_multipart_upload", Key=op.key, UploadId=op.upload_id)
            except KeyNotFound:
                pass

    def _spool_empty(self) -> bool:
        with self._route_lock:
            return not self.spool.has_pending()

    def close(self) -> None:
        """Stop the background retry (what is spooled stays spooled)."""
        self._flusher.close()

    def waiting(self, incident_id: str | None = None) -> int:
        return len([op for op in self.spool.pending() if incident_id is None or op.incident_id == incident_id])

