"""Contain (policy §6): isolate systems, limit access, suspend services.

Side effects: those of the steps' actions; the actions that act on AWS and the platform are added
with their integrations. Manual measures are assigned with response.assign_action.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from irp.engine.records import RunContext, StageResult
from irp.engine.stages import run_stage
from irp.models import Incident, Stage


@task(name="contain", cache_policy=NO_CACHE)
def contain(incident: Incident, run: RunContext) -> StageResult:
    """Run the playbook's contain steps."""
    return run_stage(Stage.contain, incident, run)
