"""Running a stage: each step of the playbook's stage as its own nested Prefect task.

Side effects: whatever the steps' actions do, plus one evidence item per step (its record).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote
from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python

from irp import templating
from irp.actions.registry import ActionContext, get_registry, preflight, template_vars
from irp.errors import ActionError, InvalidArgumentsError, IrpError, NotConfiguredError, PermanentError
from irp.evidence import open_store
from irp.models import Alert, Incident, Stage, StageOutcome, StepStatus, TimelineEntry, utcnow
from tasks import targets

__all__ = ["RunContext", "StageResult", "StepRecord", "run_stage"]


class StepInputError(ActionError):
    """Raised when a step's condition or arguments cannot be rendered or do not validate."""


class StepRecord(BaseModel):
    """What one step did; archived as evidence and visible to later steps as `steps.ID`."""

    id: str
    action: str
    stage: Stage
    phase: str | None = None
    status: StepStatus
    reason: str = ""
    args: Any = None
    output: Any = None
    error: str | None = None
    evidence: list[str] = Field(default_factory=list)
    started_at: datetime
    ended_at: datetime
    dry_run: bool = False
    held: str = Field("", description="Why the engine asked an approval the playbook did not (tasks/targets.py).")
    updates: dict[str, Any] = Field(default_factory=dict, exclude=True)
    timeline: list[TimelineEntry] = Field(default_factory=list, exclude=True)


class RunContext(BaseModel):
    """What every stage of one run shares."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    alert: Alert
    playbook: Any = Field(description="flows.playbook.Playbook")
    evidence_url: str
    dry_run: bool = False
    steps: dict[str, StepRecord] = Field(default_factory=dict)


class StageResult(BaseModel):
    """What a stage did: its outcome, its steps, and the incident changes to apply."""

    outcome: StageOutcome
    steps: list[StepRecord]
    updates: dict[str, Any] = Field(default_factory=dict)
    timeline: list[TimelineEntry] = Field(default_factory=list)
    stopped_by: str | None = Field(None, description="Id of the failed step whose on_failure is stop.")

    def apply(self, incident: Incident) -> Incident:
        """The incident with this stage's changes, outcome and timeline entries."""
        merged = incident.model_dump() | self.updates
        merged["stages"] = [*incident.stages, self.outcome]
        merged["timeline"] = sorted([*incident.timeline, *self.timeline], key=lambda e: e.at)
        if any(e.kind == "escalation" for e in self.timeline):
            merged["escalated"] = True
        return Incident.model_validate(merged)


def template_context(run: RunContext, incident: Incident, stage: Stage, phase: str | None) -> dict[str, Any]:
    """The variables a playbook template sees at this point of the run."""
    return template_vars(incident, run.alert, run.steps, run.playbook, stage, phase, run.dry_run)


def _retryable(task: Any, task_run: Any, state: Any) -> bool:
    """Retry failures of the outside world, never bad input or missing configuration."""
    exc = state.result(raise_on_failure=False)
    return not isinstance(exc, StepInputError | NotConfiguredError | PermanentError)


