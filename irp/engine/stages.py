"""Running a stage: each step of the playbook's stage in order, with its when, targets, approval and on_failure.

Side effects: whatever the steps' actions do, plus one evidence item per step (its record).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from irp import templating
from irp.actions.registry import get_registry, preflight
from irp.engine import targets
from irp.engine.admission import RANKS, admitted
from irp.engine.approval import request_approval
from irp.engine.records import RunContext, StageResult, StepRecord, template_context
from irp.engine.steps import error_text, failed, rendered_args, run_step, skipped
from irp.errors import IrpError, NotConfiguredError
from irp.evidence import EvidenceStore, open_store
from irp.models import ActionItem, Incident, Stage, StageOutcome, StepStatus, TimelineEntry, utcnow
from irp.playbook.models import Step

__all__ = ["run_stage"]


@dataclass
class _StageRun:
    """One stage under way: where it is, and what it has done so far."""

    stage: Stage
    phase: str | None
    incident: Incident
    run: RunContext
    store: EvidenceStore
    timeline: list[TimelineEntry] = field(default_factory=list)
    updates: dict[str, Any] = field(default_factory=dict)
    records: list[StepRecord] = field(default_factory=list)

    def context(self) -> dict[str, Any]:
        return template_context(self.run, self.incident, self.stage, self.phase)

    def skipped(self, step: Step, started: datetime, reason: str) -> StepRecord:
        return skipped(step, self.stage, self.phase, started, reason, self.run)

    def failed(self, step: Step, started: datetime, error: str) -> StepRecord:
        return failed(step, self.stage, self.phase, started, error, self.run)


def run_stage(stage: Stage, incident: Incident, run: RunContext, phase: str | None = None) -> StageResult:
    """Run the steps of `stage` (of `phase`, for notify) in order, applying each step's on_failure."""
    with admitted(RANKS[stage]):  # already held when the run's own thread runs it; a notify beside contain asks
        return _run_stage(stage, incident, run, phase)


def _run_stage(stage: Stage, incident: Incident, run: RunContext, phase: str | None) -> StageResult:
    started = utcnow()
    run = run.model_copy(update={"steps": dict(run.steps)})
    current = _StageRun(stage, phase, incident, run, open_store(run.evidence_url))
    steps = [s for s in getattr(run.playbook.stages, stage.value) if phase is None or s.phase in (None, phase)]
    label = f"{stage.value} ({phase})" if phase else stage.value
    current.timeline.append(TimelineEntry(kind="stage", stage=stage, message=f"stage {label} started", at=started))
    stopped_by = None
    for step in steps:
        step_started = utcnow()
        record, held = _decide(current, step, step_started)
        if record is None:
            record = run_step(step, current.stage, current.phase, current.incident, current.run)
        if held:
            record.held = held
        if _keep(current, step, record):
            stopped_by = step.id
            break
    ended = utcnow()
    status = StepStatus.failed if stopped_by else StepStatus.completed
    current.timeline.append(TimelineEntry(kind="stage", stage=stage, at=ended, message=f"stage {label} {status.value}"))
    return StageResult(
        outcome=StageOutcome(stage=stage, phase=phase, status=status, started_at=started, ended_at=ended),
        steps=current.records,
        updates=current.updates,
        timeline=current.timeline,
        stopped_by=stopped_by,
    )


def _decide(current: _StageRun, step: Step, started: datetime) -> tuple[StepRecord | None, str]:
    """Whether the step may run: (its record when it may not, why the engine holds it for an approval)."""
    if step.when is not None:
        try:  # bounded by the step's time limit; any failure is this step's, never the run's
            run_it = bool(templating.evaluate(step.when, current.context(), timeout=step.timeout_seconds))
        except Exception as exc:
            return current.failed(step, started, f"cannot evaluate when: {error_text(exc)}"), ""
        if not run_it:
            return current.skipped(step, started, f"condition is false: {step.when}"), ""
    record, verdict = _judge_targets(current, step, started)
    held = verdict.held if verdict and step.approval is None else ""
    if record is None and (step.approval is not None or held):
        record = _gate(current, step, started, verdict)
    return record, held


