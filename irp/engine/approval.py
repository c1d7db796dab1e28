"""Approval gates: a step marked `approval:` pauses the flow run until enough people decide.

The Resume form in the Prefect UI shows what is about to happen and asks approve or reject, the
approver's name and a reason. Side effects: the flow run is paused (and put back to Running after
a timeout); every decision goes to the timeline, to the evidence and to the audit log.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Literal

from prefect.client.orchestration import get_client
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.states import Running
from pydantic import BaseModel, Field

from irp import audit
from irp.engine.records import RunContext
from irp.engine.targets import TargetValue
from irp.evidence import open_store
from irp.models import Incident, Stage, TimelineEntry, utcnow
from irp.playbook.models import Approval, Step
from irp.settings import get_settings

__all__ = ["ApprovalDecision", "ApprovalOutcome", "request_approval"]

# One pause at a time per flow run: notify (initial) runs beside contain and both may ask.
_PAUSE_LOCK = threading.Lock()


class ApprovalDecision(RunInput):
    """The Resume form of an approval gate."""

    decision: Literal["approve", "reject"] = Field(
        title="Decision", description="Approve runs the step; reject skips it and records why.",
        json_schema_extra={"position": 0},
    )
    approver: str = Field(
        min_length=1, max_length=200, title="Your name", description="Who decides (recorded in the timeline).",
        json_schema_extra={"position": 1},
    )
    reason: str = Field(
        min_length=1, max_length=2000, title="Reason", description="Why (recorded in the timeline and evidence).",
        json_schema_extra={"position": 2},
    )


class ApprovalOutcome(BaseModel):
    """What the approvers decided."""

    approved: bool
    timed_out: bool = False
    reason: str
    decisions: list[dict[str, Any]] = Field(default_factory=list)
    timeline: list[TimelineEntry] = Field(default_factory=list)


def _cell(value: str) -> str:
    """A value as a markdown table cell that alert text cannot break out of."""
    text = " ".join(value.split())
    text = text if len(text) <= 120 else text[:117] + "..."
    return "`" + text.replace("`", "'").replace("|", "\\|") + "`"


def describe(step: Step, stage: Stage, incident: Incident, args: Any, needed: int, approvals: list[str],
             targets: list[TargetValue] = (), why: str = "") -> str:
    """The markdown the Resume form shows: the action, its targets and who chose them, the incident."""
    arguments = json.dumps(args, indent=2, ensure_ascii=False, default=str)
    lines = [
        f"## Approval needed: `{step.action}` ({stage.value} · {step.id})",
        "",
        step.description or "",
        "",
        f"**Incident** {incident.id} — {incident.type.label} — severity **{incident.severity.value}**",
        "",
        f"> {incident.title}",
        "",
    ]
    if why:
        lines += [f"**Why irp asks:** {why.removeprefix('held for approval: ')} — the playbook does not require an "
                  "approval here, but an alert may describe, not choose what is changed.", ""]
    if targets:
        lines += ["**Targets** (what this step changes)", "", "| Argument | Kind | Value | Chosen by |", "|---|---|---|---|"]
        lines += [f"| `{t.arg}` | {t.kind} | {_cell(t.value)} | "
                  + ("**alert data** (check it)" if t.from_alert else "the playbook or configuration") + " |"
                  for t in targets]
        lines.append("")
    lines += [
        "**Arguments**",
        "",
        "```json",
        arguments,
        "```",
        "",
        f"Approvals needed: **{needed}** distinct people"
        + (f"; already approved by: {', '.join(approvals)}" if approvals else "") + ".",
        "",
        "Reject skips the step and records your reason.",
    ]
    return "\n".join(lines)


def _audit(incident: Incident, act: str, actor: str, stage: Stage, step: Step, **details: Any) -> None:
    """Put an approval decision in the incident's tamper-evident audit log (irp/audit.py)."""
    audit.record(open_store(get_settings().evidence_url), incident.id, act, actor=actor, strict=False,
                 details={"stage": stage.value, "step": step.id, "action": step.action,
                          "flow_run_id": str(flow_run.id or ""), **details})


def _back_to_running() -> None:
    """After a pause timed out the server still says Paused: put the run back to Running."""
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run.id, Running(), force=True)


def _scripted(step: Step, run: RunContext) -> list:
    """The decisions file's approvals and rejections of `step`."""
    return [d for d in (run.script.decisions if run.script else []) if (d.approve or d.reject) == step.id]


