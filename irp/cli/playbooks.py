"""`irp playbooks …`: check playbooks and routing.yaml, show where an alert would be routed, print the
playbook schema and the action catalogue."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from irp.cli.common import echo_err, echo_json
from irp.errors import IrpError, PlaybookError, field_errors
from irp.settings import get_settings

if TYPE_CHECKING:
    from irp.intake.sources import Source
    from irp.models import Alert

__all__ = ["playbooks_app"]

playbooks_app = typer.Typer(no_args_is_help=True, help="Check playbooks and print their schema.")

ROUTING_FILE = "routing.yaml"  # the intake's alert routing, validated with the playbooks


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
    from irp.notifications import validate_templates  # message templates: §7, Art. 33(3) contents
    from irp.notifications.checks import measure_notes  # how letters name each measure
    from irp.playbook.loader import load_playbook, validate_routing

    files = _playbook_files(paths or [])
    if not files:
        raise IrpError(f"no playbook files (*.yaml) in {', '.join(map(str, paths or []))}")
    failed = 0
    loaded = []
    for file in files:
        if file.name == ROUTING_FILE:
            problems = validate_routing(file)
        else:
            try:
                playbook = load_playbook(file)
                problems, notes = [], playbook.notes
                loaded.append((file, playbook.playbook))
            except PlaybookError as exc:
                problems, notes = exc.problems, ()
            for note in notes:  # not a problem: the run holds such a step for an approval
                typer.echo(str(note))
        failed += bool(problems)
        for problem in problems:
            typer.echo(str(problem))
    for folder in dict.fromkeys(f.parent / "templates" for f in files if (f.parent / "templates").is_dir()):
        problems = validate_templates(folder)
        failed += bool(problems)
        for problem in problems:
            typer.echo(str(problem))
        for note in measure_notes(folder, [(f, p) for f, p in loaded if f.parent / "templates" == folder]):
            typer.echo(str(note))
    if failed:
        sys.stdout.flush()  # the summary comes after the problems, on its own line, even when both streams are merged
        echo_err(f"{failed} of {len(files)} files invalid")
        raise typer.Exit(1)
    typer.echo(f"{len(files)} files valid")


@playbooks_app.command("route")
def route(
    source: Annotated[str, typer.Argument(help="alertmanager, grafana, sns, eventbridge, pagerduty, generic or report.")],
    payload: Annotated[Path, typer.Argument(help="A request body as the source sends it (JSON); - reads stdin.")],
    routing: Annotated[Path | None, typer.Option(
        help="Routing file (default: IRP_ROUTING_FILE, else routing.yaml in the playbooks folder).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Show where a payload's alerts would go: route, incident type, severity hint, grouping key.

    Nothing is recorded and no signature is checked: this is for editing routing.yaml.
    """
    from irp.intake.routing import Router
    from irp.intake.service import routing_path
    from irp.intake.sources import SOURCES

    found = SOURCES.get(source)
    if found is None:
        raise IrpError(f"unknown source {source!r}; valid: {', '.join(SOURCES)}")
    routing = routing or routing_path(get_settings())
    router = Router.from_file(routing)  # PlaybookError: every problem as FILE:LINE:COL
    where = "stdin" if str(payload) == "-" else str(payload)
    rows = []
    for alert, routed, event in router.route_all(_read_alerts(found, source, payload, where)):
        rows.append({"fingerprint": alert.fingerprint, "title": alert.title, "event": event,
                     "labels": alert.labels, "mapped_labels": dict(routed.labels) if routed else {},
                     "route": routed.route if routed else None,
                     "incident_type": (routed.incident_type.value if routed.incident_type else "triage") if routed
                     else None,
                     "severity_hint": routed.severity.value if routed and routed.severity else None,
                     "clients": list(routed.clients) if routed else [],
                     "group_key": routed.group_key if routed else None})
    if as_json:
        echo_json({"routing": str(routing), "sha256": router.sha256, "alerts": rows})
        return
    typer.echo(f"{where}: {len(rows)} {source} alert{'s' if len(rows) != 1 else ''}, routing {routing}")
    if not rows:
        typer.echo("  no alert in it (an SNS subscription message is confirmed, not routed)")
    for row in rows:
        typer.echo(f"- {row['title']} ({row['event']}, fingerprint {row['fingerprint']})")
        if row["route"] is None:
            typer.echo("    unrouted: no route matches and there is no default; recorded and listed at "
                       "GET /alerts/unrouted")
            continue
        severity = f", severity {row['severity_hint']}" if row["severity_hint"] else ""
        clients = f", Clients {', '.join(row['clients'])} (stated by the route: trusted)" if row["clients"] else ""
        if row["route"] == "triage":
            typer.echo(f"    no route matches; the source says{severity[1:]}: a triage incident is opened and the "
                       "internal recipients told (IRP_TRIAGE_SEVERITIES); a responder chooses the type")
            continue
        typer.echo(f"    route {row['route']} -> {row['incident_type']}{severity}{clients}")
        for label, value in row["mapped_labels"].items():
            typer.echo(f"    label {label} = {value!r} (set by the route: data, not authority)")
        typer.echo(f"    group {row['group_key']}: repeats within the dedup window join one incident")


