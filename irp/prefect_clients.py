"""What every Prefect client of a long-lived process can share: one TLS context, and the server's default
result storage read once a minute instead of twice per flow run.

Prefect builds a new `ssl.SSLContext` for each client it creates, parsing the whole CA bundle each
time (70–90 ms of CPU here), and a flow run creates several (its run context, the suspension
observer, the event, log and concurrency services): profiled under a burst of incidents, a third
of an irp worker's CPU went there (upstream: PrefectHQ/prefect#19106). `share_tls_context()` gives
Prefect's clients one context per (certificate file, verification) setting instead, built exactly as
Prefect builds it; a `verify` a caller passes is kept. An `SSLContext` is safe to share
between connections and threads.

Each flow run also asks the server which result storage it defaults to (`GET /admin/storage`, twice
per run: 240 reads in a burst of 100 incidents, on the server that paces the burst).
`remember_result_storage()` keeps the answer for `RESULT_STORAGE_SECONDS`: a default changed on the
server applies to the runs that start after that.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any

__all__ = ["remember_result_storage", "share_tls_context", "tls_context"]

RESULT_STORAGE_SECONDS = 60.0

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


class _Remembered:
    """One value read at most once per `seconds`, by sync or async readers alike."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.clock = seconds, clock
        self._kept: tuple[float, Any] | None = None

    def _fresh(self) -> bool:
        return self._kept is not None and self.clock() - self._kept[0] < self.seconds

    def _keep(self, value: Any) -> Any:
        self._kept = (self.clock(), value)
        return value

    def get(self, read: Callable[[], Any]) -> Any:
        return self._kept[1] if self._fresh() else self._keep(read())  # type: ignore[index]

    async def aget(self, aread: Callable[[], Awaitable[Any]]) -> Any:
        return self._kept[1] if self._fresh() else self._keep(await aread())  # type: ignore[index]


def remember_result_storage(seconds: float = RESULT_STORAGE_SECONDS) -> None:
    """Make Prefect read the server's default result storage at most once per `seconds` (idempotent)."""
    import prefect.results as results

    with _lock:
        read = results._read_server_default_result_storage_block_id
        if getattr(read, "remembered", False):
            return
        aread = results._aread_server_default_result_storage_block_id
        memory = _Remembered(seconds)

        def read_remembered() -> Any:
            return memory.get(read)

        async def aread_remembered() -> Any:
            return await memory.aget(aread)

        read_remembered.remembered = aread_remembered.remembered = True  # type: ignore[attr-defined]
        results._read_server_default_result_storage_block_id = read_remembered
        results._aread_server_default_result_storage_block_id = aread_remembered
