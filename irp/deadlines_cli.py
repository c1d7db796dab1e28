"""`irp incidents deadlines` and `irp incidents notify`: the regulatory clocks from the command line.

    deadlines             what is due, to whom and when, for every incident (or one); --all adds those met
    deadlines ID --obligation OB --late-reason TEXT
                          record why a notification is late (GDPR Art. 33(1)); it goes with the message
    notify ID OB          send the notification of an obligation now (outside a run), e.g. after a delay
    confirm-clients ID --clients a,b --by NAME
                          a responder confirms Clients only alert data named: their §7 letters may then go

Both read the evidence store (IRP_EVIDENCE_URL); what they change is appended as timeline events.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from irp.errors import IrpError

__all__ = ["confirm_clients", "deadlines", "notify"]


def _store():
    from irp.evidence import open_store
    from irp.settings import get_settings

    return open_store(get_settings().evidence_url)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _incident(store, incident_id: str):
    from irp.evidence.base import is_incident_id

    if not is_incident_id(incident_id) or incident_id not in store.incident_ids():
        raise _fail(f"no incident {incident_id!r} in {store.url}; `irp incidents list` shows them")
    try:
        return store.load_incident(incident_id)
    except (IrpError, ValueError) as exc:
        raise _fail(f"cannot read incident {incident_id}: {exc}") from None


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
    from irp.obligations import deadlines as compute

    store = _store()
    now = utcnow()
    if late_reason is not None or obligation is not None:
        if not (incident_id and obligation and late_reason and late_reason.strip()):
            raise _fail("give ID, --obligation OB and a non-empty --late-reason TEXT together")
        incident = _incident(store, incident_id)
        known = [o.id for o in incident.obligations]
        if obligation not in known:
            raise _fail(f"incident {incident_id} has no obligation {obligation!r}; valid: {', '.join(known) or 'none'}")
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
        typer.echo(json.dumps([{
            "incident": d.incident_id, "obligation": d.obligation.id, "kind": d.obligation.kind,
            "audience": d.obligation.audience, "recipient": d.obligation.recipient, "basis": d.obligation.basis,
            "due_at": d.due_at.isoformat(), "status": d.status, "remaining_seconds": int(d.remaining.total_seconds()),
            "met_at": d.met_at.isoformat() if d.met_at else None, "last_attempt": d.last_attempt,
            "late_reason": d.late_reason} for d in rows], indent=2, ensure_ascii=False))
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
        typer.echo(f"warning: skipped {incident_id}: {exc}", err=True)
        return None


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
        raise _fail(f"--phase {phase!r}: valid: initial, update, final")
    store = _store()
    incident = _incident(store, incident_id)
    obligation = next((o for o in incident.obligations if o.id == obligation_id), None)
    if obligation is None:
        known = ", ".join(o.id for o in incident.obligations) or "none"
        raise _fail(f"incident {incident_id} has no obligation {obligation_id!r}; valid: {known}")
    try:
        record = dispatch(store, incident, get_settings(), template=obligation.template, language=obligation.language,
                          audience=obligation.audience, recipient=obligation.recipient, phase=phase,
                          context=outside_context(incident, phase), obligation=obligation, late_reason=late_reason)
    except IrpError as exc:
        raise _fail(str(exc)) from None
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
        raise _fail(record.reason)


def confirm_clients(
    incident_id: Annotated[str, typer.Argument(metavar="ID", help="Incident id.")],
    clients: Annotated[str, typer.Option("--clients", metavar="A,B", help="Client ids the incident affects, comma-separated.")],
    by: Annotated[str, typer.Option("--by", metavar="NAME", help="Who confirms (recorded in the timeline and audit log).")],
) -> None:
    """Confirm Clients of an incident that only alert data named, so that their §7 letters may go (audited)."""
    from irp import audit
    from irp.models import TimelineEntry, utcnow

    names = list(dict.fromkeys(c.strip() for c in clients.split(",") if c.strip()))
    who = " ".join(by.split())
    if not names or not who:
        raise _fail("give --clients with at least one Client id and --by with your name")
    store = _store()
    incident = _incident(store, incident_id)
    unknown = [c for c in names if c not in incident.affected_clients]
    if unknown:
        raise _fail(f"incident {incident_id} does not name {', '.join(map(repr, unknown))}; its Clients: "
                    f"{', '.join(incident.affected_clients) or 'none'}")
    store.append_event(incident_id, TimelineEntry(
        at=utcnow(), kind="clients_confirmed", actor=who, message=f"Clients confirmed by {who}: {', '.join(names)}",
        data={"clients": names, "by": who}))
    audit.record(store, incident_id, "clients_confirmed", actor=who, details={"clients": names})
    typer.echo(f"confirmed by {who}: {', '.join(names)}")
    held = [o.id for o in incident.obligations if o.recipient in names and o.audience in ("client", "data_subjects")]
    for obligation in held:
        typer.echo(f"  send now: irp incidents notify {incident_id} {obligation}")
