"""Notify (policy §7, §12, §14): render the notifications the incident calls for.

Runs twice: the initial notification right after analyse (beside contain and restore, so no
regulatory clock waits for containment), the final one after review.
Side effects: rendered messages archived as evidence, timeline entries.
"""

from __future__ import annotations

from typing import Any, Literal

from jinja2 import TemplateNotFound
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from irp.errors import ActionError
from irp.models import Incident, Stage
from irp.settings import get_settings
from irp.templating import TemplateError, render_message
from tasks.registry import ActionArgs, ActionContext, action
from tasks.stage import RunContext, StageResult, run_stage


class RenderArgs(ActionArgs):
    template: str = Field(..., pattern=r"^[a-z0-9_]+$", description="Template name in playbooks/templates/.")
    language: Literal["fr", "en"] = Field("fr", description="Language of the message.")
    audience: Literal["client", "authority", "internal", "data_subjects"] = Field(
        ..., description="Who the message is for (§12: only these)."
    )


@action("notification")
def render(args: RenderArgs, ctx: ActionContext) -> dict[str, Any]:
    """Render a notification template and archive the message as evidence."""
    folder = get_settings().playbooks_dir / "templates"
    name = f"{args.template}.{args.language}.md.j2"
    try:
        subject, body = render_message(str(folder), name, ctx.template_vars())
    except TemplateNotFound:
        raise ActionError(f"no template {name} in {folder}") from None
    except TemplateError as exc:
        raise ActionError(f"template {name}: {exc}") from None
    phase = ctx.phase or "initial"
    item = ctx.archive(
        f"notifications/{phase}/{args.template}.{args.language}.md",
        f"Subject: {subject}\n\n{body}".encode(),
        content_type="text/markdown; charset=utf-8",
        source_system="irp",
    )
    ctx.record(f"{phase} {args.audience} notification rendered: {subject}", kind="notification",
               template=args.template, audience=args.audience, evidence=item.name)
    return {"subject": subject, "evidence": item.name, "audience": args.audience, "phase": phase}


@task(name="notify", cache_policy=NO_CACHE, task_run_name="notify-{phase}")
def notify(incident: Incident, run: RunContext, phase: str) -> StageResult:
    """Run the playbook's notify steps of `phase` (initial or final)."""
    return run_stage(Stage.notify, incident, run, phase=phase)
