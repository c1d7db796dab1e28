"""A plain HTTP(S) listener on 127.0.0.1 for outbound-request tests: it records what reaches it.

`Listener(status, body, headers)` answers every request the same way and keeps each request's
method, path, headers and body in `requests`; `tls=` (an ssl.SSLContext) serves HTTPS and records
the SNI names offered in `sni`. Bounded: 5 s socket timeout, stopped by its context manager.
"""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Listener:
    """A threaded HTTP server on 127.0.0.1 and a free port; `url` once entered."""

    def __init__(self, status: int = 200, body: bytes = b'{"ok": true}', headers: dict[str, str] | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.sni: list[str | None] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5

            def _answer(self) -> None:
                size = int(self.headers.get("content-length") or 0)
                listener.requests.append({"method": self.command, "path": self.path,
                                          "headers": {k.lower(): v for k, v in self.headers.items()},
                                          "body": self.rfile.read(min(size, 1 << 20)).decode("utf-8", "replace")})
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: self.sni.append(name)
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> Listener:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
