"""Running one step: render its arguments, validate them against its action's model, call the action.

Each step runs as its own nested Prefect task (retries and time limit from the playbook); the
records of steps that did not run (skipped, failed before running) are built here too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic_core import to_jsonable_python

from irp import templating
from irp.actions.registry import ActionContext, get_registry
from irp.engine.records import RunContext, StepRecord, template_context
from irp.errors import ActionError, InvalidArgumentsError, IrpError, NotConfiguredError, PermanentError
from irp.evidence import open_store
from irp.models import Incident, Stage, StepStatus, utcnow
from irp.playbook.models import Step
from irp.playbook.templates import reads_run_data

__all__ = ["StepInputError", "error_text", "execute_step", "failed", "rendered_args", "skipped"]


class StepInputError(ActionError):
    """Raised when a step's condition or arguments cannot be rendered or do not validate."""


def _retryable(task: Any, task_run: Any, state: Any) -> bool:
    """Retry failures of the outside world, never bad input or missing configuration."""
    exc = state.result(raise_on_failure=False)
    return not isinstance(exc, StepInputError | NotConfiguredError | PermanentError)


@task(name="step", cache_policy=NO_CACHE, retry_condition_fn=_retryable)
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
