"""The top-level commands that run things: a playbook on an alert (`irp run`, `irp demo`) and the
services (`irp stack`, `irp worker`, `irp webhook`, which also prints the intake's OpenAPI document)."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path
from typing import Annotated

import typer

from irp.cli.common import echo_err
from irp.errors import IrpError
from irp.models import IncidentType, Severity
from irp.settings import REPO_ROOT, get_settings
from irp.stack import adopt_running_stack

__all__ = ["adopt_stack", "demo", "run", "stack", "webhook", "worker"]

SAMPLE_ALERT = REPO_ROOT / "playbooks" / "samples" / "data_leak.json"

_stack_note: str | None = None  # set by adopt_stack(), said by `irp run`


def adopt_stack() -> None:
    """With no PREFECT_API_URL set, use the Prefect server of a running `irp stack` (irp/stack.py)."""
    global _stack_note
    _stack_note = adopt_running_stack()


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


def run(
    incident_type: Annotated[IncidentType, typer.Argument(metavar="TYPE", help="Incident type (policy §2).")],
    alert: Annotated[Path, typer.Option("--alert", help="Alert JSON file (see README: alert format).")],
    severity: Annotated[Severity | None, typer.Option(help="Override the §5 classification.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Run every step without side effects.")] = False,
    decisions: Annotated[Path | None, typer.Option(
        "--decisions", metavar="FILE",
        help="Scripted human decisions at simulated times (approvals, measures closed, stages ended, review).")] = None,
) -> None:
    """Run the playbook of TYPE on an alert: its automatic part, then what people decide.

    Without a Prefect server (or --decisions), the run ends where it waits for people, the incident open,
    and says how to continue.
    """
    from irp.alerts import read_alert
    from irp.engine.script import load_script

    parsed = read_alert(alert)
    script = load_script(decisions) if decisions else None
    if _stack_note:
        echo_err(f"irp: {_stack_note}")
    _quiet_prefect()
    from flows.incidents import INCIDENT_FLOWS

    state = INCIDENT_FLOWS[incident_type](alert=parsed, severity=severity, dry_run=dry_run, decisions=script,
                                          return_state=True)
    _report(state)


def _report(state) -> None:
    """Print what a run of an incident flow did and, when it ended before the incident, what it waits for."""
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
    if summary.waiting is not None:
        incident_id, stage = summary.incident_id, summary.waiting.stage.value
        typer.echo(f"waiting: {summary.waiting_text}")
        typer.echo("  the incident stays open; people continue it:")
        typer.echo(f"    irp incidents show {incident_id}                  what it waits for, its measures")
        typer.echo(f"    irp actions close {incident_id} ACTION --by NAME --resolution TEXT")
        typer.echo(f"    irp incidents advance {incident_id} {stage} --by NAME --note TEXT")
        typer.echo(f"    irp incidents review {incident_id} --by NAME --causes TEXT --corrective 'title=…,owner=…,due=…'")
        typer.echo(f"    irp incidents resume {incident_id}                continue the run here")
        typer.echo("  on the stack (irp stack), runs wait in Prefect and resume by themselves when people decide")


def demo() -> None:
    """Run the data-leak playbook on the sample alert (the quick start's main job)."""
    typer.echo(f"irp demo: data_leak playbook on {SAMPLE_ALERT.relative_to(REPO_ROOT)}, "
               f"evidence in {get_settings().evidence_url}")
    run(IncidentType.data_leak, SAMPLE_ALERT, None, False, None)


def stack(
    port: Annotated[int, typer.Option(help="Port of the Prefect server and UI.")] = 4200,
    intake_port: Annotated[int, typer.Option(help="Port of the alert intake.")] = 8765,
    no_intake: Annotated[bool, typer.Option("--no-intake", help="Do not start the alert intake.")] = False,
    process_worker: Annotated[bool, typer.Option(
        "--process-worker", help="Use Prefect's process worker (a new process per run) instead of irp worker.")] = False,
    workers: Annotated[int, typer.Option(help="irp worker processes (0: one per CPU core).", min=0)] = 0,
    host: Annotated[str, typer.Option(
        help="Address the UI and the intake listen on; other than loopback needs PREFECT_SERVER_API_AUTH_STRING "
             "and IRP_WEBHOOK_TOKEN.")] = "127.0.0.1",
) -> None:
    """Start the local stack (Prefect server and UI, deployments, worker, alert intake) until Ctrl-C."""
    from irp.stack import serve_forever

    serve_forever(port, intake_port, with_intake=not no_intake, process_worker=process_worker,
                  workers=workers or os.cpu_count() or 1, host=host)


def worker(
    pool: Annotated[str, typer.Option(help="Work pool to take runs from.")] = "irp",
    poll_seconds: Annotated[float, typer.Option(help="Seconds between polls.", min=0.05)] = 0.25,
    max_runs: Annotated[int | None, typer.Option(
        help="Runs executed at once (default: IRP_WORKER_MAX_RUNS, 64).", min=1)] = None,
) -> None:
    """Run flows of the pool in this process (fast pickup); stops on Ctrl-C after the runs in progress."""
    from irp.settings import get_settings
    from irp.worker import serve

    serve(pool, poll_seconds, max_runs or get_settings().worker_max_runs)


def webhook(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8765,
    local: Annotated[bool, typer.Option(
        "--local", help="Local use: sources with no credential configured accept unauthenticated alerts "
                        "(only on a loopback address).")] = False,
    openapi: Annotated[bool, typer.Option(
        "--openapi", help="Print the intake's OpenAPI document (committed as docs/openapi.json) and exit.")] = False,
) -> None:
    """Receive alerts (Alertmanager, Grafana, SNS, PagerDuty, generic, reports) and start incident runs."""
    if openapi:
        from irp.intake.app import openapi_spec

        typer.echo(json.dumps(openapi_spec(), indent=2, ensure_ascii=False))
        return
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    import uvicorn

    from irp.intake.app import create_app
    from irp.intake.server import server_config
    from irp.intake.service import IntakeService

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    service = IntakeService(settings, local=local)
    try:
        service.check_startup(host)
    except Exception:
        service.journal.close()
        raise
    typer.echo(f"irp webhook: http://{host}:{port}  routing {service.routing_file}  journal "
               f"{service.journal.location}{'  (local: sources without credentials are open)' if local else ''}")
    signal.signal(signal.SIGHUP, lambda signum, frame: service.request_routing_reload())
    uvicorn.Server(server_config(create_app(service), settings, host, port)).run()
