"""`irp incidents …`: incidents as the evidence store records them, independent of Prefect's database.

    list      the incidents, filtered by type, severity, status and date; a table, JSON or CSV
    show      one incident: its timeline (stages, steps, approvals, notifications, evidence, audit),
              its flow runs with their Prefect UI links, the playbook version that ran, its metrics
    export    a self-contained bundle: report, timeline, metrics, evidence manifest, custody/audit log
    metrics   time to acknowledge, contain, restore, notify; MTTA/MTTC/MTTR by type and severity
    deadlines the regulatory clocks: what is due, to whom and when (--all adds those met);
              with --obligation OB --late-reason TEXT, record why a notification is late (GDPR Art. 33(1))
    notify    send the notification of an obligation now (outside a run), e.g. after a delay
    confirm-clients ID --clients a,b --by NAME
              a responder confirms Clients only alert data named: their §7 letters may then go
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from irp.cli.common import echo_json, fail, open_evidence_store, user_errors, warn_skipped
from irp.errors import IrpError
from irp.models import IncidentStatus, IncidentType, Severity

__all__ = ["incidents_app"]

incidents_app = typer.Typer(no_args_is_help=True, help="List, show, export incidents; their deadlines.")

TypeOption = Annotated[IncidentType | None, typer.Option("--type", help="Only this incident type (policy §2).")]
SeverityOption = Annotated[Severity | None, typer.Option("--severity", help="Only this severity (policy §5).")]
StatusOption = Annotated[IncidentStatus | None, typer.Option("--status", help="Only incidents in this status.")]
SinceOption = Annotated[str | None, typer.Option(
    "--since", metavar="DATE", help="Only incidents detected on or after DATE (YYYY-MM-DD or ISO 8601 time, UTC).")]


def _selected(type_: IncidentType | None, severity: Severity | None, status: IncidentStatus | None,
              since: str | None):
    from irp.history import filter_incidents, load_incidents, parse_since

    since_at = parse_since(since) if since else None
    store = open_evidence_store()
    incidents, skipped = load_incidents(store)
    warn_skipped(skipped)
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

    with user_errors():
        if as_json and as_csv:
            raise IrpError("--json and --csv exclude each other; give one")
        _, incidents = _selected(type_, severity, status, since)
        rows = [incident_row(i) for i in incidents]
    if as_json:
        echo_json(rows)
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
        if row["waiting_for"] and not incident.status.ended:
            typer.echo(f"{'':<21} waits: {row['waiting_for']}")
    typer.echo(f"{len(rows)} incident(s)")


@incidents_app.command("show")
def show(
    incident_id: Annotated[str, typer.Argument(metavar="ID", help="Incident id, e.g. INC-20261129-7F3A9C.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the record, timeline and metrics as JSON.")] = False,
) -> None:
    """Show one incident: timeline, flow runs (Prefect UI links), playbook version, metrics, actions."""
    from irp import audit
    from irp.history import describe_measures, find_incident, full_timeline
    from irp.lifecycle import waiting_text
    from irp.prefect_ui import flow_run_url, ui_base
    from irp.reports.kpis import measure_incident

    with user_errors():
        store = open_evidence_store()
        incident = find_incident(store, incident_id)
        evidence = store.manifest(incident.id)
        entries = audit.entries(store, incident.id)
        rows = full_timeline(incident, evidence, entries)
        metrics = measure_incident(incident)
    base = ui_base()
    runs = [{"id": run_id, "role": role, "url": flow_run_url(run_id, base)}
            for run_id, role in _flow_runs(incident, entries).items()]
    if as_json:
        echo_json({
            "incident": incident.model_dump(mode="json", exclude={"timeline"}),
            "flow_runs": runs,
            "metrics": metrics.model_dump(mode="json"),
            "timeline": [r.model_dump(mode="json") for r in rows],
            "waiting_for": waiting_text(incident),
            "evidence_location": store.location(incident.id),
        })
        return
    echo = typer.echo
    echo(f"{incident.id}  {incident.title}")
    echo(f"  type       {incident.type.value} ({incident.type.label})")
    echo(f"  severity   {incident.severity.value} ({incident.severity_source}"
         f"{': ' + incident.severity_reason if incident.severity_reason else ''})")
    echo(f"  status     {waiting_text(incident)}{'  escalated' if incident.escalated else ''}")
    echo(f"  detected   {incident.detected_at:%Y-%m-%d %H:%M:%S} UTC   aware {incident.aware_at:%Y-%m-%d %H:%M:%S} UTC")
    echo(f"  reporter   {incident.reporter or '—'}")
    echo(f"  clients    {'; '.join(_client_origin(incident, c) for c in incident.affected_clients) or '—'}")
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
        done = f"  — closed by {a.closed_by}: {a.resolution}" if a.status == "closed" else ""
        echo(f"  {a.id}  {a.stage.value:<8} {a.status:<6} {a.owner}  {due}  {a.title}{done}")
    if incident.review:
        r = incident.review
        echo(f"review:      by {r.by} on {r.at:%Y-%m-%d %H:%M} UTC")
        echo(f"  causes     {r.causes}")
        if r.worked:
            echo(f"  worked     {r.worked}")
        if r.did_not_work:
            echo(f"  did not    {r.did_not_work}")
    if not incident.actions:
        echo("  —")
    echo("timeline (UTC):")
    for r in rows:
        by = f"  [{r.by}]" if r.by and r.by != "irp" else ""
        echo(f"  {r.at:%Y-%m-%d %H:%M:%S}  {r.kind:<12} {r.what}{by}")


def _client_origin(incident, client: str) -> str:
    """A Client with where it comes from and whether letters may go to it, e.g. acme (routing route x)."""
    origins = [o for o in incident.client_origins if o.client == client]
    origin = next((o for o in origins if o.confirmed), origins[0] if origins else None)
    where = f"{origin.source} {origin.by}".strip() if origin else "origin unknown"
    confirmed = [e.data.get("by") or e.actor for e in incident.timeline
                 if e.kind == "clients_confirmed" and client in (e.data.get("clients") or [])]
    if confirmed:
        where += f", confirmed by {confirmed[0]}"
    elif not incident.client_confirmed(client):
        where += ", NOT confirmed: letters held"
    return f"{client} ({where})"


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

    with user_errors():
        result = export_bundle(open_evidence_store(), incident_id, output or Path(f"{incident_id}-bundle.tar.gz"))
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

    with user_errors():
        _, incidents = _selected(type_, severity, status, since)
        measured = [measure_incident(i) for i in incidents]
        aggregates = aggregate(measured)
    if as_json:
        echo_json({"incidents": [m.model_dump(mode="json") for m in measured],
                   "aggregates": [a.model_dump(mode="json") for a in aggregates]})
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


def _incident(store, incident_id: str):
    from irp.evidence.base import is_incident_id

    if not is_incident_id(incident_id) or incident_id not in store.incident_ids():
        raise fail(f"no incident {incident_id!r} in {store.url}; `irp incidents list` shows them")
    try:
        return store.load_incident(incident_id)
    except (IrpError, ValueError) as exc:
        raise fail(f"cannot read incident {incident_id}: {exc}") from None


@incidents_app.command("deadlines")
def deadlines(
    incident_id: Annotated[str | None, typer.Argument(metavar="[ID]", help="One incident; default: all.")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Also list the deadlines already met.")] = False,
    obligation: Annotated[str | None, typer.Option(
        "--obligation", metavar="OB",
        help="With --late-reason: the obligation it explains, e.g. gdpr_authority.")] = None,
    late_reason: Annotated[str | None, typer.Option(
        "--late-reason", metavar="TEXT", help="Record why the notification of OB is late (GDPR Art. 33(1)).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """List notification deadlines (GDPR 72 h, NIS2 24 h / 72 h / 1 month, §7 Clients): what is due and when."""
    from irp.deadlines import remaining_text
    from irp.models import TimelineEntry, utcnow
    from irp.notifications.obligations import deadlines as compute

    store = open_evidence_store()
    now = utcnow()
    if late_reason is not None or obligation is not None:
        if not (incident_id and obligation and late_reason and late_reason.strip()):
            raise fail("give ID, --obligation OB and a non-empty --late-reason TEXT together")
        incident = _incident(store, incident_id)
        known = [o.id for o in incident.obligations]
        if obligation not in known:
            raise fail(f"incident {incident_id} has no obligation {obligation!r}; valid: {', '.join(known) or 'none'}")
        store.append_event(incident_id, TimelineEntry(
            at=now, kind="late_reason", actor="irp-cli", message=f"reasons for the delay of {obligation}: "
            f"{' '.join(late_reason.split())}", data={"obligation": obligation, "reason": late_reason.strip()}))
        typer.echo(f"recorded: reasons for the delay of {obligation} of {incident_id}")
        return
    ids = [incident_id] if incident_id else store.incident_ids()
    rows = []
    for one in ids:
        incident = _incident(store, one) if incident_id else _quiet_load(store, one)
        if incident is None or incident.dry_run:
            continue
        for d in compute(incident, now):
            if show_all or d.is_open:
                rows.append(d)
    rows.sort(key=lambda d: d.due_at)
    if as_json:
        echo_json([{
            "incident": d.incident_id, "obligation": d.obligation.id, "kind": d.obligation.kind,
            "audience": d.obligation.audience, "recipient": d.obligation.recipient, "basis": d.obligation.basis,
            "due_at": d.due_at.isoformat(), "status": d.status, "remaining_seconds": int(d.remaining.total_seconds()),
            "met_at": d.met_at.isoformat() if d.met_at else None, "last_attempt": d.last_attempt,
            "late_reason": d.late_reason} for d in rows])
        return
    if not rows:
        typer.echo("no open notification deadline" if not show_all else "no notification deadline")
        return
    typer.echo(f"{'INCIDENT':<21} {'OBLIGATION':<26} {'TO':<22} {'DUE (UTC)':<16} {'STATUS':<9} WHEN")
    for d in rows:
        to = f"{d.obligation.audience} {d.obligation.recipient}"[:22]
        when = remaining_text(d.remaining) if d.is_open else f"met {d.met_at:%Y-%m-%d %H:%M}"
        note = ""
        if d.status in ("missed", "met_late"):
            note = f"  reason: {d.late_reason}" if d.late_reason else "  reason for the delay: MISSING"
        if d.last_attempt and d.is_open:
            note += f"  last attempt: {d.last_attempt[:80]}"
        typer.echo(f"{d.incident_id:<21} {d.obligation.id[:26]:<26} {to:<22} {d.due_at:%Y-%m-%d %H:%M} "
                   f"{d.status:<9} {when} ({d.obligation.basis}){note}")
    typer.echo(f"{len(rows)} deadline(s)")


def _quiet_load(store, incident_id: str):
    try:
        return store.load_incident(incident_id)
    except (IrpError, ValueError) as exc:
        warn_skipped([f"{incident_id}: {exc}"])
        return None


@incidents_app.command("notify")
def notify(
    incident_id: Annotated[str, typer.Argument(metavar="ID", help="Incident id.")],
    obligation_id: Annotated[str, typer.Argument(metavar="OB", help="Obligation id, from `irp incidents deadlines`.")],
    late_reason: Annotated[str, typer.Option(
        "--late-reason", metavar="TEXT", help="Why it is late (required after the deadline, GDPR Art. 33(1)).")] = "",
    phase: Annotated[str, typer.Option(help="initial, update or final: how the message presents itself.")] = "update",
) -> None:
    """Send the notification of one obligation now, to its configured recipients; archived like any other."""
    from irp.models import TimelineEntry
    from irp.notifications import dispatch, outside_context
    from irp.settings import get_settings

    if phase not in ("initial", "update", "final"):
        raise fail(f"--phase {phase!r}: valid: initial, update, final")
    store = open_evidence_store()
    incident = _incident(store, incident_id)
    obligation = next((o for o in incident.obligations if o.id == obligation_id), None)
    if obligation is None:
        known = ", ".join(o.id for o in incident.obligations) or "none"
        raise fail(f"incident {incident_id} has no obligation {obligation_id!r}; valid: {known}")
    try:
        record = dispatch(store, incident, get_settings(), template=obligation.template, language=obligation.language,
                          audience=obligation.audience, recipient=obligation.recipient, phase=phase,
                          context=outside_context(incident, phase), obligation=obligation, late_reason=late_reason)
    except IrpError as exc:
        raise fail(str(exc)) from None
    store.append_event(incident_id, TimelineEntry(
        at=record.at, kind="notification", actor="irp-cli",
        message=f"{phase} notification to {obligation.audience} {obligation.recipient} (obligation {obligation.id}): "
                f"{record.status}" + (f" — {record.reason}" if record.reason else ""),
        data={"record": record.model_dump(mode="json"), "obligation_id": obligation.id}))
    typer.echo(f"{record.id} {record.status}: {record.subject}")
    for d in record.deliveries:
        typer.echo(f"  {d.recipient:<40} {d.status:<9} {d.detail}")
    typer.echo(f"archived: {record.evidence}")
    if record.status == "failed":
        raise fail(record.reason)


@incidents_app.command("confirm-clients")
def confirm_clients(
    incident_id: Annotated[str, typer.Argument(metavar="ID", help="Incident id.")],
    clients: Annotated[str, typer.Option("--clients", metavar="A,B", help="Client ids the incident affects, comma-separated.")],
    by: Annotated[str, typer.Option("--by", metavar="NAME", help="Who confirms (recorded in the timeline and audit log).")],
) -> None:
    """Confirm Clients of an incident that only alert data named, so that their §7 letters may go (audited)."""
    from irp import audit
    from irp.models import TimelineEntry, utcnow
    from irp.text import split_list

    names = split_list(clients)
    who = " ".join(by.split())
    if not names or not who:
        raise fail("give --clients with at least one Client id and --by with your name")
    store = open_evidence_store()
    incident = _incident(store, incident_id)
    unknown = [c for c in names if c not in incident.affected_clients]
    if unknown:
        raise fail(f"incident {incident_id} does not name {', '.join(map(repr, unknown))}; its Clients: "
                   f"{', '.join(incident.affected_clients) or 'none'}")
    store.append_event(incident_id, TimelineEntry(
        at=utcnow(), kind="clients_confirmed", actor=who, message=f"Clients confirmed by {who}: {', '.join(names)}",
        data={"clients": names, "by": who}))
    audit.record(store, incident_id, "clients_confirmed", actor=who, details={"clients": names})
    typer.echo(f"confirmed by {who}: {', '.join(names)}")
    held = [o.id for o in incident.obligations if o.recipient in names and o.audience in ("client", "data_subjects")]
    for obligation in held:
        typer.echo(f"  send now: irp incidents notify {incident_id} {obligation}")


def _decide(incident_id: str, decision_fields: dict, *, resume: bool = True):
    """Record one decision of a person on an incident, then wake its run when the wait it answers is over."""
    from irp.engine.decisions import record, resume_waiting_run
    from irp.history import find_incident
    from irp.lifecycle import Decision, decision_id, needs
    from irp.models import utcnow

    store = open_evidence_store()
    current = find_incident(store, incident_id)
    now = utcnow()
    decision = Decision(id=decision_id("cli", current.id, now, decision_fields.get("decision")), **decision_fields)
    record(store, current, decision, now)
    updated = find_incident(store, current.id)
    waiting = updated.waiting
    if resume and waiting is not None:
        left = needs(updated, waiting.stage) if waiting.stage.value != "notify" or decision.decision != "advance" else []
        if left and updated.status.value != "false_positive":
            typer.echo(f"{updated.id} still waits at {waiting.stage.value}: {'; '.join(left)}")
        else:
            said = resume_waiting_run(updated)
            if said:
                typer.echo(said)
    return updated


def _name(by: str) -> str:
    who = " ".join(by.split())
    if not who:
        raise IrpError("--by must not be empty: say who decides")
    return who


@incidents_app.command("advance")
def advance(
    incident_id: Annotated[str, typer.Argument(metavar="ID", help="Incident id.")],
    stage: Annotated[str, typer.Argument(metavar="STAGE", help="The stage to end: detect, analyse, contain, "
                                                                 "restore, review or notify.")],
    by: Annotated[str, typer.Option("--by", metavar="NAME", help="Who decides (timeline, audit log).")],
    note: Annotated[str, typer.Option("--note", metavar="TEXT", help="Why the stage is over, e.g. "
                                      "'contained: keys revoked by hand, see ticket SEC-42'.")],
) -> None:
    """End a stage of ID: containment done, service restored and checked, notifications explained (§6)."""
    from irp.models import Stage

    with user_errors():
        valid = [s.value for s in Stage]
        if stage not in valid:
            raise IrpError(f"stage {stage!r}: valid: {', '.join(valid)}")
        if not note.strip():
            raise IrpError("--note must not be empty: say why the stage is over")
        updated = _decide(incident_id, {"decision": "advance", "stage": stage, "by": _name(by), "note": note.strip()})
    typer.echo(f"stage {stage} of {updated.id} ended by {_name(by)}: {note.strip()}")


@incidents_app.command("review")
def review(
    incident_id: Annotated[str, typer.Argument(metavar="ID", help="Incident id.")],
    by: Annotated[str, typer.Option("--by", metavar="NAME", help="Who records the review.")],
    causes: Annotated[str, typer.Option("--causes", metavar="TEXT", help="Root cause and contributing causes.")],
    worked: Annotated[str, typer.Option("--worked", metavar="TEXT", help="What worked in the response.")] = "",
    did_not_work: Annotated[str, typer.Option("--did-not-work", metavar="TEXT", help="What did not.")] = "",
    corrective: Annotated[list[str] | None, typer.Option(
        "--corrective", metavar="title=…,owner=…,due=YYYY-MM-DD",
        help="A corrective action (§11); repeat the option for several.")] = None,
) -> None:
    """Record the review's outcome (§11): causes, what worked, what did not, corrective actions with owners."""
    from irp.lifecycle import parse_corrective
    from irp.models import ReviewOutcome, utcnow

    with user_errors():
        if not causes.strip():
            raise IrpError("--causes must not be empty: the review records the causes (§11)")
        try:
            actions = [parse_corrective(text) for text in corrective or []]
        except ValueError as exc:
            raise IrpError(f"--corrective {exc}") from None
        who = _name(by)
        outcome = ReviewOutcome(by=who, at=utcnow(), causes=causes.strip(), worked=worked.strip(),
                                did_not_work=did_not_work.strip(), corrective=actions)
        updated = _decide(incident_id, {"decision": "review", "by": who, "review": outcome})
    typer.echo(f"review of {updated.id} recorded by {who}: {len(actions)} corrective action(s)")
    for item in updated.actions:
        if item.stage.value == "review" and item.details.startswith("corrective action decided"):
            due = f"due {item.due_at:%Y-%m-%d}" if item.due_at else "no due date"
            typer.echo(f"  {item.id}  {item.owner}  {due}  {item.title}")


