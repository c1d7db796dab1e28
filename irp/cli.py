"""The `irp` command line. Errors are one clear line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from irp.actions_cli import actions_app
from irp.audit_cli import audit_app
from irp.errors import IrpError, PlaybookError
from irp.evidence_cli import evidence_app
from irp.incidents_cli import incidents_app
from irp.intake_cli import route, webhook
from irp.models import IncidentType, Severity
from irp.report_cli import report_app
from irp.settings import REPO_ROOT, get_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Incident response for CallCenterRate: playbooks as code, run by Prefect.")
playbooks_app = typer.Typer(no_args_is_help=True, help="Check playbooks and print their schema.")
app.add_typer(playbooks_app, name="playbooks")
app.add_typer(actions_app, name="actions")
app.add_typer(evidence_app, name="evidence")
app.add_typer(incidents_app, name="incidents")
app.add_typer(audit_app, name="audit")
app.add_typer(report_app, name="report")
app.command()(webhook)

def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"irp {version('irp')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    """Incident response for CallCenterRate: playbooks as code, run by Prefect."""


ROUTING_FILE = "routing.yaml"  # the intake's alert routing, validated with the playbooks
SAMPLE_ALERT = REPO_ROOT / "playbooks" / "samples" / "data_leak.json"


def _echo_err(message: str) -> None:
    typer.echo(message, err=True)


class _NoTraceback(logging.Formatter):
    """A console formatter that prints a record's message without its traceback."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        bare = logging.makeLogRecord(record.__dict__ | {"exc_info": None, "exc_text": None, "stack_info": None})
        return self.inner.format(bare)


def _quiet_prefect() -> None:
    """Keep Prefect's own output to warnings, and tracebacks off the console, unless the user asked for more.

    Failed steps are reported by irp in one line; Prefect still sends the full tracebacks to its API (the UI).
    """
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if os.environ.get("IRP_DEBUG"):
        return
    from prefect import flow  # noqa: F401  (importing it configures Prefect's logging)

    for logger in [logging.getLogger(), *(logging.getLogger(name) for name in list(logging.root.manager.loggerDict))]:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler.formatter, _NoTraceback):
                handler.setFormatter(_NoTraceback(handler.formatter))


@app.command()
def run(
    incident_type: Annotated[IncidentType, typer.Argument(metavar="TYPE", help="Incident type (policy §2).")],
    alert: Annotated[Path, typer.Option("--alert", help="Alert JSON file (see README: alert format).")],
    severity: Annotated[Severity | None, typer.Option(help="Override the §5 classification.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Run every step without side effects.")] = False,
) -> None:
    """Run the playbook of TYPE on an alert; print the incident id, each stage's outcome and the evidence."""
    from irp.alerts import read_alert

    parsed = read_alert(alert)
    if _STACK_NOTE:
        _echo_err(f"irp: {_STACK_NOTE}")
    _quiet_prefect()
    from flows.incidents import INCIDENT_FLOWS

    state = INCIDENT_FLOWS[incident_type](alert=parsed, severity=severity, dry_run=dry_run, return_state=True)
    if not state.is_completed():
        error = state.result(raise_on_failure=False)
        message = str(error) if isinstance(error, IrpError) else f"{type(error).__name__}: {error}"
        raise IrpError(f"run {state.name.lower()}: {message}")
    summary = state.result()
    typer.echo(f"incident {summary.incident_id}  type {summary.type.value}  severity {summary.severity.value}"
               f"  status {summary.status.value}{'  (dry run)' if summary.dry_run else ''}")
    for outcome in summary.stages:
        label = f"{outcome.stage.value} ({outcome.phase})" if outcome.phase else outcome.stage.value
        seconds = (outcome.ended_at - outcome.started_at).total_seconds()
        typer.echo(f"  {label:<18} {outcome.status.value:<10} {seconds:6.2f}s")
    if summary.escalated:
        typer.echo("  escalated: a step failed and was escalated to the security team")
    if summary.dry_run:
        typer.echo(f"would archive {len(summary.evidence)} evidence items (nothing written):")
        for name in summary.evidence:
            typer.echo(f"  {name}")
    else:
        typer.echo(f"evidence: {summary.evidence_location} ({len(summary.evidence)} items, SHA-256 in manifest.jsonl)")


