"""`irp audit …`: check the tamper-evident audit log (irp/audit.py) and read it.

    verify [ID…]   check every incident as `irp evidence verify` does (objects, manifest, events, record,
                   chain) and that its record matches the last audited state, and each chain against the
                   latest checkpoint (irp/evidence/anchors.py: truncated, rewritten, deleted incidents);
                   name the first broken entry of each and the chain head; exit 1 when anything is broken
    log ID         the incident's audit entries: state changes and operator acts, who and when
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from irp.cli.common import echo_json, open_evidence_store, user_errors
from irp.errors import IrpError

__all__ = ["audit_app"]

audit_app = typer.Typer(no_args_is_help=True, help="Check and read the tamper-evident audit log.")


@audit_app.command("verify")
def verify(
    incident_ids: Annotated[list[str] | None, typer.Argument(
        metavar="[ID]...", help="Incidents (default: all).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")] = False,
) -> None:
    """Check the audit chain of every incident (or of the ones given) and against its anchored head; name the first
    broken entry."""
    from irp import audit

    with user_errors():
        report = audit.verify(open_evidence_store(), incident_ids or None)
    if as_json:
        echo_json({"store": report.store, "intact": report.intact,
                   "incidents": [i.model_dump(mode="json") for i in report.incidents]})
    else:
        for result in report.incidents:
            if result.intact:
                typer.echo(f"{result.incident_id}: intact ({result.audit_entries} audit entries, "
                           f"{result.chain_entries} in the chain; head {result.head_seq} {result.head_hash})")
                continue
            first = result.problems[0]
            typer.echo(f"{result.incident_id}: BROKEN at {first.subject}: {first.detail}")
            for problem in result.problems[1:]:
                typer.echo(f"    also {problem.subject}: {problem.detail}")
        broken = [i for i in report.incidents if not i.intact]
        typer.echo(f"{len(report.incidents)} incident(s) checked in {report.store}: "
                   + (f"{len(broken)} broken" if broken else "audit log intact"))
    if not report.intact:
        raise typer.Exit(1)


@audit_app.command("log")
def show_log(
    incident_id: Annotated[str, typer.Argument(metavar="ID", help="Incident id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the entries as JSON.")] = False,
) -> None:
    """Print an incident's audit entries: state changes and operator acts, in order."""
    from irp import audit

    with user_errors():
        store = open_evidence_store()
        entries = audit.entries(store, incident_id)
        if not entries and incident_id not in store.incident_ids():
            raise IrpError(f"no incident {incident_id} in {store.url}; `irp incidents list` shows the known ids")
    if as_json:
        echo_json([e.model_dump(mode="json") for e in entries])
        return
    for e in entries:
        details = {k: v for k, v in e.details.items() if k != "act"}
        typer.echo(f"{e.seq:>5}  {e.at:%Y-%m-%d %H:%M:%S}  {e.details.get('act', ''):<18} {e.actor}  "
                   f"{json.dumps(details, ensure_ascii=False)}")
