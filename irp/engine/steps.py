"""Running one step: render its arguments, validate them against its action's model, call the action.

A step runs inside its stage's Prefect task, with the playbook's retries and time limit applied here
(one Prefect task run per step cost the server and the worker ~45 ms of CPU each: bench/bench_burst.py);
the records of steps that did not run (skipped, failed before running) are built here too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from prefect.runtime import flow_run
from prefect.utilities.timeout import timeout
from pydantic_core import to_jsonable_python

from irp import templating
from irp.actions.base import run_logger
from irp.actions.registry import ActionContext, get_registry
from irp.engine.records import RunContext, StepRecord, template_context
from irp.errors import ActionError, InvalidArgumentsError, IrpError, NotConfiguredError, PermanentError
from irp.evidence import open_store
from irp.models import Incident, Stage, StepStatus, utcnow
from irp.playbook.models import Step
from irp.playbook.templates import reads_run_data

__all__ = ["StepInputError", "error_text", "execute_step", "failed", "rendered_args", "retries_without_delay",
           "run_step", "skipped"]

_pause: Callable[[float], None] = time.sleep  # between attempts; instant on a simulated clock


class StepInputError(ActionError):
    """Raised when a step's condition or arguments cannot be rendered or do not validate."""


def _retryable(exc: BaseException) -> bool:
    """Retry failures of the outside world, never bad input or missing configuration."""
    return not isinstance(exc, StepInputError | NotConfiguredError | PermanentError)


def run_step(step: Step, stage: Stage, phase: str | None, incident: Incident, run: RunContext) -> StepRecord:
    """The step's record after up to 1 + `retries` attempts, each within `timeout_seconds`; a failure is the
    record's, never raised."""
    attempt = 0
    while True:
        attempt += 1
        started = utcnow()
        try:
            with timeout(step.timeout_seconds):
                record = execute_step(step, stage, phase, incident, run)
        except Exception as exc:  # noqa: BLE001 (a step's failure is its record)
            if attempt <= step.retries and _retryable(exc):
                run_logger().warning("%s.%s: attempt %d of %d failed, again in %g s: %s", stage.value, step.id, attempt,
                                  step.retries + 1, step.retry_delay_seconds, error_text(exc))
                _pause(step.retry_delay_seconds)
                continue
            record = failed(step, stage, phase, started, error_text(exc), run)
        record.attempts = attempt
        run_logger().info("%s.%s (%s): %s%s%s", stage.value, step.id, step.action, record.status.value,
                       f" after {attempt} attempts" if attempt > 1 else "",
                       f": {record.error or record.reason}" if record.error or record.reason else "")
        return record


@contextmanager
def retries_without_delay() -> Iterator[None]:
    """Attempts follow each other at once (playbook tests and exercises run on a simulated clock)."""
    global _pause
    saved, _pause = _pause, lambda seconds: None
    try:
        yield
    finally:
        _pause = saved


def execute_step(step: Step, stage: Stage, phase: str | None, incident: Incident, run: RunContext) -> StepRecord:
    """Render a step's arguments, validate them against its action's model, run the action."""
    started = utcnow()
    spec = get_registry()[step.action]
    try:
        args = rendered_args(step, template_context(run, incident, stage, phase))
    except Exception as exc:  # whatever a template does is this step's failure
        raise StepInputError(f"step {step.id}: cannot render args: {error_text(exc)}") from None
    ctx = ActionContext(
        incident=incident,
        alert=run.alert,
        store=open_store(run.evidence_url),
        stage=stage,
        step=step.id,
        action=step.action,
        flow_run_id=str(flow_run.id or ""),
        from_run_data=frozenset(key for key, value in step.args.items() if reads_run_data(value)),
        dry_run=run.dry_run,
        phase=phase,
        steps=run.steps,
        playbook=run.playbook,
    )
    try:
        parsed, output = spec.invoke(args, ctx)
    except InvalidArgumentsError as exc:
        raise StepInputError(f"step {step.id}: {exc}") from None
    except NotConfiguredError as exc:
        if not step.optional:
            raise
        return skipped(step, stage, phase, started, f"not configured: {exc}", run)
    return StepRecord(
        id=step.id,
        action=step.action,
        stage=stage,
        phase=phase,
        status=StepStatus.completed,
        args=to_jsonable_python(parsed),
        output=to_jsonable_python(output),
        evidence=[item.name for item in ctx.evidence],
        started_at=started,
        ended_at=utcnow(),
        dry_run=run.dry_run,
        updates=ctx.updates,
        timeline=ctx.timeline,
    )


def rendered_args(step: Step, context: dict[str, Any]) -> dict[str, Any]:
    """The step's arguments rendered within the step's time limit; an argument that renders to None is
    left out (its default applies)."""
    rendered = templating.render_value(step.args, context, timeout=step.timeout_seconds)
    return {key: value for key, value in rendered.items() if value is not None}


def error_text(exc: BaseException | None) -> str:
    """One line for a step's failure: irp's own message, or the exception's type and message."""
    if exc is None:
        return "failed"
    if isinstance(exc, IrpError | templating.TemplateError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return f"timed out ({exc})" if str(exc) else "timed out"
    return f"{type(exc).__name__}: {exc}"


def skipped(step: Step, stage: Stage, phase: str | None, started: datetime, reason: str, run: RunContext) -> StepRecord:
    """The record of a step that did not run, and why."""
    return StepRecord(id=step.id, action=step.action, stage=stage, phase=phase, status=StepStatus.skipped,
                      reason=reason, started_at=started, ended_at=utcnow(), dry_run=run.dry_run)


def failed(step: Step, stage: Stage, phase: str | None, started: datetime, error: str, run: RunContext) -> StepRecord:
    """The record of a step that failed, with its error."""
    return StepRecord(id=step.id, action=step.action, stage=stage, phase=phase, status=StepStatus.failed,
                      error=error, started_at=started, ended_at=utcnow(), dry_run=run.dry_run)
