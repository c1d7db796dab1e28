"""The approval pages: `GET /approvals/{token}` shows what is to be decided, `POST` records the decision.

A GET changes nothing (a mail scanner may open the link). A POST with a decision and a reason uses
the link once (the journal records its id) and resumes the paused run with the decision and the
link, which the run checks again and counts as verified for the link's identity. A forged,
altered, expired or replayed link gets 403 and the same few words whatever the reason; the reason
goes to the incident's audit log (or, when the token cannot be trusted to name an incident, to
the intake's log). A link to a run that ended, or a step that no longer waits, says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from urllib.parse import parse_qs
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment
from starlette.concurrency import run_in_threadpool

from irp import audit
from irp.approval_links import LinkClaims, LinkError, read
from irp.errors import ConfigurationError
from irp.evidence import open_store
from irp.intake.journal import JournalError

__all__ = ["PrefectRuns", "RunState", "approvals_router"]

log = logging.getLogger("irp.intake")

_MAX_FORM = 8 * 1024
_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"}

_PAGE = Environment(autoescape=True).from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>irp · {{ title }}</title>
<style>body{font:16px/1.45 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#1b1b1b}
pre{background:#f4f4f4;padding:1rem;overflow:auto;white-space:pre-wrap}.who{color:#555}
textarea{width:100%;min-height:6rem}button{font-size:1rem;padding:.5rem 1.2rem;margin-top:1rem}
.error{color:#a00}fieldset{border:1px solid #ccc}</style></head><body>
<h1>{{ title }}</h1>
{% if message %}<p{% if error %} class="error"{% endif %}>{{ message }}</p>{% endif %}
{% if claims %}
<p class="who">Personal link of <strong>{{ claims.identity }}</strong> · incident <strong>{{ claims.incident_id }}</strong>
· step <strong>{{ claims.step }}</strong> ({{ claims.stage }}) · action <code>{{ claims.action }}</code></p>
{% endif %}
{% if description %}<pre>{{ description }}</pre>{% endif %}
{% if form %}
<form method="post">
<fieldset><legend>Your decision</legend>
{% for value, label in [("approve", "Approve: run the step"), ("reject", "Reject: skip it")] %}
<label><input type="radio" name="decision" value="{{ value }}"{% if decision == value %} checked{% endif %}>
 {{ label }}</label><br>
{% endfor %}
</fieldset>
<p><label for="reason">Reason (recorded in the incident's timeline and audit log)</label><br>
<textarea id="reason" name="reason" maxlength="2000" required>{{ reason }}</textarea></p>
<button type="submit">Record my decision</button>
</form>
<p class="who">Opening this page changed nothing. The link works once, until {{ expires }}.</p>
{% endif %}
</body></html>""")


def _page(status: int, title: str, message: str = "", *, error: bool = False, **context) -> HTMLResponse:
    return HTMLResponse(_PAGE.render(title=title, message=message, error=error, **context), status,
                        headers=_HEADERS)


_REFUSED = ("This link cannot be used", "Ask the incident's responders for a new request if a decision is still needed.")


@dataclass(frozen=True)
class RunState:
    """Where a flow run is, as the approval pages need it."""

    kind: Literal["paused", "running", "ended", "missing"]
    pause_key: str = ""
    name: str = ""