def _unattended(step: Step, stage: Stage, run: RunContext, gate: Approval) -> ApprovalOutcome:
    """The decisions file decides, or no one can be asked (no Prefect server): not approved."""
    scripted = _scripted(step, run)
    if scripted:
        approvals = list(dict.fromkeys(d.by for d in scripted if d.approve))
        start = run.script_start or utcnow()
        rejected = next((d for d in scripted if d.reject), None)
        entries = [TimelineEntry(kind="approval", stage=stage, step=step.id, actor=d.by, at=start + d.at,
                                 message=f"step {step.id} {'approved' if d.approve else 'rejected'} by {d.by} "
                                         f"(decisions file): {d.note or '—'}") for d in scripted]
        decisions = [{"decision": "approve" if d.approve else "reject", "approver": d.by, "reason": d.note}
                     for d in scripted]
        if rejected is None and len(approvals) >= gate.approvers:
            return ApprovalOutcome(approved=True, reason=f"approved by {', '.join(approvals)} (decisions file)",
                                   decisions=decisions, timeline=entries)
        reason = (f"step {step.id} rejected by {rejected.by}: {rejected.note}" if rejected else
                  f"approval of step {step.id}: {len(approvals)}/{gate.approvers} approvals in the decisions file")
        return ApprovalOutcome(approved=False, reason=reason, decisions=decisions, timeline=entries)
    reason = (f"no one can approve step {step.id} here (no Prefect server to ask): not run; a person takes it "
              "over, or runs the response on the stack (irp stack) where approvals are asked in the UI")
    return ApprovalOutcome(approved=False, reason=reason,
                           timeline=[TimelineEntry(kind="approval", stage=stage, step=step.id, message=reason)])


def request_approval(step: Step, stage: Stage, incident: Incident, args: Any, run: RunContext, *,
                     why: str = "", targets: list[TargetValue] = ()) -> ApprovalOutcome:
    """Pause until `step.approval.approvers` distinct people approve, one rejects, or time runs out.

    `why` (irp/engine/targets.py) asks for a step without `approval:`: one person, the playbook defaults.
    Without a server, or with a decisions file, nobody is asked (`_unattended`).
    """
    gate = step.approval or Approval()
    dry_run = run.dry_run
    if not dry_run and (run.approvals == "none" or _scripted(step, run)):
        return _unattended(step, stage, run, gate)
    if dry_run:
        message = (f"dry run: step {step.id} would be {why}" if why
                   else f"dry run: step {step.id} would need {gate.approvers} approval(s)")
        return ApprovalOutcome(
            approved=True,
            reason=f"dry run: would wait for {gate.approvers} approval(s)",
            timeline=[TimelineEntry(kind="approval", stage=stage, step=step.id, message=message)],
        )
    approvals: list[str] = []
    decisions: list[dict[str, Any]] = []
    timeline: list[TimelineEntry] = []
    if why:
        timeline.append(TimelineEntry(kind="approval", stage=stage, step=step.id, message=f"step {step.id} {why}"))
    timeout = int(gate.timeout_minutes * 60)
    while len(approvals) < gate.approvers:
        description = describe(step, stage, incident, args, gate.approvers, approvals, targets, why)
        form = ApprovalDecision.with_initial_data(description=description, decision="approve")
        try:
            with _PAUSE_LOCK:
                decision = pause_flow_run(
                    wait_for_input=form, timeout=timeout, poll_interval=2,
                    key=f"approval-{stage.value}-{step.id.replace('_', '-')}-{len(decisions)}",
                )
        except FlowPauseTimeout:
            _back_to_running()
            approved = gate.on_timeout == "approve"
            message = (f"approval of step {step.id} timed out after {gate.timeout_minutes:g} min "
                       f"({len(approvals)}/{gate.approvers} approvals); default applied: {gate.on_timeout}")
            timeline.append(TimelineEntry(kind="escalation", stage=stage, step=step.id, message=message))
            _audit(incident, "approval_timed_out", "irp", stage, step, default=gate.on_timeout,
                   approvals=list(approvals))
            return ApprovalOutcome(approved=approved, timed_out=True, reason=message, decisions=decisions,
                                   timeline=timeline)
        record = decision.model_dump(include={"decision", "approver", "reason"})
        decisions.append(record)
        who = decision.approver.strip()
        if decision.decision == "reject":
            message = f"step {step.id} rejected by {who}: {decision.reason}"
            timeline.append(TimelineEntry(kind="approval", stage=stage, step=step.id, actor=who, message=message))
            _audit(incident, "rejected", who, stage, step, reason=decision.reason)
            return ApprovalOutcome(approved=False, reason=message, decisions=decisions, timeline=timeline)
        if who.casefold() in (a.casefold() for a in approvals):
            _audit(incident, "approved", who, stage, step, reason=decision.reason, counted=False)
            timeline.append(TimelineEntry(kind="approval", stage=stage, step=step.id, actor=who,
                                          message=f"{who} already approved step {step.id}; another person must"))
            continue
        approvals.append(who)
        _audit(incident, "approved", who, stage, step, reason=decision.reason, counted=True,
               approvals=f"{len(approvals)}/{gate.approvers}")
        timeline.append(TimelineEntry(
            kind="approval", stage=stage, step=step.id, actor=who,
            message=f"step {step.id} approved by {who} ({len(approvals)}/{gate.approvers}): {decision.reason}",
        ))
    return ApprovalOutcome(approved=True, reason=f"approved by {', '.join(approvals)}", decisions=decisions,
                           timeline=timeline)
