"""Detect (policy §4): record what was detected, where, and whom it affects.

Side effects: incident fields (scope, reporter, summary) and timeline entries.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import Field, field_validator

from irp.engine.records import RunContext, StageResult
from irp.engine.stages import run_stage
from irp.models import Incident, Stage
from irp.text import split_list
from tasks.registry import ActionArgs, ActionContext, action


class ScopeArgs(ActionArgs):
    affected_clients: list[str] = Field(default_factory=list, description="Client ids (list or a,b,c).")
    affected_systems: list[str] = Field(default_factory=list, description="Systems (list or a,b,c).")
    reporter: str | None = Field(None, description="Who reported it.")
    summary: str | None = Field(None, description="One paragraph on what is known.")

    _lists = field_validator("affected_clients", "affected_systems", mode="before")(split_list)


@action("incident")
def set_scope(args: ScopeArgs, ctx: ActionContext) -> dict[str, Any]:
    """Record the clients and systems affected, the reporter and a summary.

    Clients read from alert data are recorded as such, unconfirmed: no §7 letter goes to them until a
    responder confirms them (Incident.client_origins); Clients the playbook writes are trusted.
    """
    source = "alert" if "affected_clients" in ctx.from_run_data else "playbook"
    changes: dict[str, Any] = {
        **ctx.incident.with_clients(args.affected_clients, source, by=f"step {ctx.step}"),
        "affected_systems": list(dict.fromkeys([*ctx.incident.affected_systems, *args.affected_systems])),
    }
    if args.reporter is not None:
        changes["reporter"] = args.reporter
    if args.summary is not None:
        changes["summary"] = args.summary
    ctx.update_incident(**changes)
    unconfirmed = [c for c in changes["affected_clients"] if not ctx.incident.client_confirmed(c)]
    if unconfirmed:
        ctx.record(f"Clients named by alert data, not confirmed: {', '.join(unconfirmed)}; §7 letters to them are "
                   f"held until a responder confirms (irp incidents confirm-clients {ctx.incident.id} --clients ... "
                   "--by NAME)", kind="finding", clients=unconfirmed)
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
