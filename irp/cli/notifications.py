"""`irp notifications …`: the review gate of external messages (IRP_NOTIFY_REVIEW, irp/notifications/review.py).

    review   INC OB                      the held message, its facts and deadline
    approve  INC OB --by NAME [--edit PART=TEXT]… [--late-reason TEXT]   send it
    postpone INC OB --by NAME --reason TEXT                              keep it back, with why
"""

from __future__ import annotations

from typing import Annotated

import typer

from irp.cli.common import open_evidence_store, user_errors
from irp.errors import IrpError

__all__ = ["notifications_app"]

notifications_app = typer.Typer(no_args_is_help=True, help="Review, approve or postpone external messages.")

IncidentArg = Annotated[str, typer.Argument(metavar="INC", help="Incident id.")]
ObligationArg = Annotated[str, typer.Argument(metavar="OB", help="Obligation id (irp incidents deadlines), e.g. "
                                                                  "gdpr_authority or client:acme.")]


@notifications_app.callback()
def _group() -> None:
    """A message to a Client, an authority or the people concerned leaves once its reviewer approves it."""


def _held(incident_id: str, obligation: str):
    from irp.history import find_incident
    from irp.notifications.review import held_for_review

    store = open_evidence_store()
    incident = find_incident(store, incident_id)
    return store, incident, held_for_review(incident, obligation)


@notifications_app.command("review")
def review(incident_id: IncidentArg, obligation: ObligationArg) -> None:
    """Show the held message of OB: its deadline, the facts it rests on, the text as it would leave."""
    from irp.notifications.review import review_text

    with user_errors():
        store, incident, held = _held(incident_id, obligation)
        typer.echo(review_text(store, incident, held))


@notifications_app.command("approve")
def approve(
    incident_id: IncidentArg,
    obligation: ObligationArg,
    by: Annotated[str, typer.Option("--by", metavar="NAME", help="The reviewer (recorded with the message).")],
    edit: Annotated[list[str] | None, typer.Option(
        "--edit", metavar="PART=TEXT", help="Rewrite a free-text part: nature, measures or recommendations.")] = None,
    late_reason: Annotated[str, typer.Option("--late-reason", metavar="TEXT",
                                             help="Why it is late, when past its deadline (GDPR Art. 33(1)).")] = "",
) -> None:
    """Approve the held message of OB: it is rendered from the facts as they are now and sent."""
    from irp.notifications.review import approve as send
    from irp.settings import get_settings

    with user_errors():
        edits = {}
        for item in edit or []:
            part, sep, text = item.partition("=")
            if not sep or not text.strip():
                raise IrpError(f"--edit {item!r}: expected PART=TEXT, e.g. --edit measures='Les clés ont été révoquées.'")
            edits[part.strip()] = text
        store, incident, _ = _held(incident_id, obligation)
        record = send(store, incident, get_settings(), obligation, by=by, edits=edits, late_reason=late_reason)
    typer.echo(f"{record.id} {record.status}: {record.subject}")
    for d in record.deliveries:
        typer.echo(f"  {d.recipient:<40} {d.status:<9} {d.detail}")
    if record.status not in ("sent", "partial"):
        raise IrpError(f"{obligation} of {incident_id} not sent: {record.reason}")


@notifications_app.command("postpone")
def postpone(
    incident_id: IncidentArg,
    obligation: ObligationArg,
    by: Annotated[str, typer.Option("--by", metavar="NAME", help="The reviewer.")],
    reason: Annotated[str, typer.Option("--reason", metavar="TEXT", help="Why it waits (kept, Art. 33(5)).")],
) -> None:
    """Keep the held message of OB back, with why; its deadline keeps running and the watch keeps reminding."""
    from irp.notifications.review import postpone as keep

    with user_errors():
        store, incident, _ = _held(incident_id, obligation)
        keep(store, incident, obligation, by=by, reason=reason)
    typer.echo(f"{obligation} of {incident_id} postponed by {' '.join(by.split())}: {reason.strip()}")