def _read_alerts(found: Source, source: str, payload: Path, where: str) -> list[tuple[Alert, str]]:
    """The alerts in a payload file (or stdin) as `source` sends them; an unreadable or invalid one is an IrpError."""
    from pydantic import ValidationError

    from irp.intake.normalise import PayloadError
    from irp.intake.sources import alerts_in

    try:
        body = sys.stdin.buffer.read() if where == "stdin" else payload.read_bytes()
    except OSError as exc:
        raise IrpError(f"{where}: cannot read: {exc.strerror}") from None
    try:
        return alerts_in(found, body)
    except (ValidationError, PayloadError) as exc:
        pairs = field_errors(exc) if isinstance(exc, ValidationError) else exc.errors
        errors = "; ".join(f"{path or '(body)'}: {message}" for path, message in pairs)
        raise IrpError(f"{where}: not a {source} payload: {errors}") from None
    except (ValueError, RecursionError) as exc:
        raise IrpError(f"{where}: invalid JSON: {exc}") from None


@playbooks_app.command("schema")
def schema(case: Annotated[bool, typer.Option(
        "--case", help="The schema of playbook test cases instead (playbooks/schema/case.schema.json).")] = False) -> None:
    """Print the playbook JSON Schema (committed as playbooks/schema/playbook.schema.json)."""
    from irp.playbook.cases import case_json_schema
    from irp.playbook.models import playbook_json_schema

    echo_json(case_json_schema() if case else playbook_json_schema())


@playbooks_app.command("actions")
def actions() -> None:
    """Print the action catalogue (markdown), generated from the registry."""
    from irp.actions.registry import catalogue_markdown

    typer.echo(catalogue_markdown(), nl=False)


@playbooks_app.command("test")
def test(
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Case files, folders of them, or playbooks (their cases in tests/<type>/); default: playbooks/tests/.")] = None,
    record: Annotated[bool, typer.Option(
        "--record", help="Run against what is configured (IRP_*, AWS_*: moto, an account) and write the observed "
                         "AWS answers and outcome into each case, for review.")] = False,
    jobs: Annotated[int, typer.Option(
        "--jobs", "-j", min=0, help="Processes running cases at once (0: one per CPU).")] = 0,
    show_coverage: Annotated[bool, typer.Option(
        "--coverage", help="Also list, per playbook, the steps, when: sides and classification rules no case "
                           "exercised (a report: the exit code is the tests').")] = False,
) -> None:
    """Run playbook test cases offline through the real engine: no AWS, no Prefect server.

    Each failing expectation is printed as FILE:LINE:COL: expect.KEY: expected X, got Y. Exit 0 when all
    pass, 1 when an expectation fails, 2 when a case file is broken.
    """
    from irp.cli.runtime import _quiet_prefect
    from irp.playtest.suite import case_files, run_cases

    _quiet_prefect()
    playbooks_dir = get_settings().playbooks_dir
    files = case_files(paths or [], playbooks_dir)
    if not files:
        raise IrpError(f"no case files (*.yaml) in {', '.join(map(str, paths or [playbooks_dir / 'tests']))}")
    started = time.perf_counter()
    results = run_cases(files, record=record, jobs=jobs or os.cpu_count() or 1)
    elapsed = time.perf_counter() - started
    for result in results:
        for line in [*result.broken, *([] if record else result.failures)]:  # recording replaces the expectations
            typer.echo(line)
        if record and result.outcome is not None and not result.broken:
            from irp.playtest.recording import write_observed

            write_observed(result.path, result.outcome)
            answers = sum(map(len, result.outcome.recorded_facts.values()))
            typer.echo(f"{result.path}: recorded ({answers} provider answers); review it")
    if show_coverage:
        _print_coverage(results, paths or [], playbooks_dir)
    broken = sum(bool(r.broken) for r in results)
    failed = 0 if record else sum(bool(r.failures) for r in results)
    sys.stdout.flush()
    summary = f"{len(results)} cases: {len(results) - broken - failed} passed, {failed} failed, {broken} broken " \
              f"({elapsed:.1f} s)"
    if broken or failed:
        echo_err(summary)
        raise typer.Exit(2 if broken else 1)
    typer.echo(summary)


def _print_coverage(results: list, paths: list[Path], playbooks_dir: Path) -> None:
    from irp.models import IncidentType
    from irp.playtest.suite import coverage

    by_type: dict[Path, list] = {}
    for result in results:
        if result.outcome is not None and result.loaded is not None:
            playbook = result.loaded.path.resolve().parents[2] / f"{result.loaded.incident_type}.yaml"
            by_type.setdefault(playbook, []).append(result.outcome)
    if not paths:  # the whole suite: every playbook is reported, with cases or not
        for incident_type in IncidentType:
            by_type.setdefault((playbooks_dir / f"{incident_type.value}.yaml").resolve(), [])
    typer.echo("coverage:")
    for playbook, outcomes in sorted(by_type.items()):
        shown = _relative(playbook)
        try:
            gaps = coverage(Path(shown), outcomes)
        except PlaybookError as exc:
            typer.echo(f"  {shown}: cannot be read: {exc.problems[0] if exc.problems else exc}")
            continue
        if not gaps:
            typer.echo(f"  {shown}: fully covered ({len(outcomes)} cases)")
            continue
        typer.echo(f"  {shown}: {len(gaps)} not exercised ({len(outcomes)} cases):")
        for gap in gaps:
            typer.echo(f"    {gap}")


def _relative(path: Path) -> Path:
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path
