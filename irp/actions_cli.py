"""`irp actions ...`: undo what a containment or restore step changed.

`irp actions undo INCIDENT STEP` reads the step's record (steps/<stage>/<step>.json in the
evidence store), shows its undo plan, and runs it: the undo action is itself idempotent and
dry-runnable, its outcome is archived as undo/<stage>/<step>.json and put on the incident's
timeline. Registered in irp/cli.py as `app.add_typer(actions_app, name="actions")`.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from irp.errors import IrpError
from irp.models import Stage

__all__ = ["actions_app"]

actions_app = typer.Typer(no_args_is_help=True, help="Undo what a containment step changed.")


@actions_app.callback()
def _group() -> None:
    """Actions on third parties (AWS, the platform's admin API): undo what a step changed."""


@actions_app.command()
def undo(
    incident: Annotated[str, typer.Argument(metavar="INCIDENT", help="Incident id, e.g. INC-20260513-0001.")],
    step: Annotated[str, typer.Argument(metavar="STEP", help="Id of the step to undo, e.g. quarantine.")],
    stage: Annotated[Stage | None, typer.Option(help="Stage of the step, when the id is in several.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the undo without changing anything.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Roll back what STEP changed in INCIDENT (e.g. release a quarantined instance after a false positive)."""
    from irp.evidence import open_store
    from irp.settings import get_settings
    from tasks.integrations import find_step_record, undo_step

    try:
        store = open_store(get_settings().evidence_url)
        name, record = find_step_record(store, incident, step, stage)
        output = record.get("output") if isinstance(record.get("output"), dict) else {}
        plan = output.get("undo")
        typer.echo(f"step {step} ({record.get('action')}, {name}): {output.get('message', record.get('status'))}")
        if plan:
            typer.echo(f"undo: {plan['action']} {json.dumps(plan.get('args', {}), sort_keys=True)}")
        if plan and not dry_run and not yes:
            typer.confirm("Run this undo now?", abort=True)
        result = undo_step(store, incident, step, stage=stage, dry_run=dry_run)
    except IrpError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(result.get("message", "done") if isinstance(result, dict) else "done")
    if isinstance(result, dict):
        for check in result.get("checks", []):
            typer.echo(f"  checked: {check}")
