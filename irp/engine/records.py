"""What a run carries from step to step: each step's record, the run's shared context, a stage's result.

A StepRecord is archived as evidence after each step and visible to later steps as `steps.ID`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from irp.actions.registry import template_vars
from irp.engine.script import Script
from irp.models import Alert, Incident, Stage, StageOutcome, StepStatus, TimelineEntry
from irp.playbook.models import Playbook

__all__ = ["RunContext", "StageResult", "StepRecord", "template_context"]


class StepRecord(BaseModel):
    """What one step did; archived as evidence and visible to later steps as `steps.ID`."""

    id: str
    action: str
    stage: Stage
    phase: str | None = None
    status: StepStatus
    reason: str = ""
    args: Any = None
    output: Any = None
    error: str | None = None
    evidence: list[str] = Field(default_factory=list)
    started_at: datetime
    ended_at: datetime
    dry_run: bool = False
    held: str = Field("", description="Why the engine asked an approval the playbook did not (irp/engine/targets.py).")
    attempts: int = Field(1, description="Attempts made: 1 + the retries a failure of the outside world took.")
    updates: dict[str, Any] = Field(default_factory=dict, exclude=True)
    timeline: list[TimelineEntry] = Field(default_factory=list, exclude=True)


class RunContext(BaseModel):
    """What every stage of one run shares."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    alert: Alert
    playbook: Playbook
    evidence_url: str
    dry_run: bool = False
    steps: dict[str, StepRecord] = Field(default_factory=dict)
    approvals: Literal["pause", "none"] = Field(
        "pause", description="How approvals are asked when the decisions file does not decide: the Prefect UI "
                             "(pause), or not at all (no server: the step becomes a measure for a person).")
    script: Script | None = None
    script_start: datetime | None = None


class StageResult(BaseModel):
    """What a stage did: its outcome, its steps, and the incident changes to apply."""

    outcome: StageOutcome
    steps: list[StepRecord]
    updates: dict[str, Any] = Field(default_factory=dict)
    timeline: list[TimelineEntry] = Field(default_factory=list)
    stopped_by: str | None = Field(None, description="Id of the failed step whose on_failure is stop.")

    def apply(self, incident: Incident) -> Incident:
        """The incident with this stage's changes, outcome and timeline entries."""
        merged = incident.model_dump() | self.updates
        merged["stages"] = [*incident.stages, self.outcome]
        merged["timeline"] = sorted([*incident.timeline, *self.timeline], key=lambda e: e.at)
        if any(e.kind == "escalation" for e in self.timeline):
            merged["escalated"] = True
        return Incident.model_validate(merged)


def template_context(run: RunContext, incident: Incident, stage: Stage, phase: str | None) -> dict[str, Any]:
    """The variables a playbook template sees at this point of the run."""
    return template_vars(incident, run.alert, run.steps, run.playbook, stage, phase, run.dry_run)
