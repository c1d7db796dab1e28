"""The review of one external message (IRP_NOTIFY_REVIEW; irp/notifications/review.py), on the stack.

Started when a message to a Client, an authority or the people concerned is held for review. The run
suspends (no worker held) with the message, its facts and its deadline on its Resume form; the
reviewer approves (with the free-text parts rewritten if need be: the message is sent), postpones with
a reason (the run asks again), or checks again after approving from the CLI. Ends once the message
was approved (what the channels did is on its record) or nothing is held any more.
"""

from __future__ import annotations

import time
from typing import Literal

from prefect import flow, get_run_logger
from prefect.flow_runs import suspend_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from pydantic import Field

from irp.errors import IrpError
from irp.evidence import open_store
from irp.notifications.review import approve, held_for_review, postpone, review_text
from irp.settings import get_settings

__all__ = ["LetterReview", "review_notification"]

RECORD_WAIT_SECONDS = 180  # how long a review run started by a notify step waits for that stage's record


class LetterReview(RunInput):
    """The Resume form of a message held for review."""

    decision: Literal["approve", "postpone", "check again"] = Field(
        "approve", title="Decision", json_schema_extra={"position": 0},
        description="approve: send it (as rendered now, with your edits); postpone: keep it back, say why.")
    by: str = Field("", max_length=200, title="Your name", json_schema_extra={"position": 1})
    reason: str = Field("", max_length=2000, title="Reason (postpone)", json_schema_extra={"position": 2})
    nature: str = Field("", max_length=5000, title="Nature (rewrite)", json_schema_extra={"position": 3},
                        description="Leave empty to keep the text as rendered.")
    measures: str = Field("", max_length=5000, title="Measures (rewrite)", json_schema_extra={"position": 4})
    recommendations: str = Field("", max_length=5000, title="Recommendations (rewrite)",
                                 json_schema_extra={"position": 5})
    late_reason: str = Field("", max_length=2000, title="Reasons for the delay", json_schema_extra={"position": 6},
                             description="Required when the deadline has passed (GDPR Art. 33(1)).")


@flow(name="review_notification", log_prints=True,
      description="A message to a Client, an authority or the people concerned, held until its reviewer approves it.")
def review_notification(incident_id: str, obligation_id: str) -> dict:
    """Wait for the reviewer's decision on the held message of `obligation_id`, then send it.

    Args:
        incident_id: The incident.
        obligation_id: The obligation whose message is held (irp incidents deadlines).
    """
    settings = get_settings()
    store = open_store(settings.evidence_url)
    logger = get_run_logger()
    started = time.monotonic()
    n = 0
    while True:
        incident = store.load_incident(incident_id)
        try:
            held = held_for_review(incident, obligation_id)
        except IrpError as exc:  # sent meanwhile (the CLI), or nothing held: nothing to wait for
            if n == 0 and "already sent" not in str(exc) and time.monotonic() < started + RECORD_WAIT_SECONDS:
                time.sleep(2)  # started by the notify step: its record is saved when the stage ends
                continue
            logger.info("%s %s: %s", incident_id, obligation_id, exc)
            return {"incident_id": incident_id, "obligation_id": obligation_id, "status": "nothing held"}
        form = LetterReview.with_initial_data(description="```text\n" + review_text(store, incident, held)
                                              .replace("```", "'''") + "\n```")
        answer = suspend_flow_run(wait_for_input=form, key=f"review-{n}", timeout=None)
        n += 1
        if answer.decision == "check again" or not answer.by.strip():
            continue
        try:
            if answer.decision == "postpone":
                postpone(store, incident, obligation_id, by=answer.by, reason=answer.reason,
                         decision_id=f"{flow_run.id}/{n}")
                continue
            edits = {k: getattr(answer, k) for k in ("nature", "measures", "recommendations") if getattr(answer, k).strip()}
            record = approve(store, incident, settings, obligation_id, by=answer.by, edits=edits,
                             late_reason=answer.late_reason)
        except IrpError as exc:
            logger.warning("%s %s: the decision was not applied: %s", incident_id, obligation_id, exc)
            continue
        # approved: what the channels did is on the record (a failure is escalated by the deadline watch)
        return {"incident_id": incident_id, "obligation_id": obligation_id, "status": record.status,
                "notification": record.id}
