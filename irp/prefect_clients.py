"""One TLS context for every Prefect client of a process.

Prefect builds a new `ssl.SSLContext` for each client it creates, parsing the whole CA bundle each
time (70–90 ms of CPU here), and a flow run creates several (its run context, the suspension
observer, the event, log and concurrency services): profiled under a burst of incidents, a third
of an irp worker's CPU went there (upstream: PrefectHQ/prefect#19106). `share_tls_context()` gives
Prefect's clients one context per (certificate file, verification) setting instead, built exactly as
Prefect builds it; a `verify` a caller passes is kept. An `SSLContext` is safe to share
between connections and threads.
"""

from __future__ import annotations

import ssl
import threading
from functools import lru_cache
from typing import Any

__all__ = ["share_tls_context", "tls_context"]

_lock = threading.Lock()
_shared = False


@lru_cache(maxsize=4)
def tls_context(cert_file: str, skip_verify: bool) -> ssl.SSLContext:
    """The context Prefect's client would build for these settings, built once."""
    if skip_verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=cert_file)


def _current() -> ssl.SSLContext:
    import certifi
    from prefect.settings import PREFECT_API_SSL_CERT_FILE, PREFECT_API_TLS_INSECURE_SKIP_VERIFY

    return tls_context(PREFECT_API_SSL_CERT_FILE.value() or certifi.where(),
                       bool(PREFECT_API_TLS_INSECURE_SKIP_VERIFY.value()))


def share_tls_context() -> None:
    """Make Prefect's clients in this process use the shared context (idempotent)."""
    global _shared
    from prefect.client.orchestration import PrefectClient, SyncPrefectClient

    with _lock:
        if _shared:
            return
        for cls in (PrefectClient, SyncPrefectClient):
            original = cls.__init__

            def __init__(self: Any, api: Any, *args: Any, _original: Any = original,
                         httpx_settings: dict[str, Any] | None = None, **kwargs: Any) -> None:
                settings = dict(httpx_settings or {})
                settings.setdefault("verify", _current())
                _original(self, api, *args, httpx_settings=settings, **kwargs)

            cls.__init__ = __init__  # type: ignore[method-assign]
        _shared = True
