"""Waiting for people: how a run waits at a stage until its needs are met (irp/lifecycle.py).

    suspended  a deployment's run (the stack, the intake): Prefect's suspend with a typed Resume form.
               The run leaves its worker and holds no process while it waits; resumed (the form, or
               the CLI after a decision) it starts again from the top and skips every stage the
               evidence store records as done, so no action is repeated.
    offline    nothing can wake it (`irp run` on the embedded default, a flow called in-process): the
               run ends with the incident open, saying what it waits for; `irp incidents resume`
               continues it once people have decided.
    scripted   a decisions file (irp/engine/script.py) answers, on a simulated clock.

A dry run never waits. Every answer becomes decisions recorded by irp/engine/decisions.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from prefect.input import RunInput
from prefect.runtime import flow_run
from pydantic import Field

from irp.engine import decisions as recorder
from irp.engine.script import Script, ScriptedDecision
from irp.errors import IrpError
from irp.evidence import EvidenceStore
from irp.lifecycle import Decision, decision_id, format_due, open_measures, parse_corrective
from irp.models import Incident, ReviewOutcome, Stage, TimelineEntry, utcnow

__all__ = ["Offline", "ReviewForm", "Scripted", "StageForm", "Suspend", "Waiter", "WaitingForPeople",
           "describe_wait"]


class WaitingForPeople(Exception):  # noqa: N818 (a signal, not an error)
    """Raised by a waiter that cannot wait here: the run ends with the incident open."""

    def __init__(self, stage: Stage, needs: list[str]) -> None:
        super().__init__(f"{stage.value}: {'; '.join(needs)}")
        self.stage, self.needs = stage, needs


class StageForm(RunInput):
    """The Resume form of a stage that waits for its measures or a responder's confirmation."""

    decision: Literal["close measures", "end stage", "false positive", "check again"] = Field(
        "check again", title="Decision", json_schema_extra={"position": 0},
        description="close measures: the ids below are done; end stage: the stage is over (say why); false "
                    "positive: close the incident; check again: read the decisions taken elsewhere.")
    by: str = Field("", max_length=200, title="Your name", description="Who decides (timeline, audit log).",
                    json_schema_extra={"position": 1})
    note: str = Field("", max_length=5000, title="What was done, or why",
                      description="e.g. 'contained: keys revoked by hand, see ticket SEC-42'.",
                      json_schema_extra={"position": 2})
    measures: str = Field("", max_length=2000, title="Measures closed",
                          description="Action ids, comma-separated; empty with 'close measures': every one listed.",
                          json_schema_extra={"position": 3})


class ReviewForm(RunInput):
    """The Resume form of the review (§11): its outcome, then the final notifications go."""

    decision: Literal["record the review", "false positive", "check again"] = Field(
        "record the review", title="Decision", json_schema_extra={"position": 0})
    by: str = Field("", max_length=200, title="Your name", json_schema_extra={"position": 1})
    causes: str = Field("", max_length=5000, title="Causes", description="Root cause and contributing causes.",
                        json_schema_extra={"position": 2})
    worked: str = Field("", max_length=5000, title="What worked", json_schema_extra={"position": 3})
    did_not_work: str = Field("", max_length=5000, title="What did not work", json_schema_extra={"position": 4})
    corrective: str = Field(
        "", max_length=5000, title="Corrective actions", json_schema_extra={"position": 5},
        description="One per line: title=…,owner=…,due=YYYY-MM-DD")
    note: str = Field("", max_length=5000, title="Note", json_schema_extra={"position": 6},
                      description="For a false positive: why.")


def describe_wait(incident: Incident, stage: Stage, needs: list[str], now: datetime | None = None) -> str:
    """The markdown a Resume form shows: the incident, what the stage needs, the open measures."""
    now = now or utcnow()
    lines = [f"## {incident.id} waits at **{stage.value}**", "",
             f"**{incident.type.label}** — severity **{incident.severity.value}** — {incident.title[:200]}", "",
             "**Needs**", "", *(f"- {n}" for n in needs), ""]
    measures = open_measures(incident, None if stage == Stage.review else stage)
    if measures:
        lines += ["| Measure | Stage | Owner | Due | Title |", "|---|---|---|---|---|"]
        lines += [f"| `{m.id}` | {m.stage.value} | {m.owner} | {format_due(m, now)} | "
                  f"{m.title.replace('|', '/')[:150]} |" for m in measures]
        lines.append("")
    lines.append(f"The same from a shell: `irp actions close {incident.id} ID --by NAME --resolution TEXT`, "
                 f"`irp incidents advance {incident.id} {stage.value} --by NAME --note TEXT`"
                 + (f", `irp incidents review {incident.id} --by NAME --causes TEXT`" if stage == Stage.review else "")
                 + ".")
    return "\n".join(lines)


class Waiter:
    """How the run waits; `now()` is the run's clock (simulated for a decisions file)."""

    mode: Literal["suspended", "offline", "scripted"] = "offline"

    def now(self) -> datetime:
        return utcnow()

    def wait(self, store: EvidenceStore, incident: Incident, stage: Stage, needs: list[str], n: int) -> None:
        """Return once something may have changed (then the engine checks again), or raise WaitingForPeople."""
        raise WaitingForPeople(stage, needs)


class Offline(Waiter):
    """Nothing can wake this run: it ends, the incident open (continue with `irp incidents resume`)."""


