"""The HTTP side of the intake (FastAPI): one POST endpoint per source, health, metrics, status.

Every POST goes the same way: size check (413), what the headers decide before any body byte is
read (a bearer token, else 401; --local: this machine only, 403/415), the body (a signature over it
checked then: 401), JSON (422), the source's schema (422 with the field path), normalisation to
Alerts, routing, then the journal; 202 only once the journal has it on disk. Nothing a client sends
can produce a 500; 503 means the journal or a certificate fetch is unavailable, or too many
unverified bodies are being read, and the sender should retry. Header size, read deadlines and
the connection cap are the server's (irp/intake/server.py).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from irp.errors import field_errors
from irp.intake import normalise
from irp.intake.auth import PENDING
from irp.intake.journal import AcceptResult, AlertDecision, AlertDelivery, JournalError
from irp.intake.normalise import PayloadError
from irp.intake.payloads import (
    Accepted,
    AlertmanagerWebhook,
    ErrorBody,
    GenericAlert,
    GrafanaWebhook,
    Health,
    PagerDutyWebhook,
    Replayed,
    Report,
    SnsMessage,
    UnroutedAlert,
)
from irp.intake.service import is_loopback
from irp.intake.sns import CertificateUnavailable
from irp.models import Alert

__all__ = ["SOURCES", "BodyError", "InvalidPayload", "Source", "alerts_in", "create_api", "create_app", "openapi_spec",
           "read_payload"]

log = logging.getLogger("irp.intake")
MAX_DEPTH = 64


@dataclass(frozen=True)
class Source:
    """One alert source: its path, request model and normaliser."""

    name: str
    path: str
    model: type[BaseModel]
    normalise: Callable[[Any, dict], list]
    summary: str
    description: str
    headers: tuple[str, ...] = ()


_HMAC_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("alertmanager", "/alerts/alertmanager", AlertmanagerWebhook, normalise.from_alertmanager,
           "Prometheus Alertmanager webhook (version 4)",
           "A webhook_config receiver: each alert of the group is routed and deduplicated by its fingerprint.",
           _HMAC_HEADERS),
    Source("grafana", "/alerts/grafana", GrafanaWebhook, normalise.from_grafana,
           "Grafana alerting webhook contact point", "Each alert of the notification, like Alertmanager's.",
           _HMAC_HEADERS),
    Source("sns", "/alerts/sns", SnsMessage, normalise.from_sns,
           "AWS SNS HTTP(S) subscription",
           "CloudWatch alarms, EventBridge events (AWS Health) and other notifications; the message "
           "signature is verified; a SubscriptionConfirmation is confirmed by the outbox.", ()),
    Source("pagerduty", "/alerts/pagerduty", PagerDutyWebhook, normalise.from_pagerduty,
           "PagerDuty v3 webhook",
           "Signed with X-PagerDuty-Signature. incident.triggered/reopened open or join an incident, "
           "incident.resolved resolves it, other incident events are recorded on it.",
           ("x-pagerduty-signature",)),
    Source("generic", "/alerts/generic", GenericAlert, normalise.from_generic,
           "Generic alert (logs, SIEM, anomaly detection, internal controls)",
           "The documented JSON format of docs/intake.md; unknown keys are rejected.", _HMAC_HEADERS),
    Source("report", "/reports", Report, normalise.from_report,
           "Report a suspected incident (policy §8)",
           "A Client or an employee reports suspicious activity; it is routed by its category.", _HMAC_HEADERS),
)}

_ERRORS = {
    "401": {"description": "Unauthenticated (whatever the reason).", "model": ErrorBody},
    "413": {"description": "Body larger than IRP_WEBHOOK_MAX_BODY_BYTES.", "model": ErrorBody},
    "422": {"description": "Invalid JSON or payload; `errors` give each field path.", "model": ErrorBody},
    "503": {"description": "The journal or SNS certificate is unavailable, or too many unverified bodies are "
                           "being read: retry later.", "model": ErrorBody},
}


class _TooLarge(Exception):
    pass


def _json(content: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    """A JSON response rendered by orjson: the same bytes as Starlette's JSONResponse (compact, UTF-8), faster."""
    return Response(orjson.dumps(content), status_code=status, headers=headers, media_type="application/json")


def _error(status: int, detail: str, errors: list[tuple[str, str]] | None = None,
           headers: dict[str, str] | None = None) -> Response:
    body = {"detail": detail, "errors": [{"path": p, "message": m} for p, m in (errors or [])]}
    return _json(body, status, headers)


