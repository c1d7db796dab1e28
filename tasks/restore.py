"""Restore (policy §6): apply fixes, restore data and services, strengthen security.

Side effects: those of the steps' actions.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from irp.engine.records import RunContext, StageResult
from irp.engine.stages import run_stage
from irp.models import Incident, Stage


@task(name="restore", cache_policy=NO_CACHE)
def restore(incident: Incident, run: RunContext) -> StageResult:
    """Run the playbook's restore steps."""
    return run_stage(Stage.restore, incident, run)
