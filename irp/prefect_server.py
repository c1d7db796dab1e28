"""The Prefect server as `irp stack` runs it: Prefect's own app, served by uvicorn as `prefect server start`
does, with one gate in front when its database is SQLite.

SQLite has one write lock, and Prefect's request transactions read before they write: when another
connection commits in between, the write fails at once with "database is locked" (a busy timeout
cannot help: the transaction's snapshot is stale), the server answers 503, and Prefect's client
asks again 2, 4, 8… s later — a flow run whose concurrency slot is refused five times in a row
crashes. Under a burst of incidents most run creations met the lock. So, on SQLite:

- write requests (every method but GET, HEAD and OPTIONS, except the POST routes that only read:
  …/filter, …/count, …/paginate, …/history, /ui/…) enter the application one at a time. They
  would take the database's write lock one at a time anyway; in line here, they wait
  milliseconds instead of failing. Reads, websockets (the event stream) and the server's own
  services are not held;
- a 503 that still happens (a service's write met a request's) carries `Retry-After` of a few
  tens of milliseconds, which Prefect's client honours instead of its exponential back-off.

On PostgreSQL the app is served unchanged. `python -m irp.prefect_server --host H --port P`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
from typing import Any

__all__ = ["WriteGate", "is_write", "main"]

log = logging.getLogger("irp.prefect_server")

RETRY_AFTER_SECONDS = "0.05"
_READ_ROUTES = re.compile(r"/(filter|count|paginate|history)/?$|^/api/ui/")


def is_write(method: str, path: str) -> bool:
    """Whether a request may write to the database (POST routes that only read are not writes)."""
    if method in ("GET", "HEAD", "OPTIONS"):
        return False
    return not (method == "POST" and _READ_ROUTES.search(path))


class WriteGate:
    """ASGI middleware: write requests one at a time (when `serialize`), and Retry-After on every 503."""

    def __init__(self, app: Any, serialize: bool) -> None:
        self.app, self.serialize = app, serialize
        self._lock: asyncio.Lock | None = None
        self.refused = 0  # 503 answers, for the log

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def answer(message: dict) -> None:
            if message["type"] == "http.response.start" and message["status"] == 503:
                self.refused += 1
                log.info("503 to %s %s (%d so far): asked to retry after %s s", scope["method"], scope["path"],
                         self.refused, RETRY_AFTER_SECONDS)
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"retry-after", RETRY_AFTER_SECONDS.encode())]}
            await send(message)

        if self.serialize and is_write(scope["method"], scope["path"]):
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                await self.app(scope, receive, answer)
        else:
            await self.app(scope, receive, answer)


def main(argv: list[str] | None = None) -> None:
    import uvicorn
    from prefect.server.api.server import create_app
    from prefect.settings import (
        PREFECT_API_DATABASE_CONNECTION_URL,
        PREFECT_SERVER_API_KEEPALIVE_TIMEOUT,
        PREFECT_SERVER_API_WEBSOCKET_PING_INTERVAL,
        PREFECT_SERVER_API_WEBSOCKET_PING_TIMEOUT,
        PREFECT_SERVER_LOGGING_LEVEL,
    )

    parser = argparse.ArgumentParser(prog="python -m irp.prefect_server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4200)
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sqlite = (PREFECT_API_DATABASE_CONNECTION_URL.value() or "sqlite").startswith("sqlite")
    log.info("Prefect server on %s: write requests %s", "SQLite" if sqlite else "PostgreSQL",
             "one at a time" if sqlite else "unchanged")
    uvicorn.run(WriteGate(create_app(final=True), serialize=sqlite), host=options.host, port=options.port,
                timeout_keep_alive=PREFECT_SERVER_API_KEEPALIVE_TIMEOUT.value(),
                ws_ping_interval=PREFECT_SERVER_API_WEBSOCKET_PING_INTERVAL.value(),
                ws_ping_timeout=PREFECT_SERVER_API_WEBSOCKET_PING_TIMEOUT.value(),
                log_level=PREFECT_SERVER_LOGGING_LEVEL.value().lower())


if __name__ == "__main__":
    main()