_DIGITS = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBER = b"0" * 19  # 19 digits in a row: maybe an integer beyond 64 bits


def _parse(body: bytes) -> Any:
    """The JSON document, as `json.loads` reads it (errors worded by it too), mostly parsed by orjson (4x faster).

    orjson refuses what the standard parser tolerates (NaN, a BOM, lone surrogates, 1e400): those
    go to `json.loads`. It reads integers beyond 64 bits as floats: bodies with 19 digits in a row
    go to `json.loads` too, so every number keeps its exact value.
    """
    if body.translate(_DIGITS).find(_LONG_NUMBER) < 0:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return json.loads(body)


def _depth_ok(document: Any, body: bytes) -> bool:
    if body.count(b"[") + body.count(b"{") <= MAX_DEPTH:  # cannot nest deeper than it has brackets
        return True
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return False
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return True


class BodyError(ValueError):
    """Raised when a request body is not a JSON object of its source's payload: `reason` labels the rejection."""

    def __init__(self, reason: str, detail: str, errors: list[tuple[str, str]] | None = None,
                 message: str | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.errors = errors or []
        ValueError.__init__(self, message or detail)


class InvalidPayload(BodyError, PayloadError):
    """Raised when the body is a JSON object but not the source's payload (its model lists the errors)."""


def read_payload(source: Source, body: bytes) -> tuple[dict[str, Any], Any]:
    """(document, payload) of a body as `source` sends it: JSON, an object, nested at most MAX_DEPTH, the model's."""
    try:
        document = _parse(body)
    except RecursionError:
        raise BodyError("invalid_json", "invalid JSON: nested too deeply", message="nested too deeply") from None
    except ValueError as exc:
        raise BodyError("invalid_json", f"invalid JSON: {exc}", [("", str(exc))], message=str(exc)) from None
    if not isinstance(document, dict):
        kind = type(document).__name__
        raise BodyError("invalid_json", "expected a JSON object", [("", f"expected an object, got {kind}")],
                        message=f"expected a JSON object, got {kind}")
    if not _depth_ok(document, body):
        raise BodyError("invalid_payload", f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        return document, source.model.model_validate(document)
    except ValidationError as exc:
        raise InvalidPayload("invalid_payload", f"invalid {source.name} payload", field_errors(exc)) from None


def alerts_in(source: Source, body: bytes) -> list[tuple[Alert, str]]:
    """The alerts of a body as `source` sends it, normalised: (alert, event). No authentication, no routing.

    BodyError when it is not the source's payload (InvalidPayload, a PayloadError, when the model refuses it).
    """
    document, payload = read_payload(source, body)
    if isinstance(payload, SnsMessage) and payload.Type != "Notification":
        return []  # a subscription message: confirmed, not routed
    return source.normalise(payload, document)


def _local_refusal(request: Request, alert: bool) -> tuple[str, int, str] | None:
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


async def _read_body(request: Request, limit: int) -> bytes:
    """The body from the ASGI messages (most alerts come in one); _TooLarge as soon as it passes `limit`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class _Handlers:
    def __init__(self, service) -> None:
        self.service = service

    def reject(self, source: str, reason: str, status: int, detail: str,
               errors: list[tuple[str, str]] | None = None, headers: dict[str, str] | None = None) -> Response:
        metrics = self.service.metrics
        metrics.child(metrics.rejected, source, reason).inc()
        return _error(status, detail, errors, headers)

    def unauthenticated(self, source: str, reason: str = "unauthenticated") -> Response:
        return self.reject(source, reason, 401, "unauthenticated", headers={"WWW-Authenticate": "Bearer"})

    def too_large(self, source: str, limit: int) -> Response:
        """413; the connection stays open: the server reads and drops the rest of the body (bounded), so a
        sender still sending reads this answer instead of a connection reset."""
        return self.reject(source, "too_large", 413, f"request body larger than {limit} bytes")

    async def ingest(self, source: Source, request: Request) -> Response:
        started = time.perf_counter()
        service = self.service
        name = source.name
        limit = service.settings.webhook_max_body_bytes
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            return self.too_large(name, limit)
        auth = service.auth.before_body(name, request.headers)  # a bearer token is checked before any body byte
        if auth is None:
            return self.unauthenticated(name)
        if auth.method == "local" and (refusal := _local_refusal(request, alert=True)):
            return self.reject(name, *refusal)
        reserved = 0
        if auth is PENDING:  # only the body can tell: it counts against what unverified requests may hold
            reserved = min(int(length), limit) if length.isdigit() else limit
            if not service.unverified.take(reserved):
                return self.reject(name, "busy", 503, "too many unverified request bodies being read now; retry",
                                   headers={"Retry-After": "5"})
        try:
            body = await _read_body(request, limit)
            if auth is PENDING and not service.auth.wants_sns(name):
                auth = service.auth.check(name, request.headers, body)
        except _TooLarge:
            return self.too_large(name, limit)
        except ClientDisconnect:
            return self.reject(name, "client_disconnected", 400, "client disconnected")
        finally:
            service.unverified.give(reserved)
        if auth is None:
            return self.unauthenticated(name)
        try:
            document, payload = read_payload(source, body)
        except BodyError as exc:
            return self.reject(name, exc.reason, 422, exc.detail, exc.errors)

        delivery_key = auth.delivery_key if auth else None
        repeat = "reject"
        confirm_url = None
        try:
            if isinstance(payload, SnsMessage):
                if service.auth.wants_sns(name):
                    try:
                        authentic = await service.sns.verify(payload)
                    except CertificateUnavailable as exc:
                        log.warning("SNS: %s", exc)
                        return _error(503, "cannot fetch the SNS signing certificate now; retry",
                                      headers={"Retry-After": "30"})
                    if not authentic:
                        return self.unauthenticated(name)
                delivery_key, repeat = f"sns:{payload.TopicArn}:{payload.MessageId}", "same"
                if payload.Type == "Notification":
                    alerts = source.normalise(payload, document)
                else:
                    alerts = []
                    if payload.Type == "SubscriptionConfirmation":
                        if not service.sns.allowed_url(payload.SubscribeURL):
                            return self.reject(name, "invalid_payload", 422, "SubscribeURL is not an allowed SNS URL",
                                               [("SubscribeURL", "must be https on a host matching "
                                                                 "IRP_SNS_HOST_PATTERN")])
                        confirm_url = payload.SubscribeURL
            else:
                if isinstance(payload, PagerDutyWebhook) and delivery_key is None:
                    delivery_key, repeat = f"pagerduty:{payload.event.id}", "same"
                alerts = source.normalise(payload, document)
        except PayloadError as exc:
            return self.reject(name, "invalid_payload", 422, f"invalid {name} payload", exc.errors)
        except ValidationError as exc:
            return self.reject(name, "invalid_payload", 422, f"invalid {name} payload", field_errors(exc))

        routed = [(alert, service.router.route(alert), event) for alert, event in alerts]
        delivery = AlertDelivery(source=name, body=body, alerts=routed, delivery_key=delivery_key, repeat=repeat,
                            confirm_url=confirm_url)
        try:
            result: AcceptResult = await service.journal.accept_async(delivery)
        except JournalError as exc:
            log.error("journal: %s", exc)
            return _error(503, "the journal cannot record alerts now; retry", headers={"Retry-After": "10"})
        if result.replay:
            return self.unauthenticated(name, "replay")
        metrics = service.metrics
        if not result.repeat_delivery:
            metrics.child(metrics.accepted, name).inc(len(result.outcomes))
            self.count(name, result.outcomes)
        response = self.accepted(result)
        metrics.child(metrics.ack_latency, name).observe(time.perf_counter() - started)
        return response

    def count(self, name: str, outcomes: list[AlertDecision]) -> None:
        metrics = self.service.metrics
        child = metrics.child
        for outcome in outcomes:
            if outcome.deduplicated:
                child(metrics.deduplicated, name).inc()
            elif outcome.outcome == "unrouted":
                child(metrics.unrouted, name).inc()
            elif outcome.outcome == "new_incident":
                child(metrics.incidents, name, outcome.incident_type).inc()

    def replay_unrouted(self, source: str | None, fingerprint: str | None) -> dict:
        """Route the listed unrouted alerts again with the routing in force; accept those it now matches,
        once each (the replay's delivery key is the alert's last delivery), and stop listing them."""
        service = self.service
        journal, router = service.journal, service.router
        replayed, still_unrouted, purged = [], 0, 0
        for row in journal.unrouted(1000):
            if source not in (None, row["source"]) or fingerprint not in (None, row["fingerprint"]):
                continue
            stored = journal.delivery_body(row["last_delivery_id"])
            if stored is None:
                purged += 1
                continue
            name, body = stored
            try:
                alerts = [(alert, router.route(alert), event) for alert, event in alerts_in(SOURCES[name], body)
                          if alert.fingerprint == row["fingerprint"]]
            except (ValueError, KeyError) as exc:  # recorded by an older version that read it differently
                log.warning("unrouted alert %s of delivery %s cannot be read again: %s",
                            row["fingerprint"], row["last_delivery_id"], exc)
                alerts = []
            if not alerts or any(routed is None for _, routed, _ in alerts):
                still_unrouted += 1
                continue
            delivery = AlertDelivery(source=name, body=body, alerts=alerts, repeat="same",
                                delivery_key=f"replay:{row['last_delivery_id']}:{row['fingerprint']}",
                                replays=(row["source"], row["fingerprint"], row["last_delivery_id"]))
            result = journal.accept(delivery).result()
            if not result.repeat_delivery:
                self.count(name, result.outcomes)
            for outcome in result.outcomes:
                replayed.append({**self.outcome(outcome), "source": row["source"], "delivery_id": result.delivery_id,
                                 "replayed_delivery_id": row["last_delivery_id"]})
        return {"routing_sha256": router.sha256, "replayed": replayed, "still_unrouted": still_unrouted,
                "purged": purged}

    def outcome(self, outcome: AlertDecision) -> dict:
        return {**vars(outcome), "ui_url": self.service.run_url(outcome.flow_run_id)}

    def accepted(self, result: AcceptResult, status: int = 202) -> Response:
        return _json({"delivery_id": result.delivery_id, "repeat_delivery": result.repeat_delivery,
                      "alerts": [self.outcome(outcome) for outcome in result.outcomes]}, status)

    def reader_refusal(self, request: Request) -> Response | None:
        """None when the caller may read the journal: the bearer token, or --local without a token
        and a request from this machine; else the answer (401, 403)."""
        auth = self.service.auth
        if auth.local and not auth.configured("token"):
            refusal = _local_refusal(request, alert=False)
            return self.reject("", *refusal) if refusal else None
        return None if auth.check_token(request.headers) else self.unauthenticated("")


class _AlertPosts:
    """ASGI middleware: a POST to an alert path goes straight to its handler, past the routers, the
    exception middleware and FastAPI's endpoint wrapper (a tenth of the request's CPU); the rest goes
    on to the app, whose routes answer the same (other methods: 405). It sits inside
    ServerErrorMiddleware: a bug still answers 500."""

    def __init__(self, app: ASGIApp, handlers: _Handlers) -> None:
        self.app = app
        self.handlers = handlers
        self.sources = {source.path: source for source in SOURCES.values()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            source = self.sources.get(scope["path"])
            if source is not None:
                response = await self.handlers.ingest(source, Request(scope, receive))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _make_endpoint(handlers: _Handlers, source: Source):
    async def endpoint(request: Request) -> Response:
        return await handlers.ingest(source, request)

    endpoint.__name__ = f"post_{source.name}"
    endpoint.__doc__ = source.description
    return endpoint


def _openapi_extra(source: Source) -> dict:
    extra: dict[str, Any] = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{source.model.__name__}"}}},
        },
    }
    if source.headers:
        extra["parameters"] = [
            {"name": header, "in": "header", "required": False, "schema": {"type": "string"}}
            for header in source.headers
        ]
    return extra


def create_app(service) -> Starlette:
    """The ASGI app: the alert POSTs straight to their handler (the hot path), the rest from FastAPI.

    `service` (an IntakeService) is started and stopped with the app.
    """
    handlers = _Handlers(service)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        service.start()
        try:
            yield
        finally:
            service.stop()

    return Starlette(routes=[Mount("/", app=create_api(service))], lifespan=lifespan,
                     middleware=[Middleware(_AlertPosts, handlers=handlers)])


def create_api(service=None) -> FastAPI:
    """The FastAPI app: every operation, documented (its POST routes serve when mounted alone)."""
    app = FastAPI(
        title="irp alert intake",
        version="1",
        description="Alerts and reports in, incident runs out (Confluent Digital incident-response policy §4, §8). "
                    "See docs/intake.md.",
        docs_url=None,
        redoc_url=None,
    )
    handlers = _Handlers(service)

    for source in SOURCES.values():
        app.add_api_route(
            source.path, _make_endpoint(handlers, source), methods=["POST"], status_code=202,
            summary=source.summary, description=source.description, response_model=Accepted,
            responses=_ERRORS, openapi_extra=_openapi_extra(source), tags=["alerts"],
        )

    @app.post("/alerts/{source}", include_in_schema=False)
    async def unknown_source(source: str) -> Response:
        valid = ", ".join(s.path for s in SOURCES.values())
        return handlers.reject("", "unknown_source", 404, f"unknown source {source[:100]!r}; valid: {valid}")

    @app.get("/healthz", response_model=Health, tags=["operations"], responses={503: {"model": Health}})
    def healthz(request: Request) -> Response:
        """Alive and able to read the journal; `degraded` while the outbox has failing items or the
        routing file on disk has problems (the routes loaded before stay in force). Without the bearer
        token only `status` is given: the journal, the routing file and errors are for operators."""
        service = handlers.service
        detailed = service.auth.check_token(request.headers)
        try:
            backlog = service.journal.backlog()
            last_error = service.journal.last_error()
        except Exception as exc:
            if not detailed:
                return JSONResponse({"status": "degraded"}, 503)
            return JSONResponse({"status": "degraded", "last_error": f"journal unreadable: {type(exc).__name__}"},
                                503)
        router, problems = service.router, service.routing_problems
        status = "degraded" if last_error or problems else "ok"
        if not detailed:
            return JSONResponse({"status": status})
        routing = {"file": str(service.routing_file), "sha256": router.sha256, "routes": len(router.routing.routes),
                   "loaded_at": datetime.fromtimestamp(service.routing_loaded_at, UTC).isoformat(),
                   "problems": problems}
        return JSONResponse({"status": status, "journal": service.journal.location, "backlog": backlog,
                             "last_error": last_error, "routing": routing})

    @app.get("/metrics", tags=["operations"], response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, 503: {"model": ErrorBody}})
    def metrics() -> Response:
        """Prometheus metrics."""
        service = handlers.service
        try:
            backlog = service.journal.backlog()
        except JournalError as exc:
            return _error(503, f"journal unreadable: {exc}")
        body = service.metrics.render(backlog)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/alerts/unrouted", response_model=list[UnroutedAlert], tags=["operations"],
             responses={"401": _ERRORS["401"]})
    def unrouted(request: Request, limit: int = 100) -> Response:
        """Alerts no route matched, most recent first (bearer token required)."""
        if refusal := handlers.reader_refusal(request):
            return refusal
        rows = handlers.service.journal.unrouted(max(1, min(limit, 1000)))
        for row in rows:
            for key in ("first_seen", "last_seen"):
                row[key] = datetime.fromtimestamp(row[key], UTC).isoformat()
        return JSONResponse(rows)

    @app.post("/alerts/unrouted/replay", response_model=Replayed, tags=["operations"],
              responses={"401": _ERRORS["401"], "503": {"model": ErrorBody}})
    def replay_unrouted(request: Request, source: str | None = None, fingerprint: str | None = None) -> Response:
        """Route the unrouted alerts again (after an edit of routing.yaml): those a route now matches are
        accepted as if they had just come, once each, and leave the list (bearer token required). Up to
        1,000 alerts per call; `source` and `fingerprint` pick some."""
        if refusal := handlers.reader_refusal(request):
            return refusal
        try:
            return JSONResponse(handlers.replay_unrouted(source, fingerprint))
        except JournalError as exc:
            log.error("journal: %s", exc)
            return _error(503, "the journal cannot record alerts now; retry", headers={"Retry-After": "10"})

    @app.get("/deliveries/{delivery_id}", response_model=Accepted, tags=["operations"],
             responses={"401": _ERRORS["401"], "404": {"model": ErrorBody}})
    def delivery(request: Request, delivery_id: str) -> Response:
        """What became of an accepted request: incident ids and flow runs (bearer token required)."""
        if refusal := handlers.reader_refusal(request):
            return refusal
        result = handlers.service.journal.delivery(delivery_id[:100])
        if result is None:
            return _error(404, "no such delivery")
        return handlers.accepted(result, status=200)

    original = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        _, defs = models_json_schema([(s.model, "validation") for s in SOURCES.values()],
                                     ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {}).update(defs.get("$defs", {}))
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
    return app


def openapi_spec() -> dict:
    """The OpenAPI document (committed as docs/openapi.json)."""
    return create_api(None).openapi()