@app.command()
def stack(
    port: Annotated[int, typer.Option(help="Port of the Prefect server and UI.")] = 4200,
    intake_port: Annotated[int, typer.Option(help="Port of the alert intake.")] = 8765,
    no_intake: Annotated[bool, typer.Option("--no-intake", help="Do not start the alert intake.")] = False,
    process_worker: Annotated[bool, typer.Option(
        "--process-worker", help="Use Prefect's process worker (a new process per run) instead of irp worker.")] = False,
    workers: Annotated[int, typer.Option(help="irp worker processes (0: one per CPU core).", min=0)] = 0,
) -> None:
    """Start the local stack (Prefect server and UI, deployments, worker, alert intake) until Ctrl-C."""
    from irp.stack import serve_forever

    serve_forever(port, intake_port, with_intake=not no_intake, process_worker=process_worker,
                  workers=workers or os.cpu_count() or 1)


@app.command()
def worker(
    pool: Annotated[str, typer.Option(help="Work pool to take runs from.")] = "irp",
    poll_seconds: Annotated[float, typer.Option(help="Seconds between polls.", min=0.05)] = 0.25,
    max_runs: Annotated[int, typer.Option(help="Runs executed at once.", min=1)] = 16,
) -> None:
    """Run flows of the pool in this process (fast pickup); stops on Ctrl-C after the runs in progress."""
    from irp.worker import serve

    serve(pool, poll_seconds, max_runs)


@app.command()
def demo() -> None:
    """Run the data-leak playbook on the sample alert (the quick start's main job)."""
    typer.echo(f"irp demo: data_leak playbook on {SAMPLE_ALERT.relative_to(REPO_ROOT)}, "
               f"evidence in {get_settings().evidence_url}")
    run(IncidentType.data_leak, SAMPLE_ALERT, None, False)


def _playbook_files(paths: list[Path]) -> list[Path]:
    if not paths:
        paths = [get_settings().playbooks_dir]
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.glob("*.yaml") if p.is_file()))
        else:
            files.append(path)
    return files


@playbooks_app.command("validate")
def validate(paths: Annotated[list[Path] | None, typer.Argument(help="Files or folders (default: playbooks/).")] = None) -> None:
    """Check playbooks (and routing.yaml); print every problem as FILE:LINE:COL: key.path: message."""
    from irp.playbook.loader import load_playbook

    files = _playbook_files(paths or [])
    if not files:
        raise IrpError(f"no playbook files (*.yaml) in {', '.join(map(str, paths or []))}")
    failed = 0
    for file in files:
        if file.name == ROUTING_FILE:
            from irp.playbook.loader import validate_routing

            problems = validate_routing(file)
        else:
            try:
                problems, notes = [], load_playbook(file).notes
            except PlaybookError as exc:
                problems, notes = exc.problems, ()
            for note in notes:  # not a problem: the run holds such a step for an approval
                typer.echo(str(note))
        failed += bool(problems)
        for problem in problems:
            typer.echo(str(problem))
    from irp.notifications import validate_templates  # message templates: §7, Art. 33(3) contents

    for folder in dict.fromkeys(f.parent / "templates" for f in files if (f.parent / "templates").is_dir()):
        problems = validate_templates(folder)
        failed += bool(problems)
        for problem in problems:
            typer.echo(str(problem))
    if failed:
        sys.stdout.flush()  # the summary comes after the problems, on its own line, even when both streams are merged
        _echo_err(f"{failed} of {len(files)} files invalid")
        raise typer.Exit(1)
    typer.echo(f"{len(files)} files valid")


playbooks_app.command("route")(route)


@playbooks_app.command("schema")
def schema() -> None:
    """Print the playbook JSON Schema (committed as playbooks/schema/playbook.schema.json)."""
    from irp.playbook.models import playbook_json_schema

    typer.echo(json.dumps(playbook_json_schema(), indent=2, ensure_ascii=False))


@playbooks_app.command("actions")
def actions() -> None:
    """Print the action catalogue (markdown), generated from the registry."""
    from tasks.registry import catalogue_markdown

    typer.echo(catalogue_markdown(), nl=False)


_STACK_NOTE: str | None = None


def main() -> None:
    """Console-script entry point."""
    global _STACK_NOTE
    try:
        from irp.stack import adopt_running_stack

        if sys.argv[1:2] not in (["stack"], ["worker"], ["webhook"]):
            _STACK_NOTE = adopt_running_stack()
        app()
    except IrpError as exc:
        _echo_err(f"irp: error: {exc}")
        sys.exit(1)
    except KeyboardInterrupt:
        _echo_err("irp: interrupted")
        sys.exit(130)
    except Exception as exc:  # the last guard: no traceback reaches a user
        if os.environ.get("IRP_DEBUG"):
            raise
        _echo_err(f"irp: internal error: {type(exc).__name__}: {exc} (IRP_DEBUG=1 shows the traceback)")
        sys.exit(2)


if __name__ == "__main__":
    main()
