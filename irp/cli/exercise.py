"""`irp exercise TYPE --scenario FILE`: a tabletop exercise on the real playbook, on a simulated clock."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from irp.cli.common import echo_err
from irp.errors import IrpError, PlaybookError
from irp.models import IncidentType
from irp.settings import REPO_ROOT, get_settings

__all__ = ["exercise"]

_KINDS = "advance STAGE | close ID|all | approve STEP | reject STEP | review CAUSES | false_positive REASON"


def exercise(
    incident_type: Annotated[IncidentType, typer.Argument(metavar="TYPE", help="Incident type (policy §2).")],
    scenario: Annotated[Path, typer.Option("--scenario", metavar="FILE", help="The scenario (YAML).")],
    interactive: Annotated[bool, typer.Option(
        "--interactive", help="Ask the participants for each decision the response waits for, at a prompt.")] = False,
    out: Annotated[Path | None, typer.Option(
        metavar="DIR", help="Where the report goes (default: var/exercises/<exercise id>/).")] = None,
) -> None:
    """Run a tabletop exercise: the scenario's alert and injects through the real playbook, on a simulated clock.

    Nothing is sent outside and no real incident is opened; the exercise report (timeline, deadlines met or
    missed, decisions and who made them, gaps found) has the post-incident review's format, marked EXERCISE.
    """
    from irp.cli.runtime import _quiet_prefect
    from irp.playtest.exercise import load_scenario, run_exercise

    _quiet_prefect()
    try:
        loaded = load_scenario(scenario)
    except PlaybookError as exc:
        for problem in exc.problems:
            typer.echo(str(problem))
        raise typer.Exit(2) from None
    report = run_exercise(incident_type, loaded, scenario.parent, get_settings().playbooks_dir,
                          ask=_prompt if interactive else None)
    folder = out or REPO_ROOT / "var" / "exercises" / report.outcome.incident.id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "exercise-report.md").write_text(report.markdown, encoding="utf-8")
    (folder / "exercise-report.html").write_text(report.html, encoding="utf-8")
    incident = report.outcome.incident
    typer.echo(f"exercise {incident.id}  type {incident.type.value}  severity {incident.severity.value}  "
               f"status {incident.status.value}")
    typer.echo(f"  deadlines missed: {len(report.missed)}" + "".join(f"\n    {m}" for m in report.missed))
    typer.echo(f"  gaps found: {len(report.gaps)}")
    typer.echo(f"report: {folder / 'exercise-report.md'} (and .html)")


def _prompt(incident, elapsed: timedelta):
    """One decision from the participants at the prompt; None ends the exercise."""
    from irp.engine.script import ScriptedDecision, parse_offset
    from irp.lifecycle import waiting_text

    typer.echo(f"\n[{_hours(elapsed)}] {incident.id} {waiting_text(incident)}")
    line = typer.prompt(f"decision ({_KINDS}; empty: end the exercise)", default="", show_default=False).strip()
    if not line:
        return None
    kind, _, value = line.partition(" ")
    fields = {"advance": {"advance": value}, "close": {"close": value}, "approve": {"approve": value},
              "reject": {"reject": value}, "review": {"review": {"causes": value or "to be established"}},
              "false_positive": {"false_positive": True}}.get(kind)
    if fields is None:
        echo_err(f"not a decision: {kind!r}; valid: {_KINDS}")
        return _prompt(incident, elapsed)
    by = typer.prompt("who decides", default="participant").strip() or "participant"
    when = typer.prompt("at (offset from awareness)", default=_hours(elapsed + timedelta(minutes=30)))
    try:
        return ScriptedDecision.model_validate({"at": parse_offset(when), "by": by, "note": value or kind, **fields})
    except (ValueError, IrpError) as exc:
        echo_err(f"not applied: {exc}")
        return _prompt(incident, elapsed)


def _hours(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60}h{minutes % 60}m"
