"""The intake's HTTP server: uvicorn (httptools), with the limits it lacks added where the bytes arrive.

uvicorn bounds neither a request's headers (httptools parses a header of any size, in quadratic
time) nor the time a client takes to send them or its body (its keep-alive timeout only runs
between requests), and its `limit_concurrency` answers 503 only once a request's headers are in
while idle connections pile up. `GuardedProtocol` adds, per connection:

- request line and headers over `max_header_bytes`: 431, and no byte more is parsed;
- headers not in within `header_timeout` of the connection (or of the request's first byte), or
  the body not in within `body_timeout` of its headers: 408, and the connection is closed;
- more than `max_connections` open: 503 at once;
- a request answered before its body was read (401, 413, 503): the rest of the body is read and
  dropped, up to `max_discard_bytes` and the body deadline, so the sender reads the answer
  instead of a connection reset;
- after a burst of connections (half of them gone since the peak), the C allocator is asked to
  give its free memory back to the system: glibc keeps freed buffers in its heap otherwise.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from irp.settings import Settings

__all__ = ["GuardedProtocol", "Limits", "server_config"]

log = logging.getLogger("irp.intake")
_LINGER_SECONDS = 1.0  # after refusing a connection: how long its sender has to stop and read the answer


@dataclass(frozen=True)
class Limits:
    """What one connection may cost (see the module's docstring)."""

    max_header_bytes: int
    header_timeout: float
    body_timeout: float
    max_connections: int
    max_discard_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(settings.webhook_max_header_bytes, settings.webhook_header_timeout_seconds,
                   settings.webhook_body_timeout_seconds, settings.webhook_max_connections,
                   4 * settings.webhook_max_body_bytes)


class _MemoryTrim:
    """Gives the allocator's free memory back to the system once a burst of connections is over."""

    MIN_PEAK = 32

    def __init__(self) -> None:
        self.peak = 0
        self.pending = False
        try:
            self._trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc: nothing to ask
            self._trim = None

    def opened(self, count: int) -> None:
        self.peak = max(self.peak, count)

    def closed(self, count: int, loop: asyncio.AbstractEventLoop) -> None:
        if self._trim is None or self.pending or self.peak < self.MIN_PEAK or count > self.peak // 2:
            return
        self.pending = True
        loop.call_later(0.5, self._run)  # the rest of the burst is usually gone by then

    def _run(self) -> None:
        self.pending, self.peak = False, 0
        self._trim(0)


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header size, header and body deadlines, a connection cap and
    lingering early answers. `limits` is set on the subclass `server_config` makes."""

    limits: Limits
    memory: _MemoryTrim

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._reading_headers = True
        self._discarded = 0
        self._lingering = False
        self.memory.opened(len(self.connections))
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, "too many connections; retry", [(b"retry-after", b"1")])
            return
        self._arm(self.limits.header_timeout, self._headers_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
        self.memory.closed(len(self.connections), self.loop)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._discard(len(data))
            return
        while self._reading_headers and data:  # the parser gets no more header bytes than the limit
            room = self.limits.max_header_bytes - self._header_bytes
            if room <= 0:
                self._refuse(431, f"request line and headers larger than {self.limits.max_header_bytes} bytes "
                                  "(IRP_WEBHOOK_MAX_HEADER_BYTES)")
                return
            head, data = data[:room], data[room:]
            self._header_bytes += len(head)
            super().data_received(head)
            if self.transport.is_closing() or self._lingering:
                return
        if data:
            super().data_received(data)

    # Parser callbacks: the deadlines follow the request's parts.
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._timer is None:  # a request on a kept-alive connection
            self._arm(self.limits.header_timeout, self._headers_late)

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._arm(self.limits.body_timeout, self._body_late)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self.cycle.response_complete:  # answered before the body was read: dropped, up to a bound
            self._discard(len(body))
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        self._reading_headers, self._header_bytes = True, 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.cycle is not None and self.cycle.response_complete:
            self.cycle.body = bytearray()  # what was buffered and never read: no one will read it now

    # Deadlines and refusals.
    def _arm(self, seconds: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _headers_late(self) -> None:
        self._timer = None
        if self.cycle is None or self.cycle.response_complete:
            self._write_error(408, f"request headers not received within {self.limits.header_timeout:g} s")
        self.transport.close()

    def _body_late(self) -> None:
        self._timer = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            self._write_error(408, f"request body not received within {self.limits.body_timeout:g} s")
            cycle.disconnected = True  # the app, waiting for the body, is told the client is gone
            cycle.message_event.set()
        self.transport.close()

    def _discard(self, size: int) -> None:
        self._discarded += size
        if self._discarded > self.limits.max_discard_bytes:
            self.transport.close()

    def _refuse(self, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        """Answer `status` now, parse nothing more, drop what still comes for a moment, then close."""
        self._disarm()
        self._reading_headers = False
        self._lingering = True
        if self.cycle is not None and not self.cycle.response_complete:  # an answer is being written: just close
            self.transport.close()
            return
        self._write_error(status, detail, headers)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._timer = self.loop.call_later(_LINGER_SECONDS, self.transport.close)

    def _write_error(self, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        body = orjson.dumps({"detail": detail, "errors": []})
        lines = [STATUS_LINE[status]]
        for name, value in [*self.server_state.default_headers, *(headers or []),
                            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]:
            lines += [name, b": ", value, b"\r\n"]
        self.transport.write(b"".join([*lines, b"\r\n", body]))


def server_config(app, settings: Settings, host: str, port: int) -> uvicorn.Config:
    """uvicorn's configuration for the intake: the guarded protocol with the settings' limits."""
    protocol = type("GuardedProtocol", (GuardedProtocol,),
                    {"limits": Limits.from_settings(settings), "memory": _MemoryTrim()})
    return uvicorn.Config(app, host=host, port=port, http=protocol, ws="none", log_level="warning",
                          access_log=False, timeout_graceful_shutdown=10, timeout_keep_alive=5)