@incidents_app.command("false-positive")
def false_positive(
    incident_id: Annotated[str, typer.Argument(metavar="ID", help="Incident id.")],
    by: Annotated[str, typer.Option("--by", metavar="NAME", help="Who decides.")],
    reason: Annotated[str, typer.Option("--reason", metavar="TEXT", help="Why it is not an incident.")],
) -> None:
    """Close ID as a false positive at any stage: nothing more runs, no final letter goes; undo is offered."""
    from irp.actions.actions import undoable_steps

    with user_errors():
        if not reason.strip():
            raise IrpError("--reason must not be empty: say why it is a false positive")
        updated = _decide(incident_id, {"decision": "false_positive", "by": _name(by), "note": reason.strip()})
        store = open_evidence_store()
        undo = undoable_steps(store, updated.id)
    typer.echo(f"{updated.id} closed as a false positive by {_name(by)}: {reason.strip()}")
    if undo:
        typer.echo("what the response changed can be undone:")
        for step, action in undo:
            typer.echo(f"  irp actions undo {updated.id} {step}      ({action})")
    told = [n for n in updated.notifications if n.audience != "internal" and n.status in ("sent", "partial")]
    if told:
        typer.echo("external recipients were told; tell them it was a false positive:")
        for n in told:
            if n.obligation:
                typer.echo(f"  irp incidents notify {updated.id} {n.obligation} --phase final")


@incidents_app.command("resume")
def resume(
    incident_id: Annotated[str, typer.Argument(metavar="ID", help="Incident id.")],
) -> None:
    """Continue ID's response where it waits, once people have decided (resumes its suspended run, if any)."""
    from irp.alerts import parse_alert
    from irp.cli.runtime import _quiet_prefect, _report
    from irp.engine.decisions import resume_waiting_run
    from irp.history import find_incident

    with user_errors():
        store = open_evidence_store()
        incident = find_incident(store, incident_id)
        if incident.status.ended:
            raise IrpError(f"incident {incident.id} has ended ({incident.status.value}): nothing to resume")
        if incident.waiting is not None and incident.waiting.mode == "suspended":
            typer.echo(resume_waiting_run(incident) or "nothing to resume")
            return
        with store.open(incident.id, "run/alert.json") as handle:
            alert = parse_alert(handle.read(), f"{incident.id}/run/alert.json")
    _quiet_prefect()
    from flows.incidents import INCIDENT_FLOWS

    _report(INCIDENT_FLOWS[incident.type](alert=alert, incident_id=incident.id, return_state=True))
