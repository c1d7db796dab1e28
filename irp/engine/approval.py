"""Approval gates: a step marked `approval:` pauses the flow run until enough people decide.

The members of the step's approver group (IRP_APPROVERS) are paged through the notification
channels with two personal signed links (irp/approval_links.py): approve, reject. A decision made
through a link is verified for that identity; one typed in the Prefect UI's Resume form is not,
and does not count where the step says `verified: true`. Reminders go out before the timeout; at
the timeout the `escalate_to` group is paged and has IRP_APPROVAL_ESCALATION_MINUTES before
`on_timeout` applies. The person who reported the incident cannot approve its steps (four-eyes).
A decision for other arguments than those now rendered is void, and the step asks again.
Side effects: the flow run is paused (and put back to Running after each window); messages are
sent; every decision goes to the timeline, to the evidence and to the audit log.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from prefect.client.orchestration import get_client
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.states import Running
from pydantic import BaseModel, Field

from irp import audit
from irp.approval_links import LinkError, action_sha256, decision_url, issue, read, require_secret
from irp.engine.admission import stepped_out
from irp.engine.records import RunContext
from irp.engine.targets import TargetValue
from irp.errors import ConfigurationError
from irp.evidence import open_store
from irp.models import Incident, Stage, TimelineEntry, utcnow
from irp.notifications.channels import Message, deliver
from irp.playbook.models import Approval, Step
from irp.settings import Settings, get_settings, member_name, member_target

__all__ = ["ApprovalDecision", "ApprovalOutcome", "request_approval"]

# One pause at a time per flow run: notify (initial) runs beside contain and both may ask.
_PAUSE_LOCKS: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)


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
    link: str = Field(
        "", max_length=4096, title="Signed link (leave empty)",
        description="Filled by irp's approval page; a decision typed here is recorded as unverified.",
        json_schema_extra={"position": 3},
    )


class ApprovalOutcome(BaseModel):
    """What the approvers decided."""

    approved: bool
    timed_out: bool = False
    reason: str
    verified: list[str] = Field(default_factory=list, description="Identities whose approval came through a link.")
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


Wait = Callable[[type[ApprovalDecision], float, str], "ApprovalDecision | None"]


def _pause(form: Any, seconds: float, key: str) -> ApprovalDecision | None:
    """Pause the flow run for one window: the decision, or None when the window ended."""
    try:
        with stepped_out(), _PAUSE_LOCKS[str(flow_run.id)]:  # waiting for people holds no place (admission.py)
            return pause_flow_run(wait_for_input=form, timeout=max(1, round(seconds)), poll_interval=2, key=key)
    except FlowPauseTimeout:
        _back_to_running()
        return None


def is_requester(who: str, incident: Incident, address: str = "") -> bool:
    """Whether `who` (a name, or a link's identity and address) reported the incident: four-eyes."""
    reporter = " ".join(incident.reporter.casefold().split())
    if not reporter:
        return False
    for name in (who, address):
        name = " ".join(name.casefold().split())
        if name and (name == reporter or re.search(rf"(^|[\s<(,]){re.escape(name)}($|[\s>),])", reporter)):
            return True
    return False


class _Gate:
    """One approval gate being asked: who was paged, who decided, until enough approve or time runs out."""

    def __init__(self, step: Step, stage: Stage, incident: Incident, args: Any, gate: Approval, settings: Settings,
                 targets: list[TargetValue], why: str) -> None:
        self.step, self.stage, self.incident, self.gate, self.settings = step, stage, incident, gate, settings
        self.targets, self.why = targets, why
        self.args, self.sha = args, action_sha256(step.action, args)
        self.key = f"approval-{stage.value}-{step.id.replace('_', '-')}"
        timeout = gate.timeout_minutes * 60
        self.deadline = time.time() + timeout
        self.reminders = sorted(self.deadline - m * 60 for m in settings.approval_reminder_minutes if 0 < m * 60 < timeout)
        self.escalated = False
        self.windows = 0
        self.approvals: dict[str, tuple[str, bool]] = {}  # casefold identity -> (identity, verified)
        self.used: set[str] = set()  # link ids seen by this gate
        self.decisions: list[dict[str, Any]] = []
        self.timeline: list[TimelineEntry] = []

    # --- paging ---

    def _links_expire(self) -> float:
        return self.deadline + (self.settings.approval_escalation_minutes * 60
                                if self.gate.escalate_to and not self.escalated else 0)

    def page(self, group: str | None, kind: str, only: set[str] | None = None) -> None:
        """Send each member of `group` (not yet decided; of `only` when given) the request with its links."""
        if group is None:
            return
        members = [m for m in self.settings.approvers.get(group, [])
                   if member_name(m).casefold() not in self.approvals and (only is None or member_name(m) in only)]
        if group not in self.settings.approvers:
            self._note("approval", f"approver group {group!r} of step {self.step.id} is not in IRP_APPROVERS: "
                                   "nobody paged; decide in the Prefect UI")
            return
        try:
            require_secret(self.settings)
        except ConfigurationError as exc:
            self._note("approval", f"approvers of step {self.step.id} not paged: {exc}")
            return
        sent = []
        for member in members:
            name, target = member_name(member), member_target(member)
            token = issue(self.settings, identity=name, address=target if "://" not in target else "",
                          flow_run_id=str(flow_run.id or ""), incident_id=self.incident.id, stage=self.stage.value,
                          step=self.step.id, gate=self.key, action=self.step.action, action_sha256=self.sha,
                          exp=self._links_expire())
            deliveries = deliver(self._message(kind, name, token), [target], self.settings)
            sent += [f"{name} ({d.status}{': ' + d.detail if d.detail and d.status != 'sent' else ''})"
                     for d in deliveries]
        self._note("approval" if kind != "escalation" else "escalation",
                   f"{kind} for step {self.step.id} sent to group {group}: {', '.join(sent) or 'nobody left to ask'}",
                   data={"group": group, "kind": kind})
        _audit(self.incident, "approval_paged", "irp", self.stage, self.step, group=group, kind=kind,
               recipients=sent, action_sha256=self.sha)

    def _message(self, kind: str, name: str, token: str) -> Message:
        deadline = datetime.fromtimestamp(self.deadline, UTC)
        when = deadline.strftime("%Y-%m-%d %H:%M UTC")
        opening = {
            "request": "A response step waits for your decision.",
            "reminder": "Reminder: a response step still waits for your decision.",
            "again": "The step's arguments changed since you were asked: earlier decisions are void. Please decide again.",
            "escalation": f"Escalation: nobody decided in time; {self.gate.on_timeout} applies at {when} unless "
                          "you decide.",
        }[kind]
        targets = [f"  - {t.arg} ({t.kind}): {t.value}" + ("  [chosen by alert data: check it]" if t.from_alert else "")
                   for t in self.targets]
        arguments = json.dumps(self.args, indent=2, ensure_ascii=False, default=str)
        text = "\n".join([
            f"Hello {name},", "", opening, "",
            f"Incident:  {self.incident.id} ({self.incident.type.value}, severity {self.incident.severity.value})",
            f"Title:     {' '.join(self.incident.title.split())[:200]}",
            f"Action:    {self.step.action} (stage {self.stage.value}, step {self.step.id})",
            f"What:      {self.step.description or '-'}",
            *(["Targets:", *targets] if targets else []),
            "Arguments:", arguments, "",
            f"Approvals needed: {self.gate.approvers} distinct people"
            + (" through these links (verified)" if self.gate.verified else ""),
            f"Decide by: {when}", "",
            f"Approve: {decision_url(self.settings, token, 'approve')}",
            f"Reject:  {decision_url(self.settings, token, 'reject')}", "",
            "These links are yours alone: do not forward them. Opening one changes nothing:",
            "you decide on the page, with a reason. They work once, until the deadline, and only",
            "for the action and arguments above.",
        ])
        prefix = {"reminder": "Reminder: ", "escalation": "Escalation: ", "again": "Again: "}.get(kind, "")
        subject = f"[irp] {prefix}approval needed: {self.step.action} for {self.incident.id} by {when}"
        return Message(subject=subject, text=text, reference=f"{self.incident.id}/{self.key}")

    # --- deciding ---

    def counted(self) -> int:
        return len(self.approvals)

    def rerendered(self, args: Any) -> None:
        """The arguments rendered again: when they changed, earlier approvals are void and the group is asked again."""
        sha = action_sha256(self.step.action, args)
        if sha == self.sha:
            return
        void = [who for who, _ in self.approvals.values()]
        self.args, self.sha = args, sha
        self.approvals.clear()
        self._note("approval", f"the arguments of step {self.step.id} changed: earlier approvals void "
                               f"({', '.join(void) or 'none'}); asking again")
        _audit(self.incident, "approval_void", "irp", self.stage, self.step, void=void, action_sha256=sha)
        self.page(self.gate.group, "again")

    def take(self, decision: ApprovalDecision) -> ApprovalOutcome | None:
        """Record one decision; the outcome when it ends the gate (a rejection), else None."""
        who, verified, address = decision.approver.strip(), False, ""
        if decision.link:
            try:
                claims = read(self.settings, decision.link, now=time.time() - 60)
            except (LinkError, ConfigurationError) as exc:
                _audit(self.incident, "approval_link_refused", who, self.stage, self.step, reason=str(exc))
                self._note("approval", f"a decision for step {self.step.id} came with an invalid link: ignored")
                return None
            if claims.gate != self.key or claims.flow_run_id != str(flow_run.id or "") or claims.jti in self.used:
                _audit(self.incident, "approval_link_refused", claims.identity, self.stage, self.step,
                       reason="link of another gate or run, or used twice")
                return None
            self.used.add(claims.jti)
            who, verified, address = claims.identity, True, claims.address
            if claims.action_sha256 != self.sha:
                self._note("approval", f"{who}'s decision on step {self.step.id} is void: the action's arguments "
                                       "changed since the link was sent; asking again", actor=who)
                _audit(self.incident, "approval_void", who, self.stage, self.step, decision=decision.decision,
                       link_sha256=claims.action_sha256, action_sha256=self.sha)
                self.page(self.gate.group, "again", only={who})
                return None
        how = "verified" if verified else "unverified"  # a signed link, or a name typed in the Prefect UI
        self.decisions.append({"decision": decision.decision, "approver": who, "reason": decision.reason,
                               "verified": verified, "at": utcnow().isoformat()})
        if decision.decision == "reject":
            message = f"step {self.step.id} rejected by {who} ({how}): {decision.reason}"
            self._note("approval", message, actor=who)
            _audit(self.incident, "rejected", who, self.stage, self.step, reason=decision.reason, verified=verified)
            return self.outcome(False, message)
        refusal = ""
        if is_requester(who, self.incident, address):
            refusal = f"{who} reported this incident and cannot approve its steps (four-eyes); another person must"
        elif self.gate.verified and not verified:
            refusal = (f"{who}'s approval typed in the Prefect UI is unverified and step {self.step.id} needs verified "
                       f"approvals: use the link sent to group {self.gate.group}")
        elif who.casefold() in self.approvals:
            refusal = f"{who} already approved step {self.step.id}; another person must (one person counts once)"
        if refusal:
            self._note("approval", refusal, actor=who)
            _audit(self.incident, "approval_refused", who, self.stage, self.step, reason=refusal, verified=verified)
            return None
        self.approvals[who.casefold()] = (who, verified)
        _audit(self.incident, "approved", who, self.stage, self.step, reason=decision.reason, counted=True,
               verified=verified, action_sha256=self.sha, approvals=f"{self.counted()}/{self.gate.approvers}")
        self._note("approval", f"step {self.step.id} approved by {who} ({how}) "
                               f"({self.counted()}/{self.gate.approvers}): {decision.reason}", actor=who)
        return None

    def window_ended(self) -> ApprovalOutcome | None:
        """A pause window ended without a decision: remind, escalate, or apply on_timeout."""
        now = time.time()
        if now < self.deadline - 1:
            self.reminders = [t for t in self.reminders if t > now + 1]
            self.page(self.gate.group, "reminder")
            return None
        if self.gate.escalate_to and not self.escalated:
            self.escalated = True
            self.deadline = now + self.settings.approval_escalation_minutes * 60
            self.page(self.gate.escalate_to, "escalation")
            self._note("escalation", f"nobody decided step {self.step.id} in time ({self.counted()}/"
                                     f"{self.gate.approvers} approvals): group {self.gate.escalate_to} paged; "
                                     f"{self.gate.on_timeout} applies in {self.settings.approval_escalation_minutes:g} "
                                     "min unless they decide")
            return None
        approvals = [who for who, _ in self.approvals.values()]
        message = (f"approval of step {self.step.id} timed out after {self.gate.timeout_minutes:g} min "
                   f"({len(approvals)}/{self.gate.approvers} approvals); default applied: {self.gate.on_timeout}")
        self._note("escalation", message)
        _audit(self.incident, "approval_timed_out", "irp", self.stage, self.step, default=self.gate.on_timeout,
               approvals=approvals)
        return self.outcome(self.gate.on_timeout == "approve", message, timed_out=True)

    def next_window(self) -> float:
        """Seconds until the next reminder or the deadline."""
        now = time.time()
        return max(1.0, min([*(t for t in self.reminders if t > now), self.deadline]) - now)

    def outcome(self, approved: bool, reason: str, timed_out: bool = False) -> ApprovalOutcome:
        return ApprovalOutcome(approved=approved, timed_out=timed_out, reason=reason, decisions=self.decisions,
                               timeline=self.timeline,
                               verified=[who for who, verified in self.approvals.values() if verified])

    def _note(self, kind: str, message: str, actor: str = "irp", data: dict | None = None) -> None:
        self.timeline.append(TimelineEntry(kind=kind, stage=self.stage, step=self.step.id, actor=actor,
                                           message=message, data=data or {}))


def request_approval(step: Step, stage: Stage, incident: Incident, args: Any, run: RunContext, *,
                     why: str = "", targets: list[TargetValue] = (), render: Callable[[], Any] | None = None,
                     wait: Wait | None = None) -> ApprovalOutcome:
    """Page the approvers and pause until `step.approval.approvers` distinct people approve, one rejects, or
    time runs out (after reminders and the escalation).

    `why` (irp/engine/targets.py) asks for a step without `approval:`: one person, the playbook defaults.
    `render` gives the arguments as they are now (a change voids earlier approvals); `wait` pauses one
    window (default: the Prefect pause). Without a server, or with a decisions file, nobody is asked.
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
    wait = wait or _pause
    asking = _Gate(step, stage, incident, args, gate, get_settings(), list(targets), why)
    if why:
        asking._note("approval", f"step {step.id} {why}")
    asking.page(gate.group, "request")
    while asking.counted() < gate.approvers:
        if render is not None:
            try:
                asking.rerendered(render())
            except Exception:  # noqa: BLE001 (a template failing now: the step fails when it runs, not the gate)
                pass
        description = describe(step, stage, incident, asking.args, gate.approvers,
                               [who for who, _ in asking.approvals.values()], targets, why)
        form = ApprovalDecision.with_initial_data(description=description, decision="approve")
        decision = wait(form, asking.next_window(), f"{asking.key}-{asking.windows}")
        asking.windows += 1
        ended = asking.window_ended() if decision is None else asking.take(decision)
        if ended is not None:
            return ended
    approvers = [who for who, _ in asking.approvals.values()]
    return asking.outcome(True, f"approved by {', '.join(approvers)}")
