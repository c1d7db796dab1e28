"""What every action on a third party shares: retries, the outcome it returns, its journal, its undo.

- `with_retries` calls a provider with backoff and full jitter on throttling, 5xx and timeouts only;
  access denied and invalid requests fail at once. A provider that fails for good is written to the
  incident's timeline (kind `third_party`) before the error is raised, so the step's on_failure
  escalates it and nobody has to dig for it.
- `Journal` keeps, per incident, step and target, the state seen by the step's first attempt, so a
  retry (Prefect's or a re-run) knows what it changed and the undo restores the state from before
  the incident, not the state the first attempt left.
- `Outcome` is what every such action returns: changed or not (and why), before and after, the
  undo plan (a registered action and its arguments) when there is something to undo.
- `undo_step` runs the undo plan of a completed step: `irp actions undo INCIDENT STEP`.

Side effects: evidence items under actions/<stage>/<step>/ and undo/<stage>/<step>.json, and
timeline entries (events.jsonl) on the incident.
"""

from __future__ import annotations

import getpass
import json
import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, Field, ValidationError

from irp.errors import ActionError, EvidenceError, NotConfiguredError, PermanentError, TransientError
from irp.evidence import EvidenceStore
from irp.models import Alert, AlertSource, Stage, TimelineEntry, utcnow
from irp.settings import get_settings
from irp.text import split_list
from tasks.registry import ActionContext, get_registry

__all__ = [
    "CommaList",
    "Failure",
    "Journal",
    "Outcome",
    "UndoPlan",
    "find_step_record",
    "slug",
    "undo_step",
    "with_retries",
]

T = TypeVar("T")


# A list argument that templates may also give as "a, b, c".
CommaList = Annotated[list[str], BeforeValidator(split_list)]


def slug(text: str) -> str:
    """`text` as one evidence-name segment: letters, digits, '.', '_' and '-'."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return (cleaned or "target")[:120]


def _logger() -> logging.Logger | logging.LoggerAdapter:
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("irp.actions")


# --- outcome -------------------------------------------------------------------------------------


class UndoPlan(BaseModel):
    """How to roll a change back: a registered action and its arguments."""

    action: str = Field(..., description="Registered action that reverses the change.")
    args: dict[str, Any] = Field(default_factory=dict)


class Outcome(BaseModel):
    """What an action on a third party did: the step's output."""

    target: str = Field(..., description="What was acted on, e.g. iam-user/alice/AKIA....")
    changed: bool = Field(..., description="False when the target was already in the wanted state.")
    dry_run: bool = False
    message: str = Field(..., description="One line for the timeline: what changed, or why nothing did.")
    before: Any = None
    after: Any = None
    undo: UndoPlan | None = Field(None, description="Run by `irp actions undo`; None: nothing to undo.")
    checks: list[str] = Field(default_factory=list, description="What a dry run verified.")
    details: dict[str, Any] = Field(default_factory=dict)


# --- journal -------------------------------------------------------------------------------------


class Journal:
    """Per incident, step and target: state recorded once, by the step's first attempt, as evidence."""

    def __init__(self, ctx: ActionContext, target: str) -> None:
        self.ctx = ctx
        self.target = target
        dry = "/dry-run" if ctx.dry_run else ""
        self.prefix = f"actions/{ctx.stage.value}/{ctx.step}{dry}/{slug(target)}"

    def _read(self, name: str) -> dict[str, Any] | None:
        full = f"{self.prefix}/{name}"
        if full not in {item.name for item in self.ctx.store.manifest(self.ctx.incident.id)}:
            return None
        with self.ctx.store.open(self.ctx.incident.id, full) as handle:
            return json.load(handle)

    def load(self, name: str) -> Any:
        """The state recorded under `name` by an earlier attempt, or None."""
        existing = self._read(f"{name}.json")
        return existing["state"] if existing is not None else None

    def first(self, name: str, state: Any, *, source_system: str = "") -> tuple[Any, bool]:
        """The state recorded under `name` by the first attempt (and True), or `state`, now recorded."""
        existing = self._read(f"{name}.json")
        if existing is not None:
            return existing["state"], True
        self.ctx.archive_json(
            f"{self.prefix}/{name}.json",
            {"target": self.target, "recorded_at": utcnow().isoformat(), "state": state},
            source_system=source_system,
        )
        return state, False

    def archive(self, name: str, state: Any, *, source_system: str = "") -> None:
        """Archive a snapshot (e.g. the state after the change) next to the journal."""
        self.ctx.archive_json(
            f"{self.prefix}/{name}.json",
            {"target": self.target, "recorded_at": utcnow().isoformat(), "state": state},
            source_system=source_system,
        )


# --- retries -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """How a provider error is handled: retried (transient) or not, and what to say."""

    transient: bool
    code: str
    message: str
    retry_after: float | None = None
    not_configured: bool = False


def _delay(attempt: int, retry_after: float | None) -> float:
    settings = get_settings()
    cap = settings.action_retry_max_seconds
    delay = random.uniform(0, min(cap, settings.action_retry_base_seconds * 2 ** (attempt - 1)))
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay


def third_party_failed(ctx: ActionContext, provider: str, operation: str, failure: Failure, attempts: int) -> None:
    """Put a provider failure on the incident's timeline now: the step's own entries die with it."""
    kind = "transient" if failure.transient else "refused"
    entry = TimelineEntry(
        kind="third_party",
        stage=ctx.stage,
        step=ctx.step,
        message=f"third party {provider} failed ({kind}) on {operation}: {failure.message}",
        data={"provider": provider, "operation": operation, "code": failure.code, "attempts": attempts,
              "retryable": failure.transient, "action": ctx.action},
    )
    try:
        ctx.store.append_event(ctx.incident.id, entry)
    except EvidenceError as exc:  # the error raised next still says what failed
        _logger().error("could not record the failure of %s on the incident: %s", provider, exc)


