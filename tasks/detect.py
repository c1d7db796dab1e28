"""Detect (policy §4): record what was detected, where, and whom it affects.

Side effects: incident fields (scope, reporter, summary) and timeline entries.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import Field, field_validator

from irp.models import Incident, Stage
from irp.text import split_list
from tasks.registry import ActionArgs, ActionContext, action
from tasks.stage import RunContext, StageResult, run_stage


class ScopeArgs(ActionArgs):
    affected_clients: list[str] = Field(default_factory=list, description="Client ids (list or a,b,c).")
    affected_systems: list[str] = Field(default_factory=list, description="Systems (list or a,b,c).")
    reporter: str | None = Field(None, description="Who reported it.")
    summary: str | None = Field(None, description="One paragraph on what is known.")

    _lists = field_validator("affected_clients", "affected_systems", mode="before")(split_list)


@action("incident")
def set_scope(args: ScopeArgs, ctx: ActionContext) -> dict[str, Any]:
    """Record the clients and systems affected, the reporter and a summary."""
    changes: dict[str, Any] = {
        "affected_clients": list(dict.fromkeys([*ctx.incident.affected_clients, *args.affected_clients])),
        "affected_systems": list(dict.fromkeys([*ctx.incident.affected_systems, *args.affected_systems])),
    }
    if args.reporter is not None:
        changes["reporter"] = args.reporter
    if args.summary is not None:
        changes["summary"] = args.summary
    ctx.update_incident(**changes)
    ctx.record(
        f"scope: clients {', '.join(changes['affected_clients']) or 'none known'}; "
        f"systems {', '.join(changes['affected_systems']) or 'none known'}",
        kind="finding",
    )
    return changes


@task(name="detect", cache_policy=NO_CACHE)
def detect(incident: Incident, run: RunContext) -> StageResult:
    """Run the playbook's detect steps."""
    return run_stage(Stage.detect, incident, run)
