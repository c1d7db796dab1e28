"""`irp actions ...`: undo what a containment or restore step changed; track assigned actions until closed.

`irp actions undo INCIDENT STEP` reads the step's record (steps/<stage>/<step>.json in the
evidence store), shows its undo plan, and runs it: the undo action is itself idempotent and
dry-runnable, its outcome is archived as undo/<stage>/<step>.json and put on the incident's
timeline. `irp actions list [--open]` lists the measures and corrective actions (§6, §11) of every
incident; `irp actions close INCIDENT ACTION_ID --by NAME --resolution TEXT` closes one (record,
timeline and audit log).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from irp.cli.common import echo_json, open_evidence_store, user_errors, warn_skipped
from irp.models import Stage

__all__ = ["actions_app"]

actions_app = typer.Typer(no_args_is_help=True, help="Undo what a containment step changed; list and close actions.")


@actions_app.callback()
def _group() -> None:
    """Undo what a step changed on third parties; list and close the actions assigned to people."""


@actions_app.command()
def undo(
    incident: Annotated[str, typer.Argument(metavar="INCIDENT", help="Incident id, e.g. INC-20260513-0001.")],
    step: Annotated[str, typer.Argument(metavar="STEP", help="Id of the step to undo, e.g. quarantine.")],
    stage: Annotated[Stage | None, typer.Option(help="Stage of the step, when the id is in several.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the undo without changing anything.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Roll back what STEP changed in INCIDENT (e.g. release a quarantined instance after a false positive)."""
    from irp.actions.actions import find_step_record, undo_recorded_step

    with user_errors():
        store = open_evidence_store()
        name, record = find_step_record(store, incident, step, stage)
        output = record.get("output") if isinstance(record.get("output"), dict) else {}
        plan = output.get("undo")
        said = output.get("message", record.get("status"))
        if record.get("dry_run"):
            said = f"ran as a dry run and changed nothing ({said})"
        typer.echo(f"step {step} ({record.get('action')}, {name}): {said}")
        if plan:
            typer.echo(f"undo: {plan['action']} {json.dumps(plan.get('args', {}), sort_keys=True)}")
        if plan and not dry_run and not yes:
            typer.confirm("Run this undo now?", abort=True)
        result = undo_recorded_step(store, incident, step, stage=stage, dry_run=dry_run)
    typer.echo(result.get("message", "done") if isinstance(result, dict) else "done")
    if isinstance(result, dict):
        for check in result.get("checks", []):
            typer.echo(f"  checked: {check}")


@actions_app.command("list")
def list_actions(
    open_only: Annotated[bool, typer.Option("--open", help="Only actions not closed yet.")] = False,
    incident: Annotated[str | None, typer.Option("--incident", help="Only the actions of this incident.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """List the measures and corrective actions (§6, §11) of every incident, earliest due first."""
    from irp.history import find_incident, load_incidents
    from irp.models import utcnow

    with user_errors():
        store = open_evidence_store()
        if incident:
            incidents, skipped = [find_incident(store, incident)], []
        else:
            incidents, skipped = load_incidents(store)
    warn_skipped(skipped)
    now = utcnow()
    rows = []
    for i in incidents:
        for a in i.actions:
            if open_only and a.status == "closed":
                continue
            overdue = a.status != "closed" and a.due_at is not None and a.due_at < now
            rows.append({"incident": i.id, "incident_status": i.status.value, **a.model_dump(mode="json"),
                         "kind": "corrective" if a.stage == Stage.review else "measure", "overdue": overdue})
    rows.sort(key=lambda r: (r["due_at"] is None, r["due_at"] or "", r["incident"], r["id"]))
    if as_json:
        echo_json(rows)
        return
    if not rows:
        typer.echo("no open actions" if open_only else "no actions")
        return
    typer.echo(f"{'INCIDENT':<21} {'ACTION':<9} {'KIND':<10} {'STATUS':<7} {'DUE (UTC)':<17} {'OWNER':<30} TITLE")
    for r in rows:
        due = r["due_at"][:16].replace("T", " ") if r["due_at"] else "—"
        flag = " OVERDUE" if r["overdue"] else ""
        typer.echo(f"{r['incident']:<21} {r['id']:<9} {r['kind']:<10} {r['status']:<7} {due:<17} "
                   f"{r['owner']:<30} {r['title']}{flag}")
    typer.echo(f"{len(rows)} action(s), {sum(r['overdue'] for r in rows)} overdue")


@actions_app.command("close")
def close(
    incident: Annotated[str, typer.Argument(metavar="INCIDENT", help="Incident id.")],
    action_id: Annotated[str, typer.Argument(metavar="ACTION_ID", help="Action id, e.g. A-3F9C2B (irp actions list).")],
    by: Annotated[str, typer.Option("--by", help="Who closes it (recorded in the audit log).")],
    resolution: Annotated[str, typer.Option("--resolution", help="What was done; how to check it.")],
) -> None:
    """Close an action of INCIDENT (timeline, evidence, audit log); the last measure of a waiting stage resumes it."""
    from irp.engine.decisions import record, resume_waiting_run
    from irp.history import find_incident
    from irp.lifecycle import Decision, decision_id, needs
    from irp.models import utcnow

    with user_errors():
        store = open_evidence_store()
        current = find_incident(store, incident)
        now = utcnow()
        who = " ".join(by.split())
        decision = Decision(decision="close_measure", id=decision_id("cli", current.id, action_id, now), by=who or " ",
                            measure=action_id.strip(), note=resolution.strip())
        record(store, current, decision, now)
        updated = find_incident(store, current.id)
    item = next(a for a in updated.actions if a.id.casefold() == action_id.strip().casefold())
    late = item.due_at is not None and now > item.due_at
    typer.echo(f"action {item.id} of {updated.id} closed by {who}{' (after its due date)' if late else ''}: {item.title}")
    waiting = updated.waiting
    if waiting is not None:
        left = needs(updated, waiting.stage)
        if left:
            typer.echo(f"{updated.id} still waits at {waiting.stage.value}: {'; '.join(left)}")
        else:
            said = resume_waiting_run(updated)
            if said:
                typer.echo(said)
