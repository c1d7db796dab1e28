"""Tabletop exercises (`irp exercise TYPE --scenario FILE`): the real playbook on a simulated clock, with
injects at offsets and the participants' decisions, and an exercise report in the review report's format.

    name: Friday evening export leak
    alert: {sample: ../samples/data_leak.json}
    injects:
      - {at: 30m, alert: {sample: ../samples/data_leak.json}, note: "the DLP fires again"}   # a second alert
      - {at: 45m, outage: {provider: aws, service: iam}}          # IAM answers 503 from then on
      - {at: 2h, by: press office, note: "a journalist of Le Monde calls about a leak"}
    decisions:                                                     # participants (or --interactive)
      - {at: 5h, by: Alice Durand, approve: deactivate_key, note: "late: the approver was on a train"}

Nothing leaves the machine: no provider is configured (their answers come from `facts`, an outage is
an error answer), no notification channel is (letters are rendered and archived in a throwaway store),
and the incident's id is EXERCISE-…. The run goes in segments: up to each inject the participants'
decisions apply, then the inject, then the response continues from its record, as `irp incidents
resume` does; a decision given after the step it was for has run is late, and the report says so.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from irp import lifecycle
from irp.alerts import read_alert
from irp.engine.script import ScriptedDecision, parse_offset
from irp.errors import IrpError, PlaybookError
from irp.evidence import open_store
from irp.models import Alert, Incident, IncidentStatus, IncidentType, Severity, Stage, StepStatus, TimelineEntry
from irp.playbook.cases import AlertSample, AwsFact, Facts, PlatformFact
from irp.playbook.problems import schema_problems
from irp.playtest.replay import AwsReplay, PlatformReplay
from irp.playtest.runner import Outcome, session
from irp.reports.review import ReviewNotes, compose, render_review_html, report_markdown
from irp.settings import get_settings

__all__ = ["ExerciseReport", "Scenario", "load_scenario", "run_exercise"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Outage(_Strict):
    """A provider stops answering: every call to it fails from the inject's time on."""

    provider: Literal["aws", "platform"]
    service: str = Field("*", description="AWS: the service (iam, ec2, wafv2…; * every one).")
    code: str = Field("ServiceUnavailable", description="The error the provider answers.")


class Inject(_Strict):
    """Something that happens during the exercise, at an offset from awareness."""

    at: timedelta = Field(..., description="When, after awareness: 30m, 2h, 3d.")
    by: str = Field("exercise control", max_length=200, description="Who brings it in (for the timeline).")
    alert: Alert | AlertSample | None = Field(None, description="A second alert joins the incident.")
    outage: Outage | None = None
    note: str = Field("", max_length=2000, description="What happens (a journalist's call, a Client's email…).")

    @field_validator("at", mode="before")
    @classmethod
    def _offset(cls, value: Any) -> Any:
        return value if isinstance(value, timedelta) else parse_offset(value)

    @model_validator(mode="after")
    def _something(self) -> Inject:
        if self.alert is None and self.outage is None and not self.note:
            raise ValueError("an inject needs an alert, an outage or a note")
        return self


class Scenario(_Strict):
    """A tabletop exercise."""

    name: str = Field(..., min_length=1)
    description: str = ""
    alert: Alert | AlertSample
    severity_hint: Severity | None = None
    facts: Facts = Field(default_factory=Facts, description="What the providers answer (as in test cases).")
    injects: list[Inject] = Field(default_factory=list)
    decisions: list[ScriptedDecision] = Field(default_factory=list, description="The participants' decisions.")


def load_scenario(path: Path) -> Scenario:
    """Read and check a scenario file; PlaybookError lists every problem as FILE:LINE:COL."""
    from irp.playbook.loader import load_yaml

    plain, positions, _text, _data = load_yaml(path)
    try:
        return Scenario.model_validate(plain)
    except ValidationError as exc:
        raise PlaybookError(sorted(schema_problems(exc, Scenario, str(path), positions),
                                   key=lambda p: (p.line, p.col))) from None


def _alert(value: Alert | AlertSample, base: Path) -> Alert:
    if isinstance(value, Alert):
        return value
    try:
        return read_alert(base / value.sample)
    except IrpError as exc:
        raise IrpError(f"scenario alert {value.sample}: {exc}") from None


