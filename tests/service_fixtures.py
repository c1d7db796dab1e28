"""Real servers on loopback for the action tests: moto's standalone server, a fault-injecting proxy
in front of it, a tiny CloudTrail (moto has no LookupEvents), and a helper to serve any ASGI app.

Import the fixtures into a test module: `from service_fixtures import aws, moto_server, make_ctx`.
Every server binds 127.0.0.1 on a free port and is stopped by its fixture.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from irp.actions.registry import ActionContext
from irp.evidence import LocalEvidenceStore
from irp.models import Alert, Incident, IncidentType, Severity, Stage

REGION = "eu-west-3"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AsgiServer:
    """An ASGI app served by uvicorn in a thread on 127.0.0.1; `url` once started."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> AsgiServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


# --- moto ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    """moto's standalone server over HTTP for the module; yields its URL."""
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")  # resets take 0.1 s instead of 3 s
        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.stop()


@pytest.fixture
def aws(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """AWS reached at the moto server (reset), dummy credentials, fast retries; yields the URL."""
    from irp.settings import get_settings

    httpx.post(f"{moto_server}/moto-api/reset", timeout=10).raise_for_status()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("IRP_ACTION_RETRY_BASE_SECONDS", "0.01")
    monkeypatch.setenv("IRP_ACTION_RETRY_MAX_SECONDS", "0.05")
    monkeypatch.setenv("IRP_ACTION_TIMEOUT_SECONDS", "5")
    get_settings.cache_clear()
    return moto_server


def boto(service: str, endpoint: str) -> Any:
    """A plain boto3 client on `endpoint` for arranging and asserting (not the code under test)."""
    import boto3

    return boto3.client(service, region_name=REGION, endpoint_url=endpoint, aws_access_key_id="testing",
                        aws_secret_access_key="testing")


# --- contexts ------------------------------------------------------------------------------------


def make_incident(incident_id: str = "INC-TEST-0001") -> Incident:
    return Incident(id=incident_id, type=IncidentType.unauthorized_access, severity=Severity.major,
                    title="test incident", detected_at=datetime.now(UTC))


def make_ctx(store_root: Path, *, action: str = "", step: str = "contain_it", stage: Stage = Stage.contain,
             dry_run: bool = False, incident: Incident | None = None) -> ActionContext:
    """An ActionContext as the engine builds one, on a local evidence store at `store_root`."""
    incident = incident or make_incident()
    store = LocalEvidenceStore(store_root)
    return ActionContext(incident=incident, alert=Alert(title="test alert"), store=store, stage=stage, step=step,
                         action=action, dry_run=dry_run)


def events(store_root: Path, incident_id: str = "INC-TEST-0001") -> list[dict[str, Any]]:
    """Timeline entries appended from outside the run (events.jsonl)."""
    path = store_root / incident_id / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


# --- fault injection -----------------------------------------------------------------------------


@dataclass
class Fault:
    """Answer `status`/`body` instead of forwarding, `times` times, to requests `matches` accepts."""

    matches: Callable[[str, str, dict[str, str], bytes], bool]
    status: int
    body: bytes
    content_type: str = "text/xml"
    times: int = 1
    headers: dict[str, str] = field(default_factory=dict)


class FaultProxy:
    """A reverse proxy to `upstream` that answers scripted faults first; `seen` counts requests."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults: list[Fault] = []
        self.seen: list[tuple[str, str, str]] = []
        self.app = Starlette(routes=[Route("/{path:path}", self.handle,
                                           methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])])

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        label = headers.get("x-amz-target", "") or _query_action(body)
        self.seen.append((request.method, request.url.path, label))
        for fault in self.faults:
            if fault.times > 0 and fault.matches(request.method, request.url.path, headers, body):
                fault.times -= 1
                return Response(fault.body, status_code=fault.status, media_type=fault.content_type,
                                headers=fault.headers)
        url = f"{self.upstream}{request.url.path}" + (f"?{request.url.query}" if request.url.query else "")
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.request(request.method, url, content=body,
                                          headers={k: v for k, v in request.headers.items() if k.lower() != "host"})
        drop = {"content-length", "content-encoding", "transfer-encoding", "connection"}
        return Response(answer.content, status_code=answer.status_code,
                        headers={k: v for k, v in answer.headers.items() if k.lower() not in drop})

    def count(self, label: str) -> int:
        return sum(1 for _, _, seen in self.seen if seen.endswith(label))


def _query_action(body: bytes) -> str:
    from urllib.parse import parse_qs

    try:
        return parse_qs(body.decode()).get("Action", [""])[0]
    except UnicodeDecodeError:
        return ""


def query_action(name: str) -> Callable[[str, str, dict[str, str], bytes], bool]:
    """Match query-protocol requests (IAM, EC2) of one action."""
    return lambda method, path, headers, body: _query_action(body) == name


def json_target(name: str) -> Callable[[str, str, dict[str, str], bytes], bool]:
    """Match JSON-protocol requests (Secrets Manager, WAF, CloudTrail) of one operation."""
    return lambda method, path, headers, body: headers.get("x-amz-target", "").endswith("." + name)


def iam_error(code: str, message: str = "injected") -> bytes:
    return (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
            f"<RequestId>injected</RequestId></ErrorResponse>").encode()


def ec2_error(code: str, message: str = "injected") -> bytes:
    return (f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>"
            f"<RequestID>injected</RequestID></Response>").encode()


def s3_error(code: str, message: str = "injected") -> bytes:
    return f"<Error><Code>{code}</Code><Message>{message}</Message><RequestId>injected</RequestId></Error>".encode()


def json_error(code: str, message: str = "injected") -> bytes:
    return json.dumps({"__type": code, "message": message}).encode()


@pytest.fixture
def fault_proxy(aws: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """Every AWS call of the code under test goes through a FaultProxy in front of moto."""
    proxy = FaultProxy(aws)
    with AsgiServer(proxy.app) as server:
        monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
        yield proxy


# --- a tiny CloudTrail ---------------------------------------------------------------------------


class CloudTrail:
    """LookupEvents over AWS's JSON protocol, with pagination and optional throttling."""

    TARGET = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents"

    def __init__(self, events: list[dict[str, Any]], throttle_first: int = 0) -> None:
        self.events = events
        self.throttle = throttle_first
        self.requests: list[dict[str, Any]] = []
        self.app = Starlette(routes=[Route("/", self.handle, methods=["POST"])])

    async def handle(self, request: Request) -> Response:
        if request.headers.get("x-amz-target") != self.TARGET:
            return JSONResponse({"__type": "UnknownOperationException"}, status_code=400)
        query = json.loads(await request.body())
        self.requests.append(query)
        if self.throttle > 0:
            self.throttle -= 1
            return Response(json_error("ThrottlingException", "Rate exceeded"), status_code=400,
                            media_type="application/x-amz-json-1.1")
        wanted = query["LookupAttributes"][0]
        matching = [e for e in self.events if _matches(e, wanted)
                    and query["StartTime"] <= e["EventTime"] <= query["EndTime"]]
        start = int(query.get("NextToken") or 0)
        size = int(query.get("MaxResults") or 50)
        page = matching[start:start + size]
        answer: dict[str, Any] = {"Events": page}
        if start + size < len(matching):
            answer["NextToken"] = str(start + size)
        return Response(json.dumps(answer), media_type="application/x-amz-json-1.1")


def _matches(event: dict[str, Any], attribute: dict[str, str]) -> bool:
    key, value = attribute["AttributeKey"], attribute["AttributeValue"]
    if key == "Username":
        return event.get("Username") == value
    if key == "EventName":
        return event.get("EventName") == value
    if key == "AccessKeyId":
        return event.get("AccessKeyId") == value
    return False


# --- the platform's admin API (docs/platform-api.md) ---------------------------------------------

ADMIN_TOKEN = "ccr-admin-T0k3n-do-not-log"
ALL_SCOPES = ["clients:suspend", "users:logout", "users:reset-password", "users:disable", "tokens:revoke",
              "maintenance:write", "audit:read"]


class AdminApi:
    """The admin API exactly as docs/platform-api.md describes it, in memory, with injectable faults."""

    def __init__(self, token: str = ADMIN_TOKEN, scopes: list[str] | None = None) -> None:
        self.token = token
        self.scopes = list(ALL_SCOPES if scopes is None else scopes)
        self.clients = {"acme": {"id": "acme", "name": "ACME", "status": "active", "suspended_reason": None}}
        self.users = {"u-42": {"id": "u-42", "client_id": "acme", "email": "agent@acme.example",
                               "active_sessions": 3, "password_reset_required": False, "status": "active",
                               "role": "agent", "last_login_at": "2026-12-05T09:12:00Z", "last_login_ip": "203.0.113.9"}}
        self.tokens = {
            "tok_1": {"id": "tok_1", "client_id": "acme", "name": "crm-sync", "status": "active",
                      "secret": "ccr_live_aaaaaaaaaaaaaaaa"},
            "tok_2": {"id": "tok_2", "client_id": "acme", "name": "old", "status": "revoked",
                      "secret": "ccr_live_bbbbbbbbbbbbbbbb"},
        }
        self.maintenance: dict[tuple[str, str], dict[str, Any]] = {}
        self.audit_log: list[dict[str, Any]] = []  # entries {at, client_id, user_id, action, ...}, oldest first
        self.audit_page = 2  # entries per page of GET audit-log
        self.requests: list[dict[str, Any]] = []
        self.writes: list[tuple[str, str]] = []
        self.faults: list[Fault] = []
        self.app = Starlette(routes=[Route("/admin/v1/{path:path}", self.handle, methods=["GET", "POST", "PUT"])])
        self.query: dict[str, str] = {}

    def _error(self, status: int, code: str, message: str) -> JSONResponse:
        return JSONResponse({"error": code, "message": message}, status_code=status)

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        path = request.path_params["path"]
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append({"method": request.method, "path": path, "headers": headers,
                              "body": json.loads(body) if body else None, "query": dict(request.query_params)})
        self.query = dict(request.query_params)
        for fault in self.faults:
            if fault.times > 0 and fault.matches(request.method, path, headers, body):
                fault.times -= 1
                return Response(fault.body, status_code=fault.status, media_type=fault.content_type,
                                headers=fault.headers)
        if headers.get("authorization") != f"Bearer {self.token}":
            return self._error(401, "unauthorized", "missing or invalid token")
        parts = path.strip("/").split("/")
        data = json.loads(body) if body else {}
        if request.method != "GET":
            self.writes.append((request.method, path))
            if "idempotency-key" not in headers or "incident_id" not in data:
                return self._error(422, "invalid", "writes need an Idempotency-Key and an incident_id")
        return self._route(request.method, parts, data)

    def _need(self, scope: str) -> JSONResponse | None:
        return None if scope in self.scopes else self._error(403, "forbidden", f"scope {scope} required")

    def _route(self, method: str, parts: list[str], data: dict[str, Any]) -> Response:
        match (method, parts):
            case ("GET", ["auth", "whoami"]):
                return JSONResponse({"subject": "irp-automation", "scopes": self.scopes})
            case ("GET", ["clients", cid]):
                return JSONResponse(self.clients[cid]) if cid in self.clients else self._error(404, "not_found", cid)
            case ("POST", ["clients", cid, ("suspend" | "reactivate") as verb]):
                if denied := self._need("clients:suspend"):
                    return denied
                if cid not in self.clients:
                    return self._error(404, "not_found", cid)
                client = self.clients[cid]
                client["status"] = "suspended" if verb == "suspend" else "active"
                client["suspended_reason"] = data.get("reason") if verb == "suspend" else None
                return JSONResponse(client)
            case ("GET", ["users", uid]):
                return JSONResponse(self.users[uid]) if uid in self.users else self._error(404, "not_found", uid)
            case ("POST", ["users", uid, "logout"]):
                if denied := self._need("users:logout"):
                    return denied
                user = self.users[uid]
                revoked, user["active_sessions"] = user["active_sessions"], 0
                return JSONResponse({"id": uid, "sessions_revoked": revoked, "active_sessions": 0})
            case ("POST", ["users", uid, ("disable" | "enable") as verb]):
                if denied := self._need("users:disable"):
                    return denied
                if uid not in self.users:
                    return self._error(404, "not_found", uid)
                user = self.users[uid]
                user["status"] = "disabled" if verb == "disable" else "active"
                if verb == "disable":
                    user["active_sessions"] = 0
                return JSONResponse(user)
            case ("POST", ["users", uid, "password-reset"]):
                if denied := self._need("users:reset-password"):
                    return denied
                self.users[uid]["password_reset_required"] = True
                return JSONResponse(self.users[uid])
            case ("GET", ["api-tokens", tid]):
                token = self.tokens.get(tid)
                return (JSONResponse({k: v for k, v in token.items() if k != "secret"}) if token
                        else self._error(404, "not_found", tid))
            case ("GET", ["audit-log"]):
                if denied := self._need("audit:read"):
                    return denied
                return JSONResponse(self._audit_page())
            case ("GET", ["clients", cid, "api-tokens"]):
                return JSONResponse([{k: v for k, v in t.items() if k != "client_id"}
                                     for t in self.tokens.values() if t["client_id"] == cid])
            case ("POST", ["api-tokens", tid, "revoke"]):
                if denied := self._need("tokens:revoke"):
                    return denied
                self.tokens[tid]["status"] = "revoked"
                return JSONResponse(self.tokens[tid])
            case ("GET", ["maintenance", ("tenants" | "features") as scope, target]):
                return JSONResponse(self.maintenance.get((scope, target), {"enabled": False, "message": ""}))
            case ("PUT", ["maintenance", ("tenants" | "features") as scope, target]):
                if denied := self._need("maintenance:write"):
                    return denied
                self.maintenance[(scope, target)] = {"enabled": bool(data["enabled"]),
                                                     "message": data.get("message", "")}
                return JSONResponse(self.maintenance[(scope, target)])
        return self._error(404, "not_found", "/".join(parts))

    def _audit_page(self) -> dict[str, Any]:
        """GET audit-log: entries of client_id and/or user_id between since and until, `audit_page` a page."""
        q = self.query
        found = [e for e in self.audit_log
                 if q.get("client_id") in (None, e["client_id"]) and q.get("user_id") in (None, e["user_id"])
                 and q["since"] <= e["at"].replace("Z", "+00:00") <= q["until"]]
        start = int(q.get("cursor") or 0)
        end = start + self.audit_page
        return {"entries": found[start:end], "next_cursor": str(end) if end < len(found) else None}


def save_secret(name: str, value: str) -> None:
    """A Prefect Secret block (needs the prefect_server fixture)."""
    from prefect.blocks.system import Secret

    Secret(value=value).save(name, overwrite=True)


def intake_request(service: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request to the intake's ASGI app in-process (no server): `service` is an IntakeService."""
    import asyncio

    from irp.intake.app import create_app

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(service))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(send())


@pytest.fixture
def admin_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[AdminApi]:
    """The admin API stand-in on loopback, configured as IRP_PLATFORM_API_URL with its token, fast retries."""
    from irp.settings import get_settings

    admin = AdminApi()
    monkeypatch.setattr("irp.actions.platform.secret_value", lambda block: ADMIN_TOKEN)
    with AsgiServer(admin.app) as server:
        monkeypatch.setenv("IRP_PLATFORM_API_URL", f"{server.url}/admin/v1")
        monkeypatch.setenv("IRP_ACTION_RETRY_BASE_SECONDS", "0.01")
        get_settings.cache_clear()
        yield admin
