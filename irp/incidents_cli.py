"""`irp incidents …`: incidents as the evidence store records them, independent of Prefect's database.

    list      the incidents, filtered by type, severity, status and date; a table, JSON or CSV
    show      one incident: its timeline (stages, steps, approvals, notifications, evidence, audit),
              its flow runs with their Prefect UI links, the playbook version that ran, its metrics
    export    a self-contained bundle: report, timeline, metrics, evidence manifest, custody/audit log
    metrics   time to acknowledge, contain, restore, notify; MTTA/MTTC/MTTR by type and severity
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from irp.errors import IrpError
from irp.models import IncidentStatus, IncidentType, Severity

__all__ = ["incidents_app"]

incidents_app = typer.Typer(no_args_is_help=True, help="List, show, export incidents; their deadlines.")

TypeOption = Annotated[IncidentType | None, typer.Option("--type", help="Only this incident type (policy §2).")]
SeverityOption = Annotated[Severity | None, typer.Option("--severity", help="Only this severity (policy §5).")]
StatusOption = Annotated[IncidentStatus | None, typer.Option("--status", help="Only incidents in this status.")]
SinceOption = Annotated[str | None, typer.Option(
    "--since", metavar="DATE", help="Only incidents detected on or after DATE (YYYY-MM-DD or ISO 8601 time, UTC).")]


@contextmanager
def _user_errors() -> Iterator[None]:
    """An IrpError is one line on stderr and exit code 1."""
    try:
        yield
    except IrpError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _store():
    from irp.evidence import open_store
    from irp.settings import get_settings

    return open_store(get_settings().evidence_url)


def _selected(type_: IncidentType | None, severity: Severity | None, status: IncidentStatus | None,
              since: str | None):
    from irp.history import filter_incidents, load_incidents, parse_since

    since_at = parse_since(since) if since else None
    store = _store()
    incidents, skipped = load_incidents(store)
    for line in skipped:
        typer.echo(f"warning: skipped {line}", err=True)
    return store, filter_incidents(incidents, type=type_, severity=severity, status=status, since=since_at)


@incidents_app.command("list")
def list_incidents(
    type_: TypeOption = None,
    severity: SeverityOption = None,
    status: StatusOption = None,
    since: SinceOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV with a header line.")] = False,
) -> None:
    """List incidents from the evidence store, newest first (works without Prefect's database)."""
    from irp.history import incident_row, rows_csv
    from irp.reports.kpis import format_duration

    with _user_errors():
        if as_json and as_csv:
            raise IrpError("--json and --csv exclude each other; give one")
        _, incidents = _selected(type_, severity, status, since)
        rows = [incident_row(i) for i in incidents]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if as_csv:
        typer.echo(rows_csv(rows), nl=False)
        return
    if not rows:
        typer.echo("no incidents match")
        return
    typer.echo(f"{'ID':<21} {'DETECTED (UTC)':<17} {'TYPE':<23} {'SEVERITY':<9} {'STATUS':<11} "
               f"{'RESTORE':>9}  TITLE")
    for incident, row in zip(incidents, rows, strict=True):
        title = incident.title if len(incident.title) <= 60 else incident.title[:59] + "…"
        typer.echo(f"{incident.id:<21} {incident.detected_at:%Y-%m-%d %H:%M} {incident.type.value:<23} "
                   f"{incident.severity.value:<9} {incident.status.value:<11} "
                   f"{format_duration(row['restore_seconds']):>9}  {title}")
    typer.echo(f"{len(rows)} incident(s)")


@incidents_app.command("show")
def show(
    incident_id: Annotated[str, typer.Argument(metavar="ID", help="Incident id, e.g. INC-20261129-7F3A9C.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the record, timeline and metrics as JSON.")] = False,
) -> None:
    """Show one incident: timeline, flow runs (Prefect UI links), playbook version, metrics, actions."""
    from irp import audit
    from irp.history import describe_measures, find_incident, flow_run_url, full_timeline, ui_base
    from irp.reports.kpis import measure_incident

    with _user_errors():
        store = _store()
        incident = find_incident(store, incident_id)
        evidence = store.manifest(incident.id)
        entries = audit.entries(store, incident.id)
        rows = full_timeline(incident, evidence, entries)
        metrics = measure_incident(incident)
    base = ui_base()
    runs = [{"id": run_id, "role": role, "url": flow_run_url(run_id, base)}
            for run_id, role in _flow_runs(incident, entries).items()]
    if as_json:
        typer.echo(json.dumps({
            "incident": incident.model_dump(mode="json", exclude={"timeline"}),
            "flow_runs": runs,
            "metrics": metrics.model_dump(mode="json"),
            "timeline": [r.model_dump(mode="json") for r in rows],
            "evidence_location": store.location(incident.id),
        }, indent=2, ensure_ascii=False))
        return
    echo = typer.echo
    echo(f"{incident.id}  {incident.title}")
    echo(f"  type       {incident.type.value} ({incident.type.label})")
    echo(f"  severity   {incident.severity.value} ({incident.severity_source}"
         f"{': ' + incident.severity_reason if incident.severity_reason else ''})")
    echo(f"  status     {incident.status.value}{'  escalated' if incident.escalated else ''}")
    echo(f"  detected   {incident.detected_at:%Y-%m-%d %H:%M:%S} UTC   aware {incident.aware_at:%Y-%m-%d %H:%M:%S} UTC")
    echo(f"  reporter   {incident.reporter or '—'}")
    if incident.playbook:
        p = incident.playbook
        echo(f"  playbook   {p.name} v{p.version} (policy {p.policy_version}) {p.path} sha256 {p.sha256}")
    else:
        echo("  playbook   —")
    echo(f"  evidence   {store.location(incident.id)} ({len(evidence)} items)")
    echo("flow runs:")
    for run in runs:
        url = run["url"] or "(no Prefect UI configured: set PREFECT_UI_URL or PREFECT_API_URL)"
        echo(f"  {run['id']}  {url}  ({run['role']})")
    if not runs:
        echo("  —")
    echo("metrics:")
    for line in describe_measures(metrics):
        echo(f"  {line}")
    echo("actions:")
    for a in incident.actions:
        due = f"due {a.due_at:%Y-%m-%d %H:%M}" if a.due_at else "no due date"
        echo(f"  {a.id}  {a.stage.value:<8} {a.status:<6} {a.owner}  {due}  {a.title}")
    if not incident.actions:
        echo("  —")
    echo("timeline (UTC):")
    for r in rows:
        by = f"  [{r.by}]" if r.by and r.by != "irp" else ""
        echo(f"  {r.at:%Y-%m-%d %H:%M:%S}  {r.kind:<12} {r.what}{by}")


def _flow_runs(incident, entries) -> dict[str, str]:
    """Every flow run of the incident, oldest first: the declaration, each response run (from the audit log)."""
    runs: dict[str, str] = {}
    for entry in entries:
        if entry.details.get("act") == "declared" and entry.details.get("flow_run_id"):
            runs.setdefault(entry.details["flow_run_id"], "declare_incident")
        if entry.details.get("act") == "opened":
            for run_id in entry.details.get("flow_run_ids") or []:
                runs.setdefault(run_id, "response")
    for run_id in incident.flow_run_ids:
        runs.setdefault(run_id, "response")
    return runs


@incidents_app.command("export")
def export(
    incident_id: Annotated[str, typer.Argument(metavar="ID", help="Incident id.")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Bundle file (default: ./<ID>-bundle.tar.gz).")] = None,
) -> None:
    """Write a self-contained bundle: review report, timeline, metrics, evidence manifest, custody/audit log."""
    from irp.history import export_bundle

    with _user_errors():
        result = export_bundle(_store(), incident_id, output or Path(f"{incident_id}-bundle.tar.gz"))
    typer.echo(f"bundle {result.path} ({result.size} bytes, sha256 {result.sha256})")
    for name in result.files:
        typer.echo(f"  {name}")


@incidents_app.command("metrics")
def metrics(
    type_: TypeOption = None,
    severity: SeverityOption = None,
    status: StatusOption = None,
    since: SinceOption = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print per-incident measures and aggregates as JSON.")] = False,
) -> None:
    """Time to acknowledge, contain, restore, notify per incident; MTTA/MTTC/MTTR/MTTN by type and severity."""
    from irp.reports.kpis import METRICS, aggregate, aggregate_rows, format_duration, measure_incident

    with _user_errors():
        _, incidents = _selected(type_, severity, status, since)
        measured = [measure_incident(i) for i in incidents]
        aggregates = aggregate(measured)
    if as_json:
        typer.echo(json.dumps({"incidents": [m.model_dump(mode="json") for m in measured],
                               "aggregates": [a.model_dump(mode="json") for a in aggregates]},
                              indent=2, ensure_ascii=False))
        return
    typer.echo(f"{'ID':<21} {'SEVERITY':<9} " + " ".join(f"{m.upper():<19}" for m in METRICS))
    for m in measured:
        cells = " ".join(f"{format_duration(x.seconds):>9} {x.state:<9}" for x in m.measures.values())
        typer.echo(f"{m.incident_id:<21} {m.severity.value:<9} {cells}")
    typer.echo("")
    rows = aggregate_rows(aggregates)
    header = list(rows[0])
    widths = {h: max(len(h), *(len(str(r[h])) for r in rows)) for h in header}
    typer.echo("  ".join(h.upper().ljust(widths[h]) for h in header))
    for row in rows:
        typer.echo("  ".join(str(row[h]).ljust(widths[h]) for h in header))


# Regulatory clocks (docs/notifications.md): irp/deadlines_cli.py.
from irp.deadlines_cli import deadlines, notify  # noqa: E402

incidents_app.command("deadlines")(deadlines)
incidents_app.command("notify")(notify)
