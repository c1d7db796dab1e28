"""Notify (policy §7, §12, §14): render the notifications the incident calls for and send them.

Runs twice: the initial notification right after analyse (beside contain and restore, so no
regulatory clock waits for containment), the final one after review.
Side effects: those of the steps' actions (notification.send, notification.send_due: messages to
configured recipients only, archived as evidence; irp/actions/notification.py).
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from irp.engine.records import RunContext, StageResult
from irp.engine.stages import run_stage
from irp.models import Incident, Stage


@task(name="notify", cache_policy=NO_CACHE, task_run_name="notify-{phase}")
def notify(incident: Incident, run: RunContext, phase: str) -> StageResult:
    """Run the playbook's notify steps of `phase` (initial or final)."""
    return run_stage(Stage.notify, incident, run, phase=phase)
