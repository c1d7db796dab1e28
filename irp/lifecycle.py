"""The incident lifecycle (policy §6, §11): people's decisions, what each stage waits for, when it ended.

A decision — a measure closed, a stage ended by a responder, the review's outcome, a false positive —
is a timeline entry of kind `decision` appended to the incident's events by whoever takes it (the
CLI, the Resume form of a waiting run, a decisions file) and audited. `fold` applies the decisions
to the record each time it is read, so a decision taken while a run works is never overwritten by
the run's own save, and a decision taken twice (a form replayed on resume) counts once.

What a stage waits for (`needs`), once its automatic part ran:

    detect, analyse, contain   its measures (assigned, or steps a person takes over) closed
    restore                    its measures closed and a responder's confirmation (advance)
    review                     the review's outcome, and detect and analyse ended
    notify                     (final) every owed notification met or explained: the engine asks
                               irp/notifications/obligations.py

A responder may end any stage with a reason (`advance`); its open measures stay open and listed.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from irp.models import (
    ActionItem,
    Closure,
    CorrectiveAction,
    Incident,
    IncidentStatus,
    ReviewOutcome,
    Stage,
    StageEnd,
    TimelineEntry,
    utcnow,
)

__all__ = [
    "DECISION",
    "MAIN_LINE",
    "Decision",
    "advanced",
    "decision_entry",
    "decisions",
    "fold",
    "format_due",
    "needs",
    "open_measures",
    "stage_end",
    "waiting_text",
]

DECISION = "decision"
MAIN_LINE = (Stage.detect, Stage.analyse, Stage.contain, Stage.restore, Stage.review, Stage.notify)
_MEASURE_STAGES = (Stage.detect, Stage.analyse, Stage.contain, Stage.restore)
_WORDS = {Stage.detect: "detecting", Stage.analyse: "analysing", Stage.contain: "containing",
          Stage.restore: "restoring", Stage.review: "awaiting review", Stage.notify: "notifying"}


class Decision(BaseModel):
    """A person's decision, as kept in the `data` of its timeline entry."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["close_measure", "advance", "review", "false_positive"]
    id: str = Field(..., description="Idempotency key: the same decision recorded twice counts once.")
    by: str = Field(..., min_length=1, max_length=200)
    note: str = Field("", max_length=5000)
    measure: str = Field("", description="close_measure: the action id.")
    stage: Stage | None = Field(None, description="advance: the stage ended.")
    review: ReviewOutcome | None = None


def decision_entry(decision: Decision, at: datetime | None = None) -> TimelineEntry:
    """The timeline entry that records `decision` (to append to the incident's events)."""
    at = at or utcnow()
    what = {
        "close_measure": f"measure {decision.measure} closed by {decision.by}",
        "advance": f"stage {decision.stage.value if decision.stage else '?'} ended by {decision.by}",
        "review": f"review outcome recorded by {decision.by}",
        "false_positive": f"closed as a false positive by {decision.by}",
    }[decision.decision]
    return TimelineEntry(at=at, kind=DECISION, stage=decision.stage, actor=decision.by,
                         message=what + (f": {decision.note}" if decision.note else ""),
                         data=decision.model_dump(mode="json", exclude_none=True))


def decisions(incident: Incident) -> list[tuple[datetime, Decision]]:
    """The incident's decisions in time order, each id once (an unreadable entry is ignored, never fatal)."""
    found: dict[str, tuple[datetime, Decision]] = {}
    for entry in sorted((e for e in incident.timeline if e.kind == DECISION), key=lambda e: e.at):
        try:
            decision = Decision.model_validate(entry.data)
        except ValidationError:
            continue
        found.setdefault(decision.id, (entry.at, decision))
    return list(found.values())


def _corrective_id(at: datetime, n: int) -> str:
    return "C-" + hashlib.sha256(f"{at.isoformat()}/{n}".encode()).hexdigest()[:6].upper()


def fold(incident: Incident) -> Incident:
    """The record with every decision applied: measures closed, the review, corrective actions, a false positive."""
    made = decisions(incident)
    if not made:
        return incident
    actions = {a.id: a for a in incident.actions}
    update: dict[str, Any] = {}
    for at, d in made:
        if d.decision == "close_measure" and d.measure in actions and actions[d.measure].status != "closed":
            actions[d.measure] = actions[d.measure].model_copy(update={
                "status": "closed", "closed_at": at, "closed_by": d.by, "resolution": d.note})
        elif d.decision == "review" and d.review is not None and "review" not in update:
            update["review"] = d.review
            for n, c in enumerate(d.review.corrective):
                item = ActionItem(id=_corrective_id(d.review.at, n), title=c.title, owner=c.owner, stage=Stage.review,
                                  due_at=c.due, details="corrective action decided by the review (§11)")
                actions.setdefault(item.id, item)
        elif d.decision == "false_positive" and "closure" not in update and incident.closure is None:
            update["closure"] = Closure(at=at, how="false_positive", by=d.by, note=d.note)
            update["status"] = IncidentStatus.false_positive
            update["waiting"] = None
    return incident.model_copy(update={"actions": list(actions.values()), **update})


