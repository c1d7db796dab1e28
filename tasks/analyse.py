"""Analyse (policy §5, §7): classify the severity and assess the personal data involved.

Side effects: those of the steps' actions (e.g. incident.classify, incident.assess_personal_data).
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from irp.engine.records import RunContext, StageResult
from irp.engine.stages import run_stage
from irp.models import Incident, Stage


@task(name="analyse", cache_policy=NO_CACHE)
def analyse(incident: Incident, run: RunContext) -> StageResult:
    """Run the playbook's analyse steps."""
    return run_stage(Stage.analyse, incident, run)