@task(name="step", cache_policy=NO_CACHE, retry_condition_fn=_retryable)
def execute_step(step: Any, stage: Stage, phase: str | None, incident: Incident, run: RunContext) -> StepRecord:
    """Render a step's arguments, validate them against its action's model, run the action."""
    started = utcnow()
    spec = get_registry()[step.action]
    try:
        args = rendered_args(step, template_context(run, incident, stage, phase))
    except Exception as exc:  # whatever a template does is this step's failure
        raise StepInputError(f"step {step.id}: cannot render args: {_error_text(exc)}") from None
    ctx = ActionContext(
        incident=incident,
        alert=run.alert,
        store=open_store(run.evidence_url),
        stage=stage,
        step=step.id,
        action=step.action,
        flow_run_id=str(flow_run.id or ""),
        from_run_data=targets.run_data_args(step.args),
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
        return _skipped(step, stage, phase, started, f"not configured: {exc}", run)
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


def rendered_args(step: Any, context: dict[str, Any]) -> dict[str, Any]:
    """The step's arguments rendered within the step's time limit; an argument that renders to None is
    left out (its default applies)."""
    rendered = templating.render_value(step.args, context, timeout=step.timeout_seconds)
    return {key: value for key, value in rendered.items() if value is not None}


def _error_text(exc: BaseException | None) -> str:
    if exc is None:
        return "failed"
    if isinstance(exc, IrpError | templating.TemplateError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return f"timed out ({exc})" if str(exc) else "timed out"
    return f"{type(exc).__name__}: {exc}"


def run_stage(stage: Stage, incident: Incident, run: RunContext, phase: str | None = None) -> StageResult:
    """Run the steps of `stage` (of `phase`, for notify) in order, applying each step's on_failure."""
    started = utcnow()
    store = open_store(run.evidence_url)
    run = run.model_copy(update={"steps": dict(run.steps)})
    steps = [s for s in getattr(run.playbook.stages, stage.value) if phase is None or s.phase in (None, phase)]
    label = f"{stage.value} ({phase})" if phase else stage.value
    timeline = [TimelineEntry(kind="stage", stage=stage, message=f"stage {label} started", at=started)]
    updates: dict[str, Any] = {}
    records: list[StepRecord] = []
    stopped_by = None

    for step in steps:
        step_started = utcnow()
        record = None
        if step.when is not None:
            try:  # bounded by the step's time limit; any failure is this step's, never the run's
                context = template_context(run, incident, stage, phase)
                run_it = bool(templating.evaluate(step.when, context, timeout=step.timeout_seconds))
            except Exception as exc:
                run_it, record = False, _failed(step, stage, phase, step_started,
                                                f"cannot evaluate when: {_error_text(exc)}", run)
            if not run_it and record is None:
                record = _skipped(step, stage, phase, step_started, f"condition is false: {step.when}", run)
        verdict = None
        if record is None:
            record, verdict = _judge_targets(step, stage, phase, incident, run, step_started)
        held = verdict.held if verdict and step.approval is None else ""
        if record is None and (step.approval is not None or held):
            record = _gate(step, stage, phase, incident, run, step_started, timeline, store, verdict)
        if record is None:
            runner = execute_step.with_options(
                name=f"{stage.value}.{step.id}",
                task_run_name=f"{stage.value}.{step.id}",
                retries=step.retries,
                retry_delay_seconds=step.retry_delay_seconds,
                timeout_seconds=step.timeout_seconds,
            )
            state = runner(quote(step), stage, phase, quote(incident), quote(run), return_state=True)
            if state.is_completed():
                record = state.result()
            else:
                record = _failed(step, stage, phase, step_started, _error_text(state.result(raise_on_failure=False)), run)

        if held:
            record.held = held
        records.append(record)
        run.steps[step.id] = record
        if record.updates:
            incident = Incident.model_validate(incident.model_dump() | record.updates)
            updates.update(record.updates)
        timeline.extend(record.timeline)
        timeline.append(_step_entry(record, step.on_failure))
        store.put_json(incident.id, f"steps/{stage.value}/{step.id}{'-' + phase if phase else ''}.json",
                       record.model_dump(mode="json"), source_system="irp")
        if record.status == StepStatus.failed:
            if step.on_failure == "escalate":
                timeline.append(TimelineEntry(
                    kind="escalation", stage=stage, step=step.id,
                    message=f"step {step.id} failed and is escalated to the security team: {record.error}",
                ))
            elif step.on_failure == "stop":
                stopped_by = step.id
                break

    ended = utcnow()
    status = StepStatus.failed if stopped_by else StepStatus.completed
    timeline.append(TimelineEntry(kind="stage", stage=stage, at=ended, message=f"stage {label} {status.value}"))
    return StageResult(
        outcome=StageOutcome(stage=stage, phase=phase, status=status, started_at=started, ended_at=ended),
        steps=records,
        updates=updates,
        timeline=timeline,
        stopped_by=stopped_by,
    )


def _judge_targets(step: Any, stage: Stage, phase: str | None, incident: Incident, run: RunContext,
                   started: datetime) -> tuple[StepRecord | None, targets.Verdict | None]:
    """The targets rule (tasks/targets.py): the failed record of a step on a protected target, and the verdict."""
    spec = get_registry()[step.action]
    if not spec.targets:
        return None, None
    try:
        parsed = spec.args_model.model_validate(rendered_args(step, template_context(run, incident, stage, phase)))
    except Exception:  # noqa: BLE001 (bad arguments are the step's own failure, reported when it runs)
        return None, None
    try:
        verdict = targets.judge(spec, step.args, parsed)
    except IrpError as exc:
        return _failed(step, stage, phase, started, str(exc), run), None
    return (_failed(step, stage, phase, started, verdict.refused, run) if verdict.refused else None), verdict


def _gate(step: Any, stage: Stage, phase: str | None, incident: Incident, run: RunContext,
          started: datetime, timeline: list[TimelineEntry], store: Any, verdict: Any = None) -> StepRecord | None:
    """Ask for approval (the step's, or the one its targets need); None when the step may run, else its record."""
    from tasks.approval import request_approval

    try:
        preflight(step.action)  # nobody is asked to approve what cannot run here
    except NotConfiguredError as exc:
        if step.optional:
            return _skipped(step, stage, phase, started, f"not configured: {exc}", run)
        return _failed(step, stage, phase, started, f"not configured: {exc}", run)
    try:
        args = rendered_args(step, template_context(run, incident, stage, phase))
    except Exception as exc:  # whatever a template does is this step's failure
        return _failed(step, stage, phase, started, f"cannot render args: {_error_text(exc)}", run)
    held = verdict.held if verdict and step.approval is None else ""
    outcome = request_approval(step, stage, incident, args, run.dry_run, why=held,
                               targets=verdict.targets if verdict else [])
    timeline.extend(outcome.timeline)
    if outcome.decisions or outcome.timed_out:
        store.put_json(incident.id, f"approvals/{stage.value}/{step.id}.json",
                       outcome.model_dump(mode="json", exclude={"timeline"}), source_system="prefect-ui")
    return None if outcome.approved else _skipped(step, stage, phase, started, outcome.reason, run)


def _step_entry(record: StepRecord, on_failure: str) -> TimelineEntry:
    text = {
        StepStatus.completed: "completed" + (" (dry run)" if record.dry_run else ""),
        StepStatus.skipped: f"skipped: {record.reason}",
        StepStatus.failed: f"failed ({on_failure}): {record.error}",
    }[record.status]
    return TimelineEntry(
        kind="step", stage=record.stage, step=record.id, at=record.ended_at,
        message=f"step {record.id} ({record.action}) {text}",
    )


def _skipped(step: Any, stage: Stage, phase: str | None, started: datetime, reason: str, run: RunContext) -> StepRecord:
    return StepRecord(id=step.id, action=step.action, stage=stage, phase=phase, status=StepStatus.skipped,
                      reason=reason, started_at=started, ended_at=utcnow(), dry_run=run.dry_run)


def _failed(step: Any, stage: Stage, phase: str | None, started: datetime, error: str, run: RunContext) -> StepRecord:
    return StepRecord(id=step.id, action=step.action, stage=stage, phase=phase, status=StepStatus.failed,
                      error=error, started_at=started, ended_at=utcnow(), dry_run=run.dry_run)