@dataclass
class ExerciseReport:
    """The exercise's outcome and its report (markdown and HTML, in the review report's format)."""

    outcome: Outcome
    markdown: str
    html: str
    missed: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)


Ask = Callable[[Incident, timedelta], ScriptedDecision | None]


def run_exercise(incident_type: IncidentType, scenario: Scenario, base: Path, playbooks_dir: Path,
                 ask: Ask | None = None) -> ExerciseReport:
    """Run the scenario; `ask` (interactive) is asked for a decision each time the response waits for one."""
    incident_id = f"EXERCISE-{secrets.token_hex(3).upper()}"
    alert = _alert(scenario.alert, base)
    injects = sorted(scenario.injects, key=lambda i: i.at)
    approvals = [d for d in scenario.decisions if d.kind in ("approve", "reject")]
    others = [d for d in scenario.decisions if d.kind not in ("approve", "reject")]
    with session(playbooks_dir, scenario.facts) as offline:
        aws, platform = _replays(offline.replays, scenario.facts)
        bounds = [i.at for i in injects] + [timedelta.max]
        previous = timedelta(0)
        for bound, inject in zip(bounds, [*injects, None], strict=True):
            given = [d for d in approvals if d.at < bound] + [d for d in others if previous <= d.at < bound]
            offline.respond(incident_type, alert, given, incident_id, severity_hint=scenario.severity_hint)
            if inject is not None:
                _apply(inject, incident_id, base, aws, platform)
            previous = bound
        while ask is not None:  # the participants decide at the prompt until the incident closes or they stop
            incident = open_store(get_settings().evidence_url).load_incident(incident_id)
            if incident.status in (IncidentStatus.closed, IncidentStatus.false_positive, IncidentStatus.stopped):
                break
            decision = ask(incident, _elapsed(incident))
            if decision is None:
                break
            approvals += [decision] if decision.kind in ("approve", "reject") else []
            offline.respond(incident_type, alert, [*approvals, decision] if decision.kind not in ("approve", "reject")
                            else approvals, incident_id)
        outcome = offline.outcome(incident_id)
        store = open_store(get_settings().evidence_url)
        evidence = store.manifest(incident_id)
    return _report(scenario, outcome, injects, evidence)


def _elapsed(incident: Incident) -> timedelta:
    return max(e.at for e in incident.timeline) - incident.aware_at


def _replays(replays: list[Any], facts: Facts) -> tuple[AwsReplay | None, PlatformReplay | None]:
    aws = next((r for r in replays if isinstance(r, AwsReplay)), None)
    platform = next((r for r in replays if isinstance(r, PlatformReplay)), None)
    return aws, platform


def _apply(inject: Inject, incident_id: str, base: Path, aws: AwsReplay | None, platform: PlatformReplay | None) -> None:
    """Bring the inject in: a timeline entry at its time, and the provider outage from then on."""
    store = open_store(get_settings().evidence_url)
    incident = store.load_incident(incident_id)
    at = incident.aware_at + inject.at
    if inject.alert is not None:
        second = _alert(inject.alert, base)
        store.append_event(incident_id, TimelineEntry(
            at=at, kind="alert", actor=inject.by, data={"fingerprint": second.fingerprint, "inject": True},
            message=f"exercise inject: {second.source.value} alert joins: {second.title}"))
    if inject.outage is not None:
        outage = inject.outage
        if outage.provider == "aws" and aws is not None:
            aws.facts.insert(0, AwsFact(service=outage.service, operation="*", error={"code": outage.code,
                                        "message": "exercise inject: provider outage", "status": 503}))
        elif outage.provider == "platform" and platform is not None:
            for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
                platform.facts.insert(0, PlatformFact(method=method, path="*", status=503,
                                                      response={"error": {"code": outage.code}}))
        store.append_event(incident_id, TimelineEntry(
            at=at, kind="finding", actor=inject.by,
            message=f"exercise inject: {outage.provider} {outage.service} outage ({outage.code}) from now on"
                    + ("" if (aws if outage.provider == "aws" else platform) is not None else
                       " (not configured in this scenario: its steps were skipped anyway)")))
    if inject.note:
        store.append_event(incident_id, TimelineEntry(at=at, kind="note", actor=inject.by,
                                                      message=f"exercise inject: {inject.note}"))


