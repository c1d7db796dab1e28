"""Actions usable in every stage: timeline notes, evidence collection, assigned measures.

Side effects: timeline entries on the incident, items in the evidence store.
"""

from __future__ import annotations

import json
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from irp.errors import ActionError
from irp.models import ActionItem, utcnow
from tasks.registry import ActionArgs, ActionContext, action


class RecordArgs(ActionArgs):
    message: str = Field(..., min_length=1, description="What happened or was decided.")
    kind: str = Field("note", description="Timeline entry kind, e.g. note, decision, finding.")


@action("timeline")
def record(args: RecordArgs, ctx: ActionContext) -> dict[str, Any]:
    """Add an entry to the incident timeline."""
    entry = ctx.record(args.message, kind=args.kind)
    return {"recorded": entry.message}


class CollectArgs(ActionArgs):
    name: str = Field(..., description="Evidence name, e.g. logs/auth.json (letters, digits, . _ - /).")
    content: Any = Field(None, description="Text, or a structure archived as JSON.")
    path: Path | None = Field(None, description="A local file to archive, streamed (e.g. a log bundle).")
    content_type: str | None = Field(None, description="MIME type; guessed from content when unset.")
    source_system: str = Field("", description="System the evidence comes from.")
    source_time: str | None = Field(None, description="The source's own timestamp, kept as given.")

    @model_validator(mode="after")
    def _one_source(self) -> CollectArgs:
        if (self.content is None) == (self.path is None):
            raise ValueError("give exactly one of content or path")
        return self


@action("evidence")
def collect(args: CollectArgs, ctx: ActionContext) -> dict[str, Any]:
    """Archive a document or a local file as evidence, with its SHA-256 in the manifest."""
    options = {"source_system": args.source_system, "source_time": args.source_time}
    if args.path is not None:
        try:
            with open(args.path, "rb") as handle:
                item = ctx.archive(args.name, handle, content_type=args.content_type or "application/octet-stream",
                                   **options)
        except OSError as exc:
            raise ActionError(f"cannot read {args.path}: {exc.strerror}") from None
    elif isinstance(args.content, str):
        item = ctx.archive(args.name, args.content.encode(), content_type=args.content_type or "text/plain",
                           **options)
    else:
        data = json.dumps(args.content, indent=2, sort_keys=True, ensure_ascii=False, default=str).encode()
        item = ctx.archive(args.name, data, content_type=args.content_type or "application/json", **options)
    return {"name": item.name, "sha256": item.sha256, "size": item.size}


class AssignArgs(ActionArgs):
    title: str = Field(..., min_length=1, description="The measure to carry out.")
    owner: str = Field(..., min_length=1, description="Team or person responsible.")
    details: str = Field("", description="How, and what to record when done.")
    due_in_hours: float | None = Field(None, gt=0, description="Deadline from now.")
    kind: Literal["measure", "corrective"] = Field(
        "measure", description="measure: a response measure (§6); corrective: a review action (§11)."
    )


@action("response")
def assign_action(args: AssignArgs, ctx: ActionContext) -> dict[str, Any]:
    """Assign a manual measure or a corrective action to an owner; tracked until closed."""
    item = ActionItem(
        id=f"A-{secrets.token_hex(3).upper()}",
        title=args.title,
        owner=args.owner,
        stage=ctx.stage,
        details=args.details,
        due_at=utcnow() + timedelta(hours=args.due_in_hours) if args.due_in_hours else None,
    )
    ctx.update_incident(actions=[*ctx.incident.actions, item])
    ctx.record(f"{args.kind} assigned to {args.owner}: {args.title}", kind="action", action_id=item.id)
    return item.model_dump(mode="json")
