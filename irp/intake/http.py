"""What every intake endpoint shares: JSON answers, reading a bounded body, the --local rules."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import orjson
from fastapi import Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from irp.intake.service import is_loopback

__all__ = ["BodyTooLarge", "error_response", "json_response", "local_refusal", "read_body"]


class BodyTooLarge(Exception):
    """Raised when a request body passes its size limit while it is read."""


def json_response(content: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    """A JSON response rendered by orjson: the same bytes as Starlette's JSONResponse (compact, UTF-8), faster."""
    return Response(orjson.dumps(content), status_code=status, headers=headers, media_type="application/json")


def error_response(status: int, detail: str, errors: list[tuple[str, str]] | None = None,
           headers: dict[str, str] | None = None) -> Response:
    body = {"detail": detail, "errors": [{"path": p, "message": m} for p, m in (errors or [])]}
    return json_response(body, status, headers)


def local_refusal(request: Request, alert: bool) -> tuple[str, int, str] | None:
    """(reason, status, detail) when a request passing as local (--local, no credential) is not from this
    machine's own tools: its Host must be a loopback name with the intake's port (a DNS-rebound name is
    not), its Origin absent or loopback (a page of another site is not) and, for an alert, its
    Content-Type application/json (which a cross-site form cannot send without a CORS preflight)."""
    port = (request.scope.get("server") or ("", None))[1] or 80
    host = request.headers.get("host", "")
    try:
        parts = urlsplit(f"//{host}")
        name, host_port = parts.hostname or "", parts.port or 80
    except ValueError:
        name, host_port = "", None
    if not is_loopback(name) or host_port != port or any(c in host for c in "@/?#\\"):
        return ("not_local", 403, f"--local accepts requests from this machine only: Host must be 127.0.0.1:{port}, "
                                  f"localhost:{port} or [::1]:{port}, not {host[:100]!r}")
    origin = request.headers.get("origin")
    if origin is not None:
        try:
            origin_host = urlsplit(origin).hostname or ""
        except ValueError:
            origin_host = ""
        if not is_loopback(origin_host):
            return ("not_local", 403, f"--local refuses requests from web pages of other sites: Origin {origin[:100]!r} "
                                      "is not a loopback origin")
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if alert and media != "application/json":
        return ("unsupported_media_type", 415, "--local accepts alerts only as Content-Type: application/json, "
                                               f"not {media[:100] or '(none)'!r}")
    return None


async def read_body(request: Request, limit: int) -> bytes:
    """The body from the ASGI messages (most alerts come in one); BodyTooLarge as soon as it passes `limit`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