def with_retries(
    ctx: ActionContext,
    provider: str,
    operation: str,
    call: Callable[[], T],
    classify: Callable[[BaseException], Failure | None],
) -> T:
    """`call()`, retried with exponential backoff and full jitter while `classify` says transient.

    Raises NotConfiguredError, PermanentError (not retried) or TransientError (attempts or the
    deadline exhausted). Exceptions `classify` does not know (None) propagate unchanged.
    """
    settings = get_settings()
    started = time.monotonic()
    transient: list[str] = []
    attempt = 0
    while True:
        attempt += 1
        try:
            result = call()
        except Exception as exc:
            failure = classify(exc)
            if failure is None:
                raise
            if failure.not_configured:
                raise NotConfiguredError(f"{provider}: {failure.message}") from None
            if not failure.transient:
                third_party_failed(ctx, provider, operation, failure, attempt)
                raise PermanentError(
                    f"{provider} {operation} refused: {failure.message} (not retried: retrying cannot fix it)",
                    provider=provider, code=failure.code,
                ) from None
            delay = _delay(attempt, failure.retry_after)
            elapsed = time.monotonic() - started
            if attempt >= settings.action_attempts or elapsed + delay > settings.action_deadline_seconds:
                third_party_failed(ctx, provider, operation, failure, attempt)
                raise TransientError(
                    f"{provider} {operation} failed after {attempt} attempt(s) in {elapsed:.1f}s: {failure.message}",
                    provider=provider, code=failure.code,
                ) from None
            transient.append(failure.code)
            _logger().warning("%s %s: %s; attempt %d of %d in %.2fs", provider, operation, failure.message,
                              attempt + 1, settings.action_attempts, delay)
            time.sleep(delay)
            continue
        if transient:
            ctx.record(
                f"third party {provider}: {operation} succeeded after {len(transient)} transient failure(s) "
                f"({', '.join(transient)})",
                kind="third_party", provider=provider, operation=operation, retried=transient,
            )
        return result


# --- undo ----------------------------------------------------------------------------------------

_STEP_RECORD = re.compile(r"^steps/(?P<stage>[a-z]+)/(?P<step>[a-z][a-z0-9_]*)(-(?P<n>\d+))?\.json$")


def find_step_record(store: EvidenceStore, incident_id: str, step: str, stage: Stage | None = None
                     ) -> tuple[str, dict[str, Any]]:
    """The latest archived record (steps/<stage>/<step>.json) of `step` in the incident."""
    found: list[tuple[int, str]] = []
    seen: set[str] = set()
    for index, item in enumerate(store.manifest(incident_id)):
        match = _STEP_RECORD.match(item.name)
        if match is None:
            continue
        seen.add(match["step"])
        if match["step"] == step and (stage is None or match["stage"] == stage.value):
            found.append((index, item.name))
    if not found:
        known = ", ".join(sorted(seen)) or "none"
        raise ActionError(f"incident {incident_id} has no record of step {step!r}; steps recorded: {known}")
    name = max(found)[1]
    with store.open(incident_id, name) as handle:
        return name, json.load(handle)


def undo_step(store: EvidenceStore, incident_id: str, step: str, *, stage: Stage | None = None,
              dry_run: bool = False, actor: str | None = None) -> dict[str, Any]:
    """Run the undo plan recorded by a completed step; archive what it did; return the undo's output."""
    name, record = find_step_record(store, incident_id, step, stage)
    if record.get("status") != "completed":
        raise ActionError(f"step {step} did not complete ({record.get('status')}): nothing it changed to undo")
    if record.get("dry_run"):
        raise ActionError(f"step {step} ran as a dry run and changed nothing: nothing to undo")
    output = record.get("output") if isinstance(record.get("output"), dict) else {}
    if not output.get("undo"):
        why = output.get("message") or "its action has no undo"
        raise ActionError(f"step {step} ({record.get('action')}) has nothing to undo: {why}")
    plan = UndoPlan.model_validate(output["undo"])
    registry = get_registry()
    if plan.action not in registry:
        raise ActionError(f"step {step}: undo action {plan.action!r} is not registered")
    spec = registry[plan.action]
    try:
        args = spec.args_model.model_validate(plan.args)
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False))
        raise ActionError(f"step {step}: recorded undo arguments for {plan.action} are invalid: {details}") from None
    incident = store.load_incident(incident_id)
    actor = actor or getpass.getuser()
    stage_value = Stage(record["stage"])
    ctx = ActionContext(
        incident=incident,
        alert=Alert(source=AlertSource.manual, title=f"irp actions undo {incident_id} {step}",
                    labels={"requested_by": actor}),
        store=store,
        stage=stage_value,
        step=f"undo_{step}"[:63],
        action=plan.action,
        dry_run=dry_run,
    )
    started = utcnow()
    result = spec.fn(args, ctx)
    result_json = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
    if not dry_run:
        store.put_json(incident_id, f"undo/{stage_value.value}/{step}.json", {
            "step": step, "step_record": name, "undo": plan.model_dump(mode="json"), "output": result_json,
            "requested_by": actor, "started_at": started.isoformat(), "ended_at": utcnow().isoformat(),
            "evidence": [item.name for item in ctx.evidence],
        }, source_system="irp")
        for entry in ctx.timeline:
            store.append_event(incident_id, entry.model_copy(update={"actor": actor}))
        message = result_json.get("message", "") if isinstance(result_json, dict) else ""
        store.append_event(incident_id, TimelineEntry(
            kind="undo", stage=stage_value, step=step, actor=actor,
            message=f"step {step} undone by {actor} with {plan.action}: {message}".rstrip(": "),
        ))
    return result_json