class PrefectRuns:
    """The Prefect server's side of the approval pages and of the backlog (the I/O edge tests replace)."""

    def waiting(self, tag: str = "irp-intake") -> tuple[int, datetime | None] | None:
        """Runs created by the intake that no worker has started yet (Scheduled, Late…), and since when the
        oldest of them was due; None without a Prefect server configured (never a temporary one)."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
            FlowRunFilterTags,
        )
        from prefect.client.schemas.objects import StateType
        from prefect.client.schemas.sorting import FlowRunSort
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            return None
        due = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
                            tags=FlowRunFilterTags(all_=[tag]))
        with get_client(sync_client=True) as client:
            count = client.count_flow_runs(flow_run_filter=due)
            oldest = client.read_flow_runs(flow_run_filter=due, sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=1)
        return count, (oldest[0].expected_start_time if oldest else None)

    def state(self, flow_run_id: str) -> RunState:
        from prefect.client.orchestration import get_client
        from prefect.exceptions import ObjectNotFound

        try:
            with get_client(sync_client=True) as client:
                run = client.read_flow_run(UUID(flow_run_id))
        except (ObjectNotFound, ValueError):
            return RunState("missing")
        state = run.state
        if state is None:
            return RunState("running")
        if state.is_paused():
            return RunState("paused", state.state_details.pause_key or "", state.name or "")
        if state.is_final():
            return RunState("ended", name=state.name or state.type.value)
        return RunState("running", name=state.name or "")

    def description(self, flow_run_id: str, pause_key: str) -> str:
        """The text the paused run shows for this pause (the approval form's description)."""
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            text = client.read_flow_run_input(UUID(flow_run_id), f"paused-{pause_key}-description")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        return value if isinstance(value, str) else ""

    def resume(self, flow_run_id: str, run_input: dict) -> None:
        from prefect.flow_runs import resume_flow_run

        resume_flow_run(UUID(flow_run_id), run_input=run_input)


def _refuse(service, token: str, exc: LinkError | None, why: str, claims: LinkClaims | None, request: Request) -> Response:
    """403 with no detail; the reason to the incident's audit log when the token names it genuinely."""
    metrics = service.metrics
    metrics.child(metrics.rejected, "approvals", why).inc()
    client = request.client.host if request.client else "?"
    claims = claims or (exc.claims if exc else None)
    reason = exc.reason if exc else why
    if claims is not None:
        audit.record(open_store(service.settings.evidence_url), claims.incident_id, "approval_link_refused",
                     actor=claims.identity, strict=False,
                     details={"reason": reason, "step": claims.step, "stage": claims.stage, "link_id": claims.jti,
                              "flow_run_id": claims.flow_run_id, "client": client})
    else:
        log.warning("approval link refused (%s) from %s: token sha256 %s", reason, client,
                    hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()[:16])
    return _page(403, _REFUSED[0], _REFUSED[1], error=True)


def _where(service, claims: LinkClaims) -> tuple[Response | None, RunState]:
    """The page to show when the run no longer waits for this gate, else None; and the run's state."""
    try:
        state = service.runs.state(claims.flow_run_id)
    except Exception as exc:  # noqa: BLE001 (the Prefect server down: the decision can wait)
        log.warning("approval page: cannot read flow run %s: %s", claims.flow_run_id, exc)
        return _page(503, "Try again in a minute", "irp cannot reach its Prefect server now; nothing was recorded.",
                     error=True, claims=claims), RunState("missing")
    if state.kind in ("ended", "missing"):
        ended = f"ended ({state.name})" if state.kind == "ended" else "no longer exists"
        return _page(410, "This response run has ended",
                     f"The run of incident {claims.incident_id} {ended}: there is nothing left to decide for step "
                     f"{claims.step}. Nothing was recorded.", claims=claims), state
    if state.kind != "paused" or not re.fullmatch(rf"{re.escape(claims.gate)}-[0-9]+", state.pause_key):
        return _page(409, "This step does not wait for a decision now",
                     f"Step {claims.step} of incident {claims.incident_id} is not waiting for approval at the moment "
                     "(it was decided, timed out, or the run is between two waits). Nothing was recorded; if it asks "
                     "again you will get a new message.", claims=claims), state
    return None, state


def _description(service, claims: LinkClaims, state: RunState) -> str:
    try:
        return service.runs.description(claims.flow_run_id, state.pause_key)
    except Exception:  # noqa: BLE001 (the page still shows what the link says)
        return ""


def approvals_router(handlers) -> APIRouter:
    """The approval pages, answered with the intake's service (journal, settings, Prefect runs)."""
    router = APIRouter()
    responses = {403: {"description": "Forged, altered, expired or used link (no detail).",
                       "content": {"text/html": {}}},
                 409: {"description": "The step does not wait for a decision now.", "content": {"text/html": {}}},
                 410: {"description": "The run has ended.", "content": {"text/html": {}}}}

    @router.get("/approvals/{token}", tags=["approvals"], response_class=HTMLResponse, responses=responses)
    def approval_page(token: str, request: Request, decision: str = "") -> Response:
        """The page of a personal approval link: what is to be decided and a form. Changes nothing."""
        claims = _claims(handlers.service, token, request)
        if isinstance(claims, Response):
            return claims
        page, state = _where(handlers.service, claims)
        if page is not None:
            return page
        return _page(200, f"Decide: {claims.action}", claims=claims, form=True,
                     decision=decision if decision in ("approve", "reject") else "", reason="",
                     description=_description(handlers.service, claims, state), expires=_when(claims.exp))

    @router.post("/approvals/{token}", tags=["approvals"], response_class=HTMLResponse,
                 responses={**responses, 422: {"description": "No decision or no reason.", "content": {"text/html": {}}}},
                 openapi_extra={"requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {
                     "schema": {"type": "object", "required": ["decision", "reason"], "properties": {
                         "decision": {"type": "string", "enum": ["approve", "reject"]},
                         "reason": {"type": "string", "minLength": 1, "maxLength": 2000}}}}}}})
    async def decide(token: str, request: Request) -> Response:
        """Record the decision of a personal approval link (once) and resume the run waiting for it."""
        body = await request.body()
        return await run_in_threadpool(_decide, handlers.service, token, request, body)

    return router


