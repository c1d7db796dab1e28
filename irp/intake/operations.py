"""The intake's operations endpoints: health, metrics, unrouted alerts and their replay, deliveries.

Health tells a stranger only ok or degraded; the journal's contents need the bearer token (or,
with --local and no token, a request from this machine).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from irp.intake.http import error_response
from irp.intake.journal import JournalError
from irp.intake.payloads import Accepted, ErrorBody, Health, Replayed, UnroutedAlert

__all__ = ["ERRORS", "operations_router"]

log = logging.getLogger("irp.intake")

ERRORS = {
    "401": {"description": "Unauthenticated (whatever the reason).", "model": ErrorBody},
    "413": {"description": "Body larger than IRP_WEBHOOK_MAX_BODY_BYTES.", "model": ErrorBody},
    "422": {"description": "Invalid JSON or payload; `errors` give each field path.", "model": ErrorBody},
    "503": {"description": "The journal or SNS certificate is unavailable, or too many unverified bodies are "
                           "being read: retry later.", "model": ErrorBody},
}


def operations_router(handlers) -> APIRouter:
    """The operations routes, answered through `handlers` (the app's request handlers)."""
    router = APIRouter()

    @router.get("/healthz", response_model=Health, tags=["operations"], responses={503: {"model": Health}})
    def healthz(request: Request) -> Response:
        """Alive and able to read the journal; `degraded` while the outbox has failing items, an accepted
        alert's run has waited longer than IRP_INTAKE_BACKLOG_MAX_AGE_SECONDS to be created or started, or the
        routing file on disk has problems (the routes loaded before stay in force). Without the bearer token
        only `status` is given: the journal, the backlog, the routing file and errors are for operators."""
        service = handlers.service
        return _health(service, service.auth.check_token(request.headers))

    @router.get("/metrics", tags=["operations"], response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, 503: {"model": ErrorBody}})
    def metrics() -> Response:
        """Prometheus metrics."""
        service = handlers.service
        try:
            backlog = service.backlog.read()
        except JournalError as exc:
            return error_response(503, f"journal unreadable: {exc}")
        body = service.metrics.render(backlog)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    @router.get("/alerts/unrouted", response_model=list[UnroutedAlert], tags=["operations"],
             responses={"401": ERRORS["401"]})
    def unrouted(request: Request, limit: int = 100) -> Response:
        """Alerts no route matched, most recent first (bearer token required)."""
        if refusal := handlers.reader_refusal(request):
            return refusal
        rows = handlers.service.journal.unrouted(max(1, min(limit, 1000)))
        for row in rows:
            for key in ("first_seen", "last_seen"):
                row[key] = datetime.fromtimestamp(row[key], UTC).isoformat()
        return JSONResponse(rows)

    @router.post("/alerts/unrouted/replay", response_model=Replayed, tags=["operations"],
              responses={"401": ERRORS["401"], "503": {"model": ErrorBody}})
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
            return error_response(503, "the journal cannot record alerts now; retry", headers={"Retry-After": "10"})

    @router.get("/deliveries/{delivery_id}", response_model=Accepted, tags=["operations"],
             responses={"401": ERRORS["401"], "404": {"model": ErrorBody}})
    def delivery(request: Request, delivery_id: str) -> Response:
        """What became of an accepted request: incident ids and flow runs (bearer token required)."""
        if refusal := handlers.reader_refusal(request):
            return refusal
        result = handlers.service.journal.delivery(delivery_id[:100])
        if result is None:
            return error_response(404, "no such delivery")
        return handlers.accepted(result, status=200)

    return router


def _health(service, detailed: bool) -> Response:
    """The /healthz answer: ok or degraded, with the journal, backlog, routing file and errors when `detailed`."""
    try:
        backlog = service.backlog.read()
        last_error = service.journal.last_error()
    except Exception as exc:
        if not detailed:
            return JSONResponse({"status": "degraded"}, 503)
        return JSONResponse({"status": "degraded", "last_error": f"journal unreadable: {type(exc).__name__}"},
                            503)
    router, problems = service.router, service.routing_problems
    late = backlog.too_old(service.settings.intake_backlog_max_age_seconds)
    status = "degraded" if last_error or problems or late else "ok"
    if not detailed:
        return JSONResponse({"status": status})
    routing = {"file": str(service.routing_file), "sha256": router.sha256, "routes": len(router.routing.routes),
               "loaded_at": datetime.fromtimestamp(service.routing_loaded_at, UTC).isoformat(),
               "problems": problems}
    waiting = None if backlog.runs_waiting is None else {
        "count": backlog.runs_waiting, "oldest_seconds": round(backlog.runs_waiting_age or 0.0, 1)}
    return JSONResponse({"status": status, "journal": service.journal.location, "backlog": backlog.items,
                         "backlog_age_seconds": {k: round(v, 1) for k, v in backlog.ages.items()},
                         "runs_waiting": waiting, "late": late, "last_error": last_error, "routing": routing})
