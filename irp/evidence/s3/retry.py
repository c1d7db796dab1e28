"""The background retry of an S3 store's spool: flush with backoff (1 s, doubling, at most 60 s) until empty."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from irp.errors import EvidenceError

log = logging.getLogger(__name__)


class BackgroundFlush:
    """One daemon thread per store, started when something is spooled; `flush()` uploads, `empty()` says when to stop."""

    def __init__(self, url: str, flush: Callable[[], object], empty: Callable[[], bool]) -> None:
        self.url = url
        self._flush = flush
        self._empty = empty
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.alive():
            return
        self._closed.clear()
        self._thread = threading.Thread(target=self._loop, name=f"irp-evidence-flush {self.url}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        delay = 1.0
        while not self._closed.wait(delay):
            try:
                self._flush()
            except EvidenceError as exc:
                log.warning("evidence spool not uploaded yet: %s", exc)
            except Exception as exc:  # the retry thread must not die silently
                log.error("evidence spool flush failed: %s: %s", type(exc).__name__, exc)
            if self._empty():
                log.info("evidence spool of %s uploaded", self.url)
                return
            delay = min(delay * 2, 60.0)

    def close(self) -> None:
        """Stop retrying (what is spooled stays spooled)."""
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