class Suspend(Waiter):
    """Suspend the deployment's flow run until its Resume form is submitted (or the CLI resumes it)."""

    mode = "suspended"

    def wait(self, store: EvidenceStore, incident: Incident, stage: Stage, needs: list[str], n: int) -> None:
        from prefect.flow_runs import suspend_flow_run

        key = f"wait-{stage.value}-{n}"
        form = (ReviewForm if stage == Stage.review else StageForm).with_initial_data(
            description=describe_wait(incident, stage, needs))
        answer = suspend_flow_run(wait_for_input=form, key=key, timeout=None)  # raises Pause the first time
        made, problems = _from_form(answer, incident, stage, (str(flow_run.id), key))
        for decision in made:
            recorder.record(store, incident, decision, strict=False)
        for problem in problems:
            store.append_event(incident.id, TimelineEntry(kind="finding", stage=stage, actor=answer.by or "irp",
                                                          message=f"Resume form not applied: {problem}"))


def _from_form(answer: StageForm | ReviewForm, incident: Incident, stage: Stage,
               origin: tuple[str, str]) -> tuple[list[Decision], list[str]]:
    """The decisions a submitted form makes, and what in it could not be applied."""
    by, note = " ".join(answer.by.split()), answer.note.strip()
    if answer.decision == "check again":
        return [], []
    if not by:
        return [], ["your name is needed"]

    def made(i: int, **fields) -> Decision:
        return Decision(id=decision_id(*origin, i), by=by, **fields)

    if answer.decision == "false positive":
        return ([made(0, decision="false_positive", note=note)], []) if note else ([], ["say why it is a false positive"])
    if isinstance(answer, ReviewForm):
        if not answer.causes.strip():
            return [], ["the causes are needed to record the review"]
        try:
            corrective = [parse_corrective(line) for line in answer.corrective.splitlines() if line.strip()]
        except ValueError as exc:
            return [], [f"corrective actions: {exc}"]
        review = ReviewOutcome(by=by, at=utcnow(), causes=answer.causes.strip(), worked=answer.worked.strip(),
                               did_not_work=answer.did_not_work.strip(), corrective=corrective)
        return [made(0, decision="review", review=review, note=note)], []
    if not note:
        return [], ["say what was done or why (the note)"]
    if answer.decision == "end stage":
        return [made(0, decision="advance", stage=stage, note=note)], []
    listed = open_measures(incident, stage)
    wanted = [w for w in answer.measures.replace(";", ",").replace(" ", ",").split(",") if w] or [m.id for m in listed]
    known = {a.id.casefold(): a.id for a in incident.actions}
    unknown = [w for w in wanted if w.casefold() not in known]
    decisions = [made(i, decision="close_measure", measure=known[w.casefold()], note=note)
                 for i, w in enumerate(wanted) if w.casefold() in known]
    return decisions, [f"no measure {w!r}" for w in unknown]


class Scripted(Waiter):
    """Answer from a decisions file, one decision each time the run waits; none left: offline."""

    mode = "scripted"

    def __init__(self, script: Script, start: datetime) -> None:
        self.start = start
        self.pending = sorted((d for d in script.decisions if d.kind not in ("approve", "reject")), key=lambda d: d.at)
        self.clock = start

    def now(self) -> datetime:
        return self.clock

    def wait(self, store: EvidenceStore, incident: Incident, stage: Stage, needs: list[str], n: int) -> None:
        if not self.pending:
            raise WaitingForPeople(stage, needs)
        scripted = self.pending.pop(0)
        at = self.start + scripted.at
        self.clock = max(self.clock, at)
        for i, decision in enumerate(self._decisions(scripted, incident, stage)):
            decision = decision.model_copy(update={"id": decision_id("script", at, i, decision.measure)})
            try:
                recorder.record(store, incident, decision, at)
            except IrpError as exc:
                store.append_event(incident.id, TimelineEntry(
                    at=at, kind="finding", stage=stage, actor=scripted.by,
                    message=f"decisions file: the {scripted.kind} at +{_offset(scripted.at)} was not applied: {exc}"))

    def _decisions(self, d: ScriptedDecision, incident: Incident, stage: Stage) -> list[Decision]:
        base = {"id": "-", "by": d.by, "note": d.note or f"scripted {d.kind}"}
        if d.false_positive:
            return [Decision(decision="false_positive", **base)]
        if d.advance:
            return [Decision(decision="advance", stage=d.advance, **base)]
        if d.review:
            at = self.start + d.at
            review = ReviewOutcome(by=d.by, at=at, causes=d.review.causes, worked=d.review.worked,
                                   did_not_work=d.review.did_not_work,
                                   corrective=[{"title": c.title, "owner": c.owner, "due": c.due_at(at)}
                                               for c in d.review.corrective])
            return [Decision(decision="review", review=review, **base)]
        wanted = d.close or ""
        if wanted == "all":
            targets = [m.id for m in open_measures(incident, None if stage == Stage.review else stage)]
        else:
            by_step = [a.id for a in incident.actions if a.step == wanted and a.status != "closed"]
            targets = by_step or [wanted]
        return [Decision(decision="close_measure", measure=m, **base) for m in targets]


def _offset(delta: timedelta) -> str:
    total = int(delta.total_seconds())
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    return "".join(f"{v}{u}" for v, u in ((days, "d"), (hours, "h"), (rest // 60, "m"), (rest % 60, "s")) if v) or "0s"
