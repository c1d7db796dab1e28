"""What every action on a third party shares: retries, its journal, one way to change, the outcome.

- `with_retries` calls a provider with backoff and full jitter on throttling, 5xx and timeouts only;
  access denied and invalid requests fail at once. A provider that fails for good is written to the
  incident's timeline (kind `third_party`) before the error is raised, so the step's on_failure
  escalates it and nobody has to dig for it.
- `Journal` keeps, per incident, step and target, the state seen by the step's first attempt, so a
  retry (Prefect's or a re-run) knows what it changed and the undo restores the state from before
  the incident, not the state the first attempt left.
- `run_change` is how every state-changing action changes one target: state recorded, dry run
  honoured, nothing done (and said) when the target is already as wanted, write, verify, undo plan.
- `Outcome` is what every such action returns: changed or not (and why), before and after, the
  undo plan (a registered action and its arguments) when there is something to undo.

Side effects: evidence items under actions/<stage>/<step>/ and timeline entries (events.jsonl).
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, Field

from irp.actions.registry import ActionArgs, ActionContext
from irp.errors import EvidenceError, NotConfiguredError, PermanentError, TransientError
from irp.models import TimelineEntry, utcnow
from irp.redaction import redact
from irp.settings import get_settings
from irp.text import split_list

__all__ = [
    "Change",
    "CommaList",
    "Failure",
    "Journal",
    "Outcome",
    "UndoPlan",
    "WindowArgs",
    "archive_facts",
    "record_outcome",
    "run_change",
    "run_logger",
    "slug",
    "with_retries",
]

T = TypeVar("T")


# A list argument that templates may also give as "a, b, c".
CommaList = Annotated[list[str], BeforeValidator(split_list)]


def slug(text: str) -> str:
    """`text` as one evidence-name segment: letters, digits, '.', '_' and '-'."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return (cleaned or "target")[:120]


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run's logger, or irp's own outside a run (playbook tests, exercises)."""
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

    @classmethod
    def begin(cls, ctx: ActionContext, target: str, state: Any, *, source_system: str = "") -> tuple[Journal, Any, bool]:
        """The target's journal, the state recorded as `before` by the step's first attempt (`state` when this is
        it), and whether an earlier attempt recorded it."""
        journal = cls(ctx, target)
        before, replayed = journal.first("before", state, source_system=source_system)
        return journal, before, replayed

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
        run_logger().error("could not record the failure of %s on the incident: %s", provider, exc)


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
            run_logger().warning("%s %s: %s; attempt %d of %d in %.2fs", provider, operation, failure.message,
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


# --- changing one target -------------------------------------------------------------------------


def record_outcome(ctx: ActionContext, outcome: Outcome, journal: Journal | None = None, *,
                   source_system: str = "") -> Outcome:
    """Archive the state after (next to the journal, unless a dry run), put the outcome on the timeline."""
    if journal is not None and outcome.after is not None and not outcome.dry_run:
        journal.archive("after", outcome.after, source_system=source_system)
    kind = "change" if outcome.changed else "note"
    ctx.record(outcome.message, kind=kind, target=outcome.target, changed=outcome.changed, dry_run=outcome.dry_run)
    return outcome


@dataclass
class Change:
    """One change of one target, as `run_change` carries it out; the messages are the timeline's text."""

    journal: Journal  # the target's journal; `before` is what its first attempt recorded there
    source_system: str
    before: Any
    done: bool  # the target is already in the wanted state
    write: Callable[[], Any]  # make the change; return the state after (it may set `undo`: what it made)
    dry_run: str  # "dry run: would ..."
    unchanged: str  # said when done; "{why}" becomes "already" or "by an earlier attempt of this step"
    changed: Callable[[Any], str]  # said after the change, from the state after
    current: Any = None  # the `after` of an unchanged outcome
    redone: bool = False  # an earlier attempt of this step made the change
    undo: UndoPlan | None = None
    checks: Callable[[], list[str]] = list  # what a dry run verifies (it may ask the provider)
    details: dict[str, Any] = field(default_factory=dict)  # in every outcome
    dry_details: dict[str, Any] = field(default_factory=dict)
    changed_details: dict[str, Any] = field(default_factory=dict)
    verify: Callable[[Any], None] | None = None  # raises PermanentError when the state after is not as wanted


def run_change(ctx: ActionContext, change: Change) -> Outcome:
    """Honour dry run, do nothing when already done (and say so), else write and verify; the outcome."""
    target, journal = change.journal.target, change.journal
    if ctx.dry_run:
        return record_outcome(ctx, Outcome(
            target=target, changed=False, dry_run=True, before=change.before, message=change.dry_run,
            checks=change.checks(), details={"would_change": not change.done, **change.details, **change.dry_details},
        ), journal, source_system=change.source_system)
    if change.done:
        why = "by an earlier attempt of this step" if change.redone else "already"
        return record_outcome(ctx, Outcome(
            target=target, changed=False, before=change.before, after=change.current, undo=change.undo,
            message=change.unchanged.replace("{why}", why), details=dict(change.details),
        ), journal, source_system=change.source_system)
    after = change.write()
    if after is not None:
        journal.archive("after", after, source_system=change.source_system)
    if change.verify is not None:
        change.verify(after)
    return record_outcome(ctx, Outcome(
        target=target, changed=True, before=change.before, after=after, undo=change.undo,
        message=change.changed(after), details={**change.details, **change.changed_details},
    ))


# --- read-only actions: facts and windows ------------------------------------------------------


def archive_facts(ctx: ActionContext, name: str, facts: dict[str, Any], *, target: str, source_system: str,
                  message: str, summary: dict[str, Any] | None = None) -> Outcome:
    """Archive what a read-only action read (redacted) and return it as the step's output.

    `summary` (default: the facts) becomes the output's details, with the evidence's name and SHA-256.
    A dry run archives nothing: it returns the facts with `dry_run: true`.
    """
    facts = redact(facts)
    details = redact(summary) if summary is not None else facts
    if ctx.dry_run:
        ctx.record(f"dry run: {message} (not archived)", kind="note")
        return Outcome(target=target, changed=False, dry_run=True, message=f"dry run: {message} (not archived)",
                       details=details, checks=[f"{source_system}: read allowed"])
    item = ctx.archive_json(f"actions/{ctx.stage.value}/{ctx.step}/{slug(name)}.json", facts,
                            source_system=source_system, source_time=utcnow().isoformat())
    ctx.record(message, kind="evidence", evidence=item.name)
    return Outcome(target=target, changed=False, message=message,
                   details={**details, "evidence": item.name, "sha256": item.sha256})


class WindowArgs(ActionArgs):
    """The time window of an evidence collection: start and end, or the hours before detection."""

    start: datetime | None = Field(None, description="Start of the window; default: detection minus lookback_hours.")
    end: datetime | None = Field(None, description="End of the window; default: now.")
    lookback_hours: float = Field(24, gt=0, le=2160, description="Window before detection when start is unset.")

    def window(self, ctx: ActionContext) -> tuple[datetime, datetime]:
        """(start, end), timezone-aware; PermanentError when start is not before end."""
        end = _aware(self.end or utcnow())
        start = _aware(self.start or (ctx.incident.detected_at - timedelta(hours=self.lookback_hours)))
        if start >= end:
            raise PermanentError(f"the window is empty: start {start.isoformat()} is not before end {end.isoformat()}",
                                 code="EmptyWindow")
        return start, end


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
