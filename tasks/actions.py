"""`actions.undo_step`: a playbook rolls back what an earlier step of the same run changed.

For the automatic undo a playbook declares, e.g. in restore, after a false positive:

    - id: reopen_exports
      action: actions.undo_step
      when: "alert.labels.get('false_positive') == 'true'"
      args: {step: pause_exports, reason: "false positive confirmed by the analyst"}

Side effects: those of the undo action the earlier step recorded (`output.undo`), run with this
step's context (its own journal, evidence and dry run). The same plans are run by hand with
`irp actions undo INCIDENT STEP` (tasks/integrations.py: undo_step).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, ValidationError

from irp.errors import ActionError
from tasks.integrations import Outcome, UndoPlan
from tasks.registry import ActionArgs, ActionContext, action, get_registry


class UndoStepArgs(ActionArgs):
    step: str = Field(..., pattern=r"^[a-z][a-z0-9_]{0,62}$", description="Id of an earlier step of this run.")
    reason: str = Field("", max_length=500, description="Why, for the timeline (e.g. false positive).")


def _as_dict(record: Any) -> dict[str, Any]:
    return record.model_dump(mode="json") if isinstance(record, BaseModel) else dict(record)


@action("actions")
def undo_step(args: UndoStepArgs, ctx: ActionContext) -> Outcome:
    """Roll back what an earlier step of this run changed, with the undo plan it recorded."""
    if args.step not in ctx.steps:
        ran = ", ".join(ctx.steps) or "none"
        raise ActionError(f"actions.undo_step: no step {args.step!r} ran before this one; steps so far: {ran}")
    record = _as_dict(ctx.steps[args.step])
    output = record.get("output") if isinstance(record.get("output"), dict) else {}
    target = output.get("target") or f"step {args.step}"
    if record.get("status") != "completed" or not output.get("undo"):
        if record.get("status") != "completed":
            why = f"it {record.get('status')}"
        elif record.get("dry_run"):
            why = "it ran as a dry run"
        else:
            why = output.get("message") or "its action has no undo"
        outcome = Outcome(target=target, changed=False, dry_run=ctx.dry_run,
                          message=f"step {args.step} has nothing to undo: {why}")
        ctx.record(outcome.message, kind="undo", undone_step=args.step)
        return outcome
    plan = UndoPlan.model_validate(output["undo"])
    spec = get_registry().get(plan.action)
    if spec is None:
        raise ActionError(f"actions.undo_step: step {args.step} recorded undo action {plan.action!r}, "
                          "which is not registered")
    try:
        parsed = spec.args_model.model_validate(plan.args)
    except ValidationError as exc:
        raise ActionError(f"actions.undo_step: recorded arguments of {plan.action} are invalid: "
                          f"{exc.error_count()} error(s)") from None
    result = spec.fn(parsed, ctx)
    outcome = result if isinstance(result, Outcome) else Outcome.model_validate(result)
    reason = f" ({args.reason})" if args.reason else ""
    outcome = outcome.model_copy(update={
        "message": f"undo of step {args.step} with {plan.action}{reason}: {outcome.message}",
        "details": {**outcome.details, "undone_step": args.step, "undo_action": plan.action},
    })
    ctx.record(outcome.message, kind="undo", undone_step=args.step, undo_action=plan.action)
    return outcome
