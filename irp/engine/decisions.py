"""Recording people's decisions (irp/lifecycle.py) and waking the run that waits for them.

One path for every way a decision arrives — the CLI, the Resume form of a suspended run, a
decisions file —: checked against the incident, appended to its events, archived as evidence
(decisions/<id>.json) and put in the audit log; recorded twice, it counts once.
"""

from __future__ import annotations

from datetime import datetime

from irp import audit
from irp.errors import IrpError
from irp.evidence import EvidenceStore
from irp.lifecycle import Decision, decision_entry, decisions, fold
from irp.models import Incident, Stage, utcnow

__all__ = ["check", "record", "resume_waiting_run"]

_ACT = {"close_measure": "action_closed", "advance": "stage_advanced", "review": "review_recorded",
        "false_positive": "false_positive"}


def check(incident: Incident, decision: Decision) -> None:
    """Raise IrpError when `decision` does not apply to `incident`, saying what would."""
    if incident.status.ended and decision.decision != "close_measure":  # corrective actions outlive the incident
        raise IrpError(f"incident {incident.id} has ended ({incident.status.value}); nothing is waiting for a decision")
    if decision.decision == "close_measure":
        item = next((a for a in incident.actions if a.id.casefold() == decision.measure.casefold()), None)
        if item is None:
            known = ", ".join(f"{a.id} ({a.status})" for a in incident.actions) or "none"
            raise IrpError(f"incident {incident.id} has no action {decision.measure!r}; its actions: {known}")
        if item.status == "closed":
            raise IrpError(f"action {item.id} of {incident.id} was already closed on "
                           f"{item.closed_at:%Y-%m-%d %H:%M} UTC by {item.closed_by}: {item.resolution}")
    if decision.decision == "advance" and decision.stage == Stage.notify and not incident.automatic_done(
            Stage.notify, "final") and incident.waiting is None:
        raise IrpError(f"incident {incident.id} has not reached its final notifications yet")
    if decision.decision == "review" and incident.review is not None:
        raise IrpError(f"the review of {incident.id} was recorded on {incident.review.at:%Y-%m-%d %H:%M} UTC "
                       f"by {incident.review.by}; add corrective actions with `irp actions` instead")
    if (not decision.by.strip() or (decision.decision != "review" and not decision.note.strip())):
        raise IrpError("say who decides (--by) and why or what was done (--note / --resolution); neither may be empty")


def record(store: EvidenceStore, incident: Incident, decision: Decision, at: datetime | None = None,
           *, strict: bool = True) -> bool:
    """Record `decision` on `incident` (timeline event, evidence, audit); False when it was recorded already.

    strict=False (the engine, replaying a form on resume): a decision that no longer applies is skipped.
    """
    if any(d.id == decision.id for _, d in decisions(incident)):
        return False
    if decision.decision == "close_measure":  # the id as the record spells it
        item = next((a for a in incident.actions if a.id.casefold() == decision.measure.casefold()), None)
        if item is not None:
            decision = decision.model_copy(update={"measure": item.id})
    try:
        check(incident, decision)
    except IrpError:
        if strict:
            raise
        return False
    entry = decision_entry(decision, at or utcnow())
    store.append_event(incident.id, entry)
    after = fold(incident.model_copy(update={"timeline": [*incident.timeline, entry]}))
    store.put_json(incident.id, f"decisions/{entry.at:%Y%m%dT%H%M%S}-{decision.id}.json",
                   entry.model_dump(mode="json"), source_system="irp")
    audit.record(store, incident.id, _ACT[decision.decision], actor=decision.by, strict=strict, incident=after,
                 details={k: v for k, v in entry.data.items() if k not in ("by", "review", "measure")}
                 | ({"causes": decision.review.causes} if decision.review else {})
                 | ({"action_id": decision.measure} if decision.measure else {}))
    return True


def resume_waiting_run(incident: Incident) -> str:
    """Wake the suspended flow run of `incident` so it reads the decisions; say what happened, in words.

    A run that waits offline (no Prefect server) is continued with `irp incidents resume`.
    """
    waiting = incident.waiting
    if waiting is None or not waiting.flow_run_id:
        return ""
    if waiting.mode != "suspended":
        return f"continue the response with: irp incidents resume {incident.id}"
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run

    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(waiting.flow_run_id)
        if run.state is None or not run.state.is_paused():
            return f"flow run {waiting.flow_run_id} is {run.state.name if run.state else 'unknown'}, not waiting"
        resume_flow_run(waiting.flow_run_id, run_input={"decision": "check again", "by": "irp-cli"})
    except Exception as exc:  # the decision is recorded; the run reads it when resumed from the UI
        return (f"could not resume flow run {waiting.flow_run_id} ({type(exc).__name__}: {exc}); the decision is "
                "recorded: resume the run from the Prefect UI")
    return f"resumed flow run {waiting.flow_run_id}"
