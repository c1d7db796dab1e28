"""actions.undo_step: a playbook step rolls back an earlier step of the same run (moto over HTTP)."""

from __future__ import annotations

# ruff: noqa: F811  (pytest fixtures imported from service_fixtures are parameters here)
import pytest
from pydantic_core import to_jsonable_python
from service_fixtures import aws, boto, make_ctx, moto_server  # noqa: F401  (fixtures)

from irp.actions.actions import UndoStepArgs, undo_step
from irp.actions.aws.s3 import BucketArgs, block_public_access
from irp.engine.records import StepRecord
from irp.errors import ActionError
from irp.models import Stage, StepStatus, utcnow


def record(step: str, action: str, output, status=StepStatus.completed, dry_run=False) -> StepRecord:
    return StepRecord(id=step, action=action, stage=Stage.contain, status=status, output=to_jsonable_python(output),
                      started_at=utcnow(), ended_at=utcnow(), dry_run=dry_run)


@pytest.fixture
def s3(aws):
    client = boto("s3", aws)
    client.create_bucket(Bucket="exports", CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
    return client


def has_block(s3) -> bool:
    try:
        s3.get_public_access_block(Bucket="exports")
    except s3.exceptions.ClientError:
        return False
    return True


def test_rolls_back_an_earlier_step_of_the_run(s3, evidence_root):
    output = block_public_access(BucketArgs(bucket="exports"), make_ctx(evidence_root, step="close_bucket"))
    assert has_block(s3)
    ctx = make_ctx(evidence_root, step="reopen", stage=Stage.restore, action="actions.undo_step")
    ctx.steps = {"close_bucket": record("close_bucket", "aws.block_public_access", output)}
    outcome = undo_step(UndoStepArgs(step="close_bucket", reason="false positive"), ctx)
    assert not has_block(s3) and outcome.changed
    assert outcome.message.startswith("undo of step close_bucket with aws.restore_public_access_block (false positive)")
    assert [e.kind for e in ctx.timeline][-1] == "undo"
    again = undo_step(UndoStepArgs(step="close_bucket"), ctx)
    assert not again.changed and not has_block(s3)


@pytest.mark.parametrize(("status", "dry_run", "why"), [
    (StepStatus.skipped, False, "it skipped"),
    (StepStatus.completed, True, "it ran as a dry run"),
])
def test_nothing_to_undo_is_said_not_failed(evidence_root, status, dry_run, why):
    ctx = make_ctx(evidence_root, step="reopen")
    ctx.steps = {"close_bucket": record("close_bucket", "aws.block_public_access",
                                        {"target": "s3-bucket/exports", "undo": None}, status, dry_run)}
    outcome = undo_step(UndoStepArgs(step="close_bucket"), ctx)
    assert not outcome.changed and outcome.message == f"step close_bucket has nothing to undo: {why}"


def test_an_unknown_step_is_an_error(evidence_root):
    ctx = make_ctx(evidence_root)
    ctx.steps = {"scope": record("scope", "incident.set_scope", {})}
    with pytest.raises(ActionError, match="no step 'nope' ran before this one; steps so far: scope"):
        undo_step(UndoStepArgs(step="nope"), ctx)