def _keep(current: _StageRun, step: Step, record: StepRecord) -> bool:
    """Record what the step did (incident, timeline, evidence); True when its failure stops the stage."""
    stage, phase, incident = current.stage, current.phase, current.incident
    current.records.append(record)
    current.run.steps[step.id] = record
    if record.updates:
        incident = current.incident = Incident.model_validate(incident.model_dump() | record.updates)
        current.updates.update(record.updates)
    current.timeline.extend(record.timeline)
    current.timeline.append(_step_entry(record, step.on_failure))
    _take_over(current, step, record)
    current.store.put_json(incident.id, f"steps/{stage.value}/{step.id}{'-' + phase if phase else ''}.json",
                           record.model_dump(mode="json"), source_system="irp")
    if record.status != StepStatus.failed:
        return False
    if step.on_failure == "escalate":
        current.timeline.append(TimelineEntry(
            kind="escalation", stage=stage, step=step.id,
            message=f"step {step.id} failed and is escalated to the security team: {record.error}",
        ))
    return step.on_failure == "stop"


def _judge_targets(current: _StageRun, step: Step, started: datetime) -> tuple[StepRecord | None, targets.Verdict | None]:
    """The targets rule (irp/engine/targets.py): the failed record of a step on a protected target, and the verdict."""
    spec = get_registry()[step.action]
    if not spec.targets:
        return None, None
    try:
        parsed = spec.args_model.model_validate(rendered_args(step, current.context()))
    except Exception:  # noqa: BLE001 (bad arguments are the step's own failure, reported when it runs)
        return None, None
    try:
        verdict = targets.judge(spec, step.args, parsed)
    except IrpError as exc:
        return current.failed(step, started, str(exc)), None
    return (current.failed(step, started, verdict.refused) if verdict.refused else None), verdict


def _gate(current: _StageRun, step: Step, started: datetime, verdict: targets.Verdict | None) -> StepRecord | None:
    """Ask for approval (the step's, or the one its targets need); None when the step may run, else its record."""
    try:
        preflight(step.action)  # nobody is asked to approve what cannot run here
    except NotConfiguredError as exc:
        if step.optional:
            return current.skipped(step, started, f"not configured: {exc}")
        return current.failed(step, started, f"not configured: {exc}")
    try:
        args = rendered_args(step, current.context())
    except Exception as exc:  # whatever a template does is this step's failure
        return current.failed(step, started, f"cannot render args: {error_text(exc)}")
    held = verdict.held if verdict and step.approval is None else ""
    outcome = request_approval(step, current.stage, current.incident, args, current.run, why=held,
                               targets=verdict.targets if verdict else [],
                               render=lambda: rendered_args(step, current.context()))
    current.timeline.extend(outcome.timeline)
    if outcome.decisions or outcome.timed_out:
        current.store.put_json(current.incident.id, f"approvals/{current.stage.value}/{step.id}.json",
                               outcome.model_dump(mode="json", exclude={"timeline"}), source_system="prefect-ui")
    return None if outcome.approved else current.skipped(step, started, outcome.reason)


_TAKEN_OVER = ("not configured", "approval of step", "no one can approve")  # skips a person must make up for
TAKEOVER_DUE = timedelta(hours=1)


def _take_over(current: _StageRun, step: Step, record: StepRecord) -> None:
    """A failed step, or one skipped for want of configuration or of an approver, becomes a measure for a person.

    Not when the playbook handles it itself: a later assign_action of the stage whose `when` reads this step.
    """
    if current.stage not in (Stage.detect, Stage.analyse, Stage.contain, Stage.restore) or current.run.dry_run:
        return
    if not (record.status == StepStatus.failed
            or (record.status == StepStatus.skipped and record.reason.startswith(_TAKEN_OVER))):
        return
    stage_steps = getattr(current.run.playbook.stages, current.stage.value)
    if any(s.action == "response.assign_action" and s.when and f"steps.{step.id}." in s.when for s in stage_steps):
        return
    why = record.error or record.reason
    item = ActionItem(
        id="T-" + hashlib.sha256(f"{current.incident.id}/{current.stage}/{step.id}".encode()).hexdigest()[:6].upper(),
        title=f"Do by hand what step {step.id} could not: {step.description or step.action}"[:500],
        owner=current.run.playbook.owner, stage=current.stage, step=step.id, details=why[:2000],
        due_at=record.ended_at + TAKEOVER_DUE)
    if any(a.id == item.id for a in current.incident.actions):
        return
    actions = [*current.incident.actions, item]
    current.incident = current.incident.model_copy(update={"actions": actions})
    current.updates["actions"] = actions
    current.timeline.append(TimelineEntry(
        kind="action", stage=current.stage, step=step.id, at=record.ended_at, data={"action_id": item.id},
        message=f"measure {item.id} assigned to {item.owner}: step {step.id} {record.status.value} ({why[:200]}); "
                "a person takes it over"))


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
