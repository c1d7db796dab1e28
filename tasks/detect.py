"""Detect (policy §4): record what was detected, where, and whom it affects.

Side effects: those of the steps' actions (e.g. incident.set_scope: scope, reporter, summary).
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from irp.engine.records import RunContext, StageResult
from irp.engine.stages import run_stage
from irp.models import Incident, Stage


@task(name="detect", cache_policy=NO_CACHE)
def detect(incident: Incident, run: RunContext) -> StageResult:
    """Run the playbook's detect steps."""
    return run_stage(Stage.detect, incident, run)
