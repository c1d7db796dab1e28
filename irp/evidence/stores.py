"""`open_store(url)`: the evidence store for IRP_EVIDENCE_URL (file:// or s3://).

S3 stores are shared per URL and configuration within a process, so every step of a run sees the
same spool, custody head and background retry; local stores are cheap and made per call.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from irp.errors import ConfigurationError
from irp.evidence.anchors import S3_BUCKET, S3_PREFIX, open_anchor
from irp.evidence.base import EvidenceStore
from irp.evidence.local import LocalEvidenceStore
from irp.settings import get_settings

if TYPE_CHECKING:
    from irp.evidence.s3 import S3EvidenceStore

__all__ = ["close_stores", "open_store"]

_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_REGION",
        "AWS_DEFAULT_REGION", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE")
_s3_stores: dict[tuple, S3EvidenceStore] = {}
_s3_lock = threading.Lock()


def open_store(url: str) -> EvidenceStore:
    """The evidence store for `url`: file:///abs/path, file://./relative/path or s3://bucket[/prefix]."""
    parsed = urlparse(url)
    settings = get_settings()
    if parsed.scheme == "file":
        path = Path(parsed.netloc + parsed.path).expanduser()
        local = LocalEvidenceStore(path.resolve(), retention_mode=settings.evidence_retention_mode,
                                   retention_days=settings.evidence_retention_days)
        local.anchor = open_anchor(local.url, settings)
        return local
    if parsed.scheme == "s3":
        bucket, prefix = parsed.netloc, parsed.path.strip("/")
        if not S3_BUCKET.match(bucket) or ".." in bucket:
            raise ConfigurationError(f"IRP_EVIDENCE_URL={url!r}: {bucket!r} is not a valid S3 bucket name "
                                     "(3-63 characters: lowercase letters, digits, '.', '-')")
        if prefix and not S3_PREFIX.match(prefix):
            raise ConfigurationError(f"IRP_EVIDENCE_URL={url!r}: prefix {prefix!r}: use path segments of "
                                     "letters, digits, '.', '_' and '-'")
        key = (bucket, prefix, *(os.environ.get(name) for name in _ENV), settings.model_dump_json())
        with _s3_lock:
            store = _s3_stores.get(key)
            if store is None:
                from irp.evidence.s3 import S3EvidenceStore  # boto3 is loaded only for an s3:// store

                store = _s3_stores[key] = S3EvidenceStore(f"s3://{bucket}" + (f"/{prefix}" if prefix else ""),
                                                         bucket, prefix, settings)
                store.anchor = open_anchor(store.url, settings)
            return store
    raise ConfigurationError(f"IRP_EVIDENCE_URL={url!r}: unsupported scheme {parsed.scheme!r}; valid: file://, s3://")


def close_stores() -> None:
    """Stop the background retries of every shared S3 store and forget them (tests, shutdown)."""
    with _s3_lock:
        stores = list(_s3_stores.values())
        _s3_stores.clear()
    for store in stores:
        store.close()
