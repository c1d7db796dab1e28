"""Undo (namespace `actions`): roll back what an earlier step changed, with the undo plan it recorded.

One rule for both ways in: the playbook action `actions.undo_step` (a later step of the same run,
e.g. in restore after a false positive) and `irp actions undo INCIDENT STEP` (a person, later, from
the step's archived record: `undo_recorded_step`). A step that did not complete, ran as a dry run or
whose action has no undo has nothing to undo: the action says so in its outcome, the CLI as its error.

    - id: reopen_exports
      action: actions.undo_step
      when: "alert.labels.get('false_positive') == 'true'"
      args: {step: pause_exports, reason: "false positive confirmed by the analyst"}

Side effects: those of the undo action the earlier step recorded (`output.undo`), run with the
caller's context (its journal, evidence and dry run); by the CLI, undo/<stage>/<step>.json archived
and the timeline entries appended to the incident's events.
"""

from __future__ import annotations

import getpass
import json
import re
from typing import Any

from pydantic import BaseModel, Field

from irp.actions.base import Outcome, UndoPlan
from irp.actions.registry import ActionArgs, ActionContext, action, get_registry
from irp.errors import ActionError, InvalidArgumentsError, IrpError
from irp.evidence import EvidenceStore
from irp.models import Alert, AlertSource, Stage, TimelineEntry, utcnow

__all__ = ["NothingToUndoError", "UndoStepArgs", "find_step_record", "recorded_undo", "undo_recorded_step",
           "undo_step"]

_STEP_RECORD = re.compile(r"^steps/(?P<stage>[a-z]+)/(?P<step>[a-z][a-z0-9_]*)(-(?P<n>\d+))?\.json$")


class NothingToUndoError(ActionError):
    """Raised when a step changed nothing that can be undone; `why` says why."""

    def __init__(self, step: str, why: str) -> None:
        self.why = why
        super().__init__(f"step {step} has nothing to undo: {why}")


def recorded_undo(step: str, record: dict[str, Any] | BaseModel) -> UndoPlan:
    """The undo plan a step's record holds; NothingToUndoError when there is none."""
    record = record.model_dump(mode="json") if isinstance(record, BaseModel) else dict(record)
    output = record.get("output") if isinstance(record.get("output"), dict) else {}
    if record.get("status") != "completed":
        status = record.get("status")
        raise NothingToUndoError(step, "it skipped" if status == "skipped" else f"it did not complete ({status})")
    if record.get("dry_run"):
        raise NothingToUndoError(step, "it ran as a dry run")
    if not output.get("undo"):
        raise NothingToUndoError(step, output.get("message") or "its action has no undo")
    return UndoPlan.model_validate(output["undo"])


def _run_undo(step: str, plan: UndoPlan, ctx: ActionContext) -> Outcome:
    """Run `plan` with `ctx`: the undo action's outcome."""
    spec = get_registry().get(plan.action)
    if spec is None:
        raise ActionError(f"step {step}: undo action {plan.action!r} is not registered")
    try:
        _, result = spec.invoke(plan.args, ctx)
    except InvalidArgumentsError as exc:
        raise InvalidArgumentsError(f"step {step}: recorded undo arguments are invalid: {exc}") from None
    return result if isinstance(result, Outcome) else Outcome.model_validate(result)


class UndoStepArgs(ActionArgs):
    step: str = Field(..., pattern=r"^[a-z][a-z0-9_]{0,62}$", description="Id of an earlier step of this run.")
    reason: str = Field("", max_length=500, description="Why, for the timeline (e.g. false positive).")


@action
def undo_step(args: UndoStepArgs, ctx: ActionContext) -> Outcome:
    """Roll back what an earlier step of this run changed, with the undo plan it recorded."""
    if args.step not in ctx.steps:
        ran = ", ".join(ctx.steps) or "none"
        raise ActionError(f"actions.undo_step: no step {args.step!r} ran before this one; steps so far: {ran}")
    record = ctx.steps[args.step]
    try:
        plan = recorded_undo(args.step, record)
    except NothingToUndoError as nothing:
        output = record.output if isinstance(record, BaseModel) else dict(record).get("output")
        target = (output.get("target") if isinstance(output, dict) else None) or f"step {args.step}"
        outcome = Outcome(target=target, changed=False, dry_run=ctx.dry_run, message=str(nothing))
        ctx.record(outcome.message, kind="undo", undone_step=args.step)
        return outcome
    outcome = _run_undo(args.step, plan, ctx)
    reason = f" ({args.reason})" if args.reason else ""
    outcome = outcome.model_copy(update={
        "message": f"undo of step {args.step} with {plan.action}{reason}: {outcome.message}",
        "details": {**outcome.details, "undone_step": args.step, "undo_action": plan.action},
    })
    ctx.record(outcome.message, kind="undo", undone_step=args.step, undo_action=plan.action)
    return outcome


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


def undoable_steps(store: EvidenceStore, incident_id: str) -> list[tuple[str, str]]:
    """(step, action) of every step that changed something and recorded how to undo it, in run order."""
    found: dict[str, str] = {}
    for item in store.manifest(incident_id):
        match = _STEP_RECORD.match(item.name)
        if match is None:
            continue
        try:
            with store.open(incident_id, item.name) as handle:
                record = json.load(handle)
        except (OSError, ValueError, IrpError):
            continue
        output = record.get("output")
        if not record.get("dry_run") and isinstance(output, dict) and output.get("undo"):
            found[match["step"]] = str(record.get("action", ""))
    return list(found.items())


def undo_recorded_step(store: EvidenceStore, incident_id: str, step: str, *, stage: Stage | None = None,
                       dry_run: bool = False, actor: str | None = None) -> dict[str, Any]:
    """Run the undo plan recorded by a completed step; archive what it did; return the undo's output."""
    name, record = find_step_record(store, incident_id, step, stage)
    plan = recorded_undo(step, record)
    actor = actor or getpass.getuser()
    stage_value = Stage(record["stage"])
    ctx = ActionContext(
        incident=store.load_incident(incident_id),
        alert=Alert(source=AlertSource.manual, title=f"irp actions undo {incident_id} {step}",
                    labels={"requested_by": actor}),
        store=store,
        stage=stage_value,
        step=f"undo_{step}"[:63],
        action=plan.action,
        dry_run=dry_run,
    )
    started = utcnow()
    result = _run_undo(step, plan, ctx).model_dump(mode="json")
    if not dry_run:
        store.put_json(incident_id, f"undo/{stage_value.value}/{step}.json", {
            "step": step, "step_record": name, "undo": plan.model_dump(mode="json"), "output": result,
            "requested_by": actor, "started_at": started.isoformat(), "ended_at": utcnow().isoformat(),
            "evidence": [item.name for item in ctx.evidence],
        }, source_system="irp")
        for entry in ctx.timeline:
            store.append_event(incident_id, entry.model_copy(update={"actor": actor}))
        store.append_event(incident_id, TimelineEntry(
            kind="undo", stage=stage_value, step=step, actor=actor,
            message=f"step {step} undone by {actor} with {plan.action}: {result['message']}".rstrip(": "),
        ))
    return result
