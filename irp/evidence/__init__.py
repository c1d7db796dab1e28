"""The evidence store: archived items with their SHA-256, a per-incident manifest and a chain of custody (§10, §12).

`open_store(url)` picks the backend from IRP_EVIDENCE_URL: `file://` (local folder, the embedded
default, local.py) or `s3://bucket/prefix` (AWS S3, MinIO, Ceph RGW; the s3/ package). Items are written once:
the same name with the same content is a no-op, other content under a taken name gets a numbered
name, so nothing archived is ever replaced. Every event on the evidence is a hash-chained custody
entry (custody.py); `verify` re-hashes everything and checks the chain.
"""

from irp.evidence.base import EvidenceStore, with_events
from irp.evidence.local import LocalEvidenceStore, remove_tree, temporary_store
from irp.evidence.models import (
    CollectedBy,
    CustodyEntry,
    EvidenceItem,
    ExportedUrl,
    FlushReport,
    IntegrityProblem,
    TarExport,
    VerifyReport,
)
from irp.evidence.stores import close_stores, open_store

__all__ = [
    "CollectedBy",
    "CustodyEntry",
    "EvidenceItem",
    "EvidenceStore",
    "ExportedUrl",
    "FlushReport",
    "LocalEvidenceStore",
    "IntegrityProblem",
    "TarExport",
    "VerifyReport",
    "close_stores",
    "open_store",
    "remove_tree",
    "temporary_store",
    "with_events",
]
