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

import logging
import time
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import ValidationError
from pydantic.json_schema import models_json_schema
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from irp.errors import field_errors
from irp.intake.approvals import approvals_router
from irp.intake.auth import PENDING
from irp.intake.http import BodyTooLarge, error_response, json_response, local_refusal, read_body
from irp.intake.journal import AcceptResult, AlertDecision, AlertDelivery, JournalError
from irp.intake.normalise import PayloadError
from irp.intake.operations import ERRORS, operations_router
from irp.intake.payloads import Accepted, PagerDutyWebhook, SnsMessage
from irp.intake.sns import CertificateUnavailable
from irp.intake.sources import SOURCES, BodyError, Source, alerts_in, read_payload

__all__ = ["create_api", "create_app", "openapi_spec"]

log = logging.getLogger("irp.intake")


class _Read(NamedTuple):
    """The alerts of a request and how to recognise its redelivery."""

    alerts: list
    delivery_key: str | None
    repeat: str = "reject"
    confirm_url: str | None = None


class _Handlers:
    def __init__(self, service) -> None:
        self.service = service

    def reject(self, source: str, reason: str, status: int, detail: str,
               errors: list[tuple[str, str]] | None = None, headers: dict[str, str] | None = None) -> Response:
        metrics = self.service.metrics
        metrics.child(metrics.rejected, source, reason).inc()
        return error_response(status, detail, errors, headers)

    def unauthenticated(self, source: str, reason: str = "unauthenticated") -> Response:
        return self.reject(source, reason, 401, "unauthenticated", headers={"WWW-Authenticate": "Bearer"})

    def too_large(self, source: str, limit: int) -> Response:
        """413; the connection stays open: the server reads and drops the rest of the body (bounded), so a
        sender still sending reads this answer instead of a connection reset."""
        return self.reject(source, "too_large", 413, f"request body larger than {limit} bytes")

    async def ingest(self, source: Source, request: Request) -> Response:
        """One alert POST: authenticated body, payload, alerts, journal; 202 once the journal has them."""
        started = time.perf_counter()
        got = await self._body(source, request)
        if isinstance(got, Response):
            return got
        body, auth = got
        try:
            document, payload = read_payload(source, body)
        except BodyError as exc:
            return self.reject(source.name, exc.reason, 422, exc.detail, exc.errors)
        read = await self._alerts(source, payload, document, auth.delivery_key if auth else None)
        if isinstance(read, Response):
            return read
        return await self._accept(source.name, body, read, started)

    async def _body(self, source: Source, request: Request) -> tuple[bytes, Any] | Response:
        """(body, auth) once the caller is authenticated and the body is read within its limits, else the answer."""
        service, name = self.service, source.name
        limit = service.settings.webhook_max_body_bytes
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            return self.too_large(name, limit)
        auth = service.auth.before_body(name, request.headers)  # a bearer token is checked before any body byte
        if auth is None:
            return self.unauthenticated(name)
        if auth.method == "local" and (refusal := local_refusal(request, alert=True)):
            return self.reject(name, *refusal)
        reserved = 0
        if auth is PENDING:  # only the body can tell: it counts against what unverified requests may hold
            reserved = min(int(length), limit) if length.isdigit() else limit
            if not service.unverified.take(reserved):
                return self.reject(name, "busy", 503, "too many unverified request bodies being read now; retry",
                                   headers={"Retry-After": "5"})
        try:
            body = await read_body(request, limit)
            if auth is PENDING and not service.auth.wants_sns(name):
                auth = service.auth.check(name, request.headers, body)
        except BodyTooLarge:
            return self.too_large(name, limit)
        except ClientDisconnect:
            return self.reject(name, "client_disconnected", 400, "client disconnected")
        finally:
            service.unverified.give(reserved)
        return self.unauthenticated(name) if auth is None else (body, auth)

    async def _alerts(self, source: Source, payload: Any, document: dict, delivery_key: str | None
                      ) -> _Read | Response:
        """The alerts of a payload with how to recognise its redelivery; SNS messages verified and confirmed."""
        name = source.name
        try:
            if isinstance(payload, SnsMessage):
                return await self._sns(source, payload, document)
            if isinstance(payload, PagerDutyWebhook) and delivery_key is None:
                return _Read(source.normalise(payload, document), f"pagerduty:{payload.event.id}", "same")
            return _Read(source.normalise(payload, document), delivery_key)
        except PayloadError as exc:
            return self.reject(name, "invalid_payload", 422, f"invalid {name} payload", exc.errors)
        except ValidationError as exc:
            return self.reject(name, "invalid_payload", 422, f"invalid {name} payload", field_errors(exc))

    async def _sns(self, source: Source, payload: SnsMessage, document: dict) -> _Read | Response:
        service, name = self.service, source.name
        if service.auth.wants_sns(name):
            try:
                authentic = await service.sns.verify(payload)
            except CertificateUnavailable as exc:
                log.warning("SNS: %s", exc)
                return error_response(503, "cannot fetch the SNS signing certificate now; retry",
                                      headers={"Retry-After": "30"})
            if not authentic:
                return self.unauthenticated(name)
        key = f"sns:{payload.TopicArn}:{payload.MessageId}"
        if payload.Type == "Notification":
            return _Read(source.normalise(payload, document), key, "same")
        if payload.Type == "SubscriptionConfirmation":
            if not service.sns.allowed_url(payload.SubscribeURL):
                return self.reject(name, "invalid_payload", 422, "SubscribeURL is not an allowed SNS URL",
                                   [("SubscribeURL", "must be https on a host matching IRP_SNS_HOST_PATTERN")])
            return _Read([], key, "same", payload.SubscribeURL)
        return _Read([], key, "same")

    async def _accept(self, name: str, body: bytes, read: _Read, started: float) -> Response:
        service = self.service
        routed = service.router.route_all(read.alerts)
        delivery = AlertDelivery(source=name, body=body, alerts=routed, delivery_key=read.delivery_key,
                                 repeat=read.repeat, confirm_url=read.confirm_url)
        try:
            result: AcceptResult = await service.journal.accept_async(delivery)
        except JournalError as exc:
            log.error("journal: %s", exc)
            return error_response(503, "the journal cannot record alerts now; retry", headers={"Retry-After": "10"})
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
                alerts = router.route_all((alert, event) for alert, event in alerts_in(SOURCES[name], body)
                                          if alert.fingerprint == row["fingerprint"])
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
        return json_response({"delivery_id": result.delivery_id, "repeat_delivery": result.repeat_delivery,
                      "alerts": [self.outcome(outcome) for outcome in result.outcomes]}, status)

    def reader_refusal(self, request: Request) -> Response | None:
        """None when the caller may read the journal: the bearer token, or --local without a token
        and a request from this machine; else the answer (401, 403)."""
        auth = self.service.auth
        if auth.local and not auth.configured("token"):
            refusal = local_refusal(request, alert=False)
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
            responses=ERRORS, openapi_extra=_openapi_extra(source), tags=["alerts"],
        )

    @app.post("/alerts/{source}", include_in_schema=False)
    async def unknown_source(source: str) -> Response:
        valid = ", ".join(s.path for s in SOURCES.values())
        return handlers.reject("", "unknown_source", 404, f"unknown source {source[:100]!r}; valid: {valid}")

    app.include_router(operations_router(handlers))
    app.include_router(approvals_router(handlers))

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
