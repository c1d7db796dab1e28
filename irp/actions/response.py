"""`response.assign_action`: assign a manual measure (§6) or a corrective action (§11) to an owner.

Side effects: an action item on the incident (tracked until closed: `irp actions list`, `irp actions
close`) and a timeline entry.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any, Literal

from pydantic import Field

from irp.actions.registry import ActionArgs, ActionContext, action
from irp.models import ActionItem, utcnow


class AssignArgs(ActionArgs):
    title: str = Field(..., min_length=1, description="The measure to carry out.")
    owner: str = Field(..., min_length=1, description="Team or person responsible.")
    details: str = Field("", description="How, and what to record when done.")
    due_in_hours: float | None = Field(None, gt=0, description="Deadline from now.")
    kind: Literal["measure", "corrective"] = Field(
        "measure", description="measure: a response measure (§6); corrective: a review action (§11)."
    )


@action
def assign_action(args: AssignArgs, ctx: ActionContext) -> dict[str, Any]:
    """Assign a manual measure or a corrective action to an owner; tracked until closed."""
    item = ActionItem(
        id=f"A-{secrets.token_hex(3).upper()}",
        title=args.title,
        owner=args.owner,
        stage=ctx.stage,
        step=ctx.step,
        details=args.details,
        due_at=utcnow() + timedelta(hours=args.due_in_hours) if args.due_in_hours else None,
    )
    ctx.update_incident(actions=[*ctx.incident.actions, item])
    ctx.record(f"{args.kind} assigned to {args.owner}: {args.title}", kind="action", action_id=item.id)
    return item.model_dump(mode="json")
