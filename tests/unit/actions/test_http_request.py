"""http.request against a small Starlette app on loopback: retries, dry run, idempotency, redaction."""

from __future__ import annotations

import asyncio
import json

import pytest
from service_fixtures import AsgiServer, Fault, events, make_ctx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from irp.actions.http import HttpRequestArgs, request
from irp.errors import PermanentError, TransientError
from irp.redaction import redact


class Echo:
    """Answers every request with what it received; faults first; /slow sleeps."""

    def __init__(self) -> None:
        self.seen: list[dict] = []
        self.faults: list[Fault] = []
        self.app = Starlette(routes=[Route("/{path:path}", self.handle, methods=["GET", "POST", "PUT", "DELETE"])])

    async def handle(self, req: Request):
        body = await req.body()
        entry = {"method": req.method, "path": req.url.path, "headers": dict(req.headers),
                 "body": body.decode()}
        self.seen.append(entry)
        for fault in self.faults:
            if fault.times > 0 and fault.matches(req.method, req.url.path, {}, body):
                fault.times -= 1
                return JSONResponse(json.loads(fault.body), status_code=fault.status, headers=fault.headers)
        if req.url.path == "/slow":
            await asyncio.sleep(2)
        return JSONResponse({"ok": True, "got": entry["body"], "access_token": "returned-secret"})


@pytest.fixture
def echo(monkeypatch):
    from irp.settings import get_settings

    monkeypatch.setenv("IRP_ACTION_RETRY_BASE_SECONDS", "0.01")
    monkeypatch.setenv("IRP_ACTION_RETRY_MAX_SECONDS", "0.05")
    monkeypatch.setenv("IRP_HTTP_ALLOWED_HOSTS", "127.0.0.1")  # loopback: only because configuration names it
    get_settings.cache_clear()
    app = Echo()
    with AsgiServer(app.app) as server:
        app.url = server.url
        yield app


def err(status: int, times: int = 1, **headers: str) -> Fault:
    return Fault(lambda *a: True, status, json.dumps({"error": "injected"}).encode(), times=times, headers=headers)


def test_post_is_sent_with_a_stable_idempotency_key(echo, evidence_root):
    args = HttpRequestArgs(url=f"{echo.url}/hooks/block", method="POST", body_json={"ip": "203.0.113.7"})
    first = request(args, make_ctx(evidence_root))
    second = request(args, make_ctx(evidence_root))
    keys = [s["headers"]["idempotency-key"] for s in echo.seen]
    assert len(keys) == 2 and keys[0] == keys[1]
    assert first.changed and first.details["status"] == 200 and first.details["body"]["got"] == '{"ip":"203.0.113.7"}'
    assert "Idempotency-Key" in second.message


def test_dry_run_sends_reads_but_not_writes(echo, evidence_root):
    write = request(HttpRequestArgs(url=f"{echo.url}/x", method="DELETE"), make_ctx(evidence_root, dry_run=True))
    assert echo.seen == [] and write.details["would_change"] and "not sent" in write.message
    read = request(HttpRequestArgs(url=f"{echo.url}/x"), make_ctx(evidence_root, dry_run=True))
    assert len(echo.seen) == 1 and read.details["status"] == 200 and not read.changed


def test_5xx_and_429_are_retried_honouring_retry_after(echo, evidence_root):
    echo.faults = [err(503), err(429, **{"Retry-After": "0"}), err(502)]
    ctx = make_ctx(evidence_root)
    outcome = request(HttpRequestArgs(url=f"{echo.url}/status"), ctx)
    assert outcome.details["status"] == 200 and len(echo.seen) == 4
    assert any(e.kind == "third_party" and "503, 429, 502" in e.message for e in ctx.timeline)
    # every attempt is archived
    assert [item.name.rsplit("/", 1)[1] for item in ctx.evidence] == [
        "01-GET-status.json", "02-GET-status.json", "03-GET-status.json", "04-GET-status.json"]


def test_403_is_not_retried_and_is_on_the_incident(echo, evidence_root):
    echo.faults = [err(403, times=5)]
    with pytest.raises(PermanentError, match=r"refused: access denied \(HTTP 403 Forbidden: injected\)"):
        request(HttpRequestArgs(url=f"{echo.url}/x", method="PUT", body="x"), make_ctx(evidence_root))
    assert len(echo.seen) == 1
    [entry] = events(evidence_root)
    assert entry["kind"] == "third_party" and entry["data"]["code"] == "403" and not entry["data"]["retryable"]


def test_5xx_that_lasts_fails_after_the_attempts(echo, evidence_root):
    echo.faults = [err(500, times=10)]
    with pytest.raises(TransientError, match=r"failed after 4 attempt\(s\)"):
        request(HttpRequestArgs(url=f"{echo.url}/x"), make_ctx(evidence_root))
    assert len(echo.seen) == 4


def test_a_timeout_is_transient(echo, evidence_root, monkeypatch):
    from irp.settings import get_settings

    monkeypatch.setenv("IRP_ACTION_ATTEMPTS", "2")
    get_settings.cache_clear()
    with pytest.raises(TransientError, match="timed out"):
        request(HttpRequestArgs(url=f"{echo.url}/slow", timeout_seconds=0.3), make_ctx(evidence_root))
    assert len(echo.seen) == 2


def test_allowed_hosts(echo, evidence_root, monkeypatch):
    from irp.settings import get_settings

    monkeypatch.setenv("IRP_HTTP_ALLOWED_HOSTS", "hooks.example.com")
    get_settings.cache_clear()
    with pytest.raises(PermanentError, match="host 127.0.0.1 is not in IRP_HTTP_ALLOWED_HOSTS"):
        request(HttpRequestArgs(url=f"{echo.url}/x"), make_ctx(evidence_root))
    assert echo.seen == []


def test_evidence_is_redacted(echo, evidence_root):
    ctx = make_ctx(evidence_root)
    outcome = request(HttpRequestArgs(url=f"{echo.url}/x", method="POST",
                                      headers={"Cookie": "session=abc", "X-Trace": "t1"},
                                      body_json={"password": "hunter2", "user": "bob"}), ctx)
    with ctx.store.open(ctx.incident.id, ctx.evidence[0].name) as handle:
        exchange = json.load(handle)
    assert exchange["request"]["headers"]["cookie"] == "***redacted***"
    assert exchange["request"]["headers"]["x-trace"] == "t1"
    assert exchange["request"]["body"] == {"password": "***redacted***", "user": "bob"}
    assert exchange["response"]["body"]["access_token"] == "***redacted***"
    assert outcome.details["body"]["access_token"] == "***redacted***"


def test_redact_keeps_ids_and_lists():
    value = {"token_id": "tok_1", "tokens": [{"id": "a", "token": "t"}], "api_key": "k", "note": "has s3cret inside"}
    assert redact(value, ("s3cret",)) == {"token_id": "tok_1", "tokens": [{"id": "a", "token": "***redacted***"}],
                                          "api_key": "***redacted***", "note": "has ***redacted*** inside"}


@pytest.mark.parametrize("url", ["ftp://x.example/a", "not a url", "http:///nohost"])
def test_only_http_urls(url):
    with pytest.raises(ValueError, match="http"):
        HttpRequestArgs(url=url)
