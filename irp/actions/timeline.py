"""`timeline.record`: add a note, a decision or a finding to the incident timeline.

Side effects: one timeline entry.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from irp.actions.registry import ActionArgs, ActionContext, action


class RecordArgs(ActionArgs):
    message: str = Field(..., min_length=1, description="What happened or was decided.")
    kind: str = Field("note", description="Timeline entry kind, e.g. note, decision, finding.")


@action
def record(args: RecordArgs, ctx: ActionContext) -> dict[str, Any]:
    """Add an entry to the incident timeline."""
    entry = ctx.record(args.message, kind=args.kind)
    return {"recorded": entry.message}
