"""Review (policy §11): the post-incident review stage.

Side effects: those of the steps' actions (review.write_report: the review report and the response
metrics, irp/actions/review.py; response.assign_action: corrective actions with owners).
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from irp.engine.records import RunContext, StageResult
from irp.engine.stages import run_stage
from irp.models import Incident, Stage


@task(name="review", cache_policy=NO_CACHE)
def review(incident: Incident, run: RunContext) -> StageResult:
    """Run the playbook's review steps."""
    return run_stage(Stage.review, incident, run)