def _claims(service, token: str, request: Request) -> LinkClaims | Response:
    """The claims of a genuine, unexpired, unused link; else the refusal page."""
    try:
        claims = read(service.settings, token)
    except LinkError as exc:
        return _refuse(service, token, exc, "expired" if exc.claims else "forged", None, request)
    except ConfigurationError:  # no secret configured: nobody can hold a valid link
        return _refuse(service, token, None, "no_secret", None, request)
    try:
        used = service.journal.link_used(claims.jti)
    except JournalError:
        return _page(503, "Try again in a minute", "irp cannot read its journal now; nothing was recorded.", error=True)
    return _refuse(service, token, None, "replayed", claims, request) if used else claims


def _decide(service, token: str, request: Request, body: bytes) -> Response:
    """The POST's work, in a worker thread: check, use the link once, resume the run."""
    claims = _claims(service, token, request)
    if isinstance(claims, Response):
        return claims
    form = parse_qs(body[:_MAX_FORM].decode("utf-8", "replace"), max_num_fields=10) if len(body) <= _MAX_FORM else {}
    decision = (form.get("decision") or [""])[0]
    reason = " ".join((form.get("reason") or [""])[0].split()) if len(body) <= _MAX_FORM else ""
    page, state = _where(service, claims)
    if page is not None:
        return page
    if decision not in ("approve", "reject") or not reason or len(reason) > 2000:
        return _page(422, f"Decide: {claims.action}", "Choose approve or reject and give a reason (up to 2,000 "
                     "characters); nothing was recorded.", error=True, claims=claims, form=True, decision=decision,
                     reason=reason[:2000], description=_description(service, claims, state), expires=_when(claims.exp))
    try:
        fresh = service.journal.use_link(claims.jti, claims.incident_id).result(timeout=30)
    except (JournalError, TimeoutError):
        return _page(503, "Try again in a minute", "irp cannot record the decision now; nothing was recorded.",
                     error=True, claims=claims)
    if not fresh:
        return _refuse(service, token, None, "replayed", claims, request)
    try:
        service.runs.resume(claims.flow_run_id, {"decision": decision, "approver": claims.identity,
                                                 "reason": reason, "link": token})
    except Exception as exc:  # noqa: BLE001 (moved on meanwhile, or the server is down)
        log.warning("approval of %s/%s: cannot resume flow run %s: %s", claims.incident_id, claims.step,
                    claims.flow_run_id, exc)
        try:
            service.journal.forget_link(claims.jti).result(timeout=30)
        except (JournalError, TimeoutError):
            log.error("approval link %s stays used though its decision was not delivered", claims.jti)
        return _page(409, "The decision could not be delivered", f"Step {claims.step} stopped waiting while you "
                     "decided, or irp cannot reach its Prefect server; nothing was recorded. Open the link again.",
                     error=True, claims=claims)
    verb = "approved" if decision == "approve" else "rejected"
    return _page(200, f"Recorded: you {verb} {claims.action}",
                 f"Your decision on step {claims.step} of incident {claims.incident_id} was passed to the run "
                 "as verified for your identity; it is recorded in the incident's timeline and audit log.",
                 claims=claims)


def _when(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")