def _offset(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else "+"
    hours, rest = divmod(abs(seconds), 3600)
    return f"{sign}{hours}h{rest // 60:02d}"


def _report(scenario: Scenario, outcome: Outcome, injects: list[Inject], evidence: list[Any]) -> ExerciseReport:
    incident = outcome.incident
    aware = incident.aware_at
    explained = lifecycle.stage_end(incident, Stage.notify)
    deadline_rows, missed = [], []
    for d in outcome.deadlines:
        handled_at = d.met_at or (explained.at if explained else None)
        if d.status in ("met",) or (handled_at is not None and handled_at <= d.due_at):
            verdict = "met" if d.status == "met" else f"handled in time (notify ended {_offset(handled_at - aware)})"
        else:
            verdict = f"missed (handled {_offset(handled_at - aware)})" if handled_at else "missed (never handled)"
            missed.append(f"{d.obligation.id} due {_offset(d.due_at - aware)}: {verdict}")
        deadline_rows.append(f"| {d.obligation.id} | {_offset(d.due_at - aware)} | {verdict} |")
    gaps = []
    for key, record in outcome.steps.items():
        if record.status == StepStatus.failed:
            gaps.append(f"step {key} failed: {record.error}")
        elif record.status == StepStatus.skipped and not record.reason.startswith("condition is false"):
            gaps.append(f"step {key} skipped: {record.reason}")
    for d in scenario.decisions:
        step = outcome.steps.get(d.approve or d.reject or "")
        if step is not None and step.ended_at < aware + d.at:
            gaps.append(f"late decision: {d.kind} of step {step.id} by {d.by} at {_offset(d.at)}, after the step was "
                        f"settled at {_offset(step.ended_at - aware)} ({step.status.value})")
    gaps += [f"takeover measure {a.id} ({a.owner}): {a.title}" for a in incident.actions if a.id.startswith("T-")]
    gaps += [f"measure {a.id} still open at the end ({a.owner}): {a.title}" for a in lifecycle.open_measures(incident)]
    gaps += [f"notification deadline missed: {m}" for m in missed]
    decisions = [e for e in incident.timeline if e.kind in ("decision", "approval") and e.actor]
    lines = [
        "> **EXERCISE** — a tabletop exercise, not a real incident: nothing was sent to anyone outside, no provider "
        "was called, and this record was kept in a throwaway store.", "",
        f"## Exercise: {scenario.name}", "", scenario.description or "", "",
        f"Final status: **{incident.status.value}**"
        + (f" (waits at {incident.waiting.stage.value})" if incident.waiting else ""), "",
        "### Injects", "", "| At | By | What |", "|---|---|---|",
        *[f"| {_offset(i.at)} | {i.by} | {_inject_text(i)} |" for i in injects], "",
        "### Deadlines", "", "| Notification | Due | Outcome |", "|---|---|---|", *deadline_rows, "",
        "### Decisions and who made them", "", "| At | Who | Decision |", "|---|---|---|",
        *[f"| {_offset(e.at - aware)} | {e.actor} | {e.message.replace('|', '/')[:200]} |" for e in decisions], "",
        "### Gaps found", "", *([f"- {g}" for g in gaps] or ["_None._"]), "",
    ]
    review = report_markdown(incident, ReviewNotes(), evidence, now=outcome.ended_at)
    head, _, rest = review.partition("\n")
    markdown = f"# EXERCISE — {head.removeprefix('# ')}\n\n" + "\n".join(lines) + rest
    context = compose(incident, ReviewNotes(), evidence, now=outcome.ended_at)
    context["incident"] = incident.model_copy(update={"title": f"EXERCISE — {incident.title}"})
    context["did_not"] = [*context["did_not"], *gaps]
    from irp.reports.charts import timeline_svg

    html = render_review_html(context, timeline_svg(incident))
    return ExerciseReport(outcome=outcome, markdown=markdown, html=html, missed=missed, gaps=gaps)


def _inject_text(inject: Inject) -> str:
    parts = []
    if inject.alert is not None:
        parts.append("a second alert")
    if inject.outage is not None:
        parts.append(f"{inject.outage.provider} {inject.outage.service} outage")
    if inject.note:
        parts.append(inject.note.replace("|", "/")[:200])
    return "; ".join(parts)