def open_measures(incident: Incident, stage: Stage | None = None) -> list[ActionItem]:
    """The measures (not corrective actions) still open, of `stage` or of every stage, earliest due first."""
    items = [a for a in incident.actions if a.status != "closed" and a.stage in _MEASURE_STAGES
             and (stage is None or a.stage == stage)]
    return sorted(items, key=lambda a: (a.due_at is None, a.due_at or utcnow(), a.id))


def advanced(incident: Incident, stage: Stage) -> tuple[datetime, Decision] | None:
    """The first decision of a responder that ended `stage`, with its time."""
    return next(((at, d) for at, d in decisions(incident) if d.decision == "advance" and d.stage == stage), None)


def stage_end(incident: Incident, stage: Stage) -> StageEnd | None:
    """When and how `stage` ended (None while it has not): the time its last need was met.

    notify is not judged here (its needs are the regulatory clocks): its end is the closure's.
    """
    phase = "final" if stage == Stage.notify else None
    auto = incident.automatic_done(stage, phase)
    if auto is None:
        return None
    by_hand = advanced(incident, stage)
    if by_hand:
        at, d = by_hand
        return StageEnd(stage=stage, at=max(at, auto.ended_at), how="advanced", by=d.by, note=d.note)
    if stage == Stage.review:
        if incident.review is None:
            return None
        return StageEnd(stage=stage, at=max(incident.review.at, auto.ended_at), how="review_recorded",
                        by=incident.review.by)
    if stage == Stage.notify:
        if incident.closure is None or incident.closure.how != "closed":
            return None
        return StageEnd(stage=stage, at=incident.closure.at, how="notifications_met", by=incident.closure.by)
    if stage == Stage.restore or open_measures(incident, stage):
        return None
    measures = [a for a in incident.actions if a.stage == stage and a.closed_at]
    if not measures:
        return StageEnd(stage=stage, at=auto.ended_at, how="automatic")
    last = max(measures, key=lambda a: a.closed_at)
    return StageEnd(stage=stage, at=max(auto.ended_at, last.closed_at), how="measures_closed", by=last.closed_by)


def format_due(item: ActionItem, now: datetime) -> str:
    """'due in 40 min', 'overdue by 2 h', 'no due time'."""
    if item.due_at is None:
        return "no due time"
    seconds = (item.due_at - now).total_seconds()
    amount = abs(seconds)
    text = f"{amount / 86400:.0f} d" if amount >= 172800 else f"{amount / 3600:.0f} h" if amount >= 5400 \
        else f"{max(1, round(amount / 60))} min"
    return f"due in {text}" if seconds >= 0 else f"overdue by {text}"


def needs(incident: Incident, stage: Stage, now: datetime | None = None) -> list[str]:
    """What `stage` still waits for, in words ([] when it may end); notify's needs are the engine's."""
    now = now or utcnow()
    if stage == Stage.notify or advanced(incident, stage):
        return []
    missing = []
    stages = (stage,)
    if stage == Stage.review:  # the analysis must be over too (its measures closed, or ended by a responder)
        stages = (*(s for s in (Stage.detect, Stage.analyse) if stage_end(incident, s) is None), Stage.review)
    measures = [m for s in stages for m in open_measures(incident, s)]
    if measures:
        oldest = measures[0]
        missing.append(f"{len(measures)} measure(s) open ({', '.join(m.id for m in measures[:5])}"
                       f"{', …' if len(measures) > 5 else ''}), the first {format_due(oldest, now)}")
    if stage == Stage.restore:
        missing.append("a responder's confirmation that service and data are back and checked")
    if stage == Stage.review and incident.review is None:
        missing.append("the review's outcome: causes, what worked, what did not, corrective actions (§11)")
    return missing


def waiting_text(incident: Incident, now: datetime | None = None) -> str:
    """What the incident waits for, for people: 'containing — 2 measure(s) open (…), the first due in 40 min'."""
    if incident.status.ended:
        closure = incident.closure
        return incident.status.value + (f" on {closure.at:%Y-%m-%d %H:%M} UTC by {closure.by}" if closure else "")
    waiting = incident.waiting
    if waiting is None:
        return f"{incident.status.value} — running its automatic steps"
    wants = needs(incident, waiting.stage, now) if waiting.stage != Stage.notify else waiting.needs
    return f"{_WORDS[waiting.stage]} — {'; '.join(wants or waiting.needs) or 'its needs are met: resuming'}"


def parse_corrective(text: str) -> CorrectiveAction:
    """One corrective action from 'title=…,owner=…,due=YYYY-MM-DD' (the CLI's and the form's syntax)."""
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            if fields:  # a comma inside the previous value
                last = next(reversed(fields))
                fields[last] += "," + part
                continue
            raise ValueError(f"{text!r}: expected title=…,owner=…[,due=YYYY-MM-DD]")
        key = key.strip().lower()
        if key not in ("title", "owner", "due"):
            raise ValueError(f"{text!r}: unknown field {key!r}; valid: title, owner, due")
        fields[key] = value.strip()
    try:
        return CorrectiveAction.model_validate({k: v or None for k, v in fields.items()})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"{text!r}: {problems}") from None


def decision_id(*parts: Any) -> str:
    """A stable id for a decision from what identifies it (a flow run and its wait, a script line)."""
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]
