"""`irp actions undo INCIDENT STEP` on a step record archived as the engine archives it."""

from __future__ import annotations

# ruff: noqa: F811  (pytest fixtures imported from service_fixtures are parameters here)
import json

import pytest
from pydantic_core import to_jsonable_python
from service_fixtures import aws, boto, make_ctx, make_incident, moto_server  # noqa: F401  (fixtures)
from typer.testing import CliRunner

from irp.actions.aws.iam import AccessKeyArgs, deactivate_access_key
from irp.cli.actions import actions_app
from irp.engine.records import StepRecord
from irp.evidence import LocalEvidenceStore
from irp.models import Stage, StepStatus, utcnow

runner = CliRunner()


def archive_step(store: LocalEvidenceStore, incident_id: str, step: str, action: str, args, output,
                 status: StepStatus = StepStatus.completed, dry_run: bool = False) -> None:
    """What irp/engine/stages.py archives after each step."""
    record = StepRecord(id=step, action=action, stage=Stage.contain, status=status, args=to_jsonable_python(args),
                        output=to_jsonable_python(output), started_at=utcnow(), ended_at=utcnow(), dry_run=dry_run)
    store.put_json(incident_id, f"steps/contain/{step}.json", record.model_dump(mode="json"), source_system="irp")


@pytest.fixture
def contained(aws, evidence_root):
    """An incident whose step cut_key deactivated alice's access key."""
    iam = boto("iam", aws)
    iam.create_user(UserName="alice")
    key = iam.create_access_key(UserName="alice")["AccessKey"]["AccessKeyId"]
    incident = make_incident()
    store = LocalEvidenceStore(evidence_root)
    store.save_incident(incident)
    args = AccessKeyArgs(access_key_id=key)
    output = deactivate_access_key(args, make_ctx(evidence_root, step="cut_key", action="aws.deactivate_access_key"))
    archive_step(store, incident.id, "cut_key", "aws.deactivate_access_key", args, output)
    return {"iam": iam, "key": key, "store": store, "incident": incident}


def status(iam, key: str) -> str:
    return iam.list_access_keys(UserName="alice")["AccessKeyMetadata"][0]["Status"]


def test_undo_runs_the_recorded_plan_and_records_it(contained):
    iam, key, store, incident = contained["iam"], contained["key"], contained["store"], contained["incident"]
    assert status(iam, key) == "Inactive"
    result = runner.invoke(actions_app, ["undo", incident.id, "cut_key", "--yes"])
    assert result.exit_code == 0, result.output
    assert "undo: aws.activate_access_key" in result.output
    assert f"access key {key} of alice reactivated" in result.output
    assert status(iam, key) == "Active"
    names = [item.name for item in store.manifest(incident.id)]
    assert "undo/contain/cut_key.json" in names
    with store.open(incident.id, "undo/contain/cut_key.json") as handle:
        archived = json.load(handle)
    assert archived["undo"]["action"] == "aws.activate_access_key" and archived["output"]["changed"]
    timeline = store.load_incident(incident.id).timeline
    assert any(e.kind == "undo" and e.step == "cut_key" for e in timeline)

    again = runner.invoke(actions_app, ["undo", incident.id, "cut_key", "--yes"])
    assert again.exit_code == 0 and "already active" in again.output


def test_dry_run_changes_nothing(contained):
    iam, key, incident = contained["iam"], contained["key"], contained["incident"]
    result = runner.invoke(actions_app, ["undo", incident.id, "cut_key", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "dry run: would reactivate" in result.output and status(iam, key) == "Inactive"


def test_confirmation_is_asked(contained):
    result = runner.invoke(actions_app, ["undo", contained["incident"].id, "cut_key"], input="n\n")
    assert result.exit_code == 1 and status(contained["iam"], contained["key"]) == "Inactive"


def test_unknown_step_lists_the_recorded_ones(contained):
    result = runner.invoke(actions_app, ["undo", contained["incident"].id, "nope", "--yes"])
    assert result.exit_code == 1
    assert "has no record of step 'nope'; steps recorded: cut_key" in result.output


def test_steps_without_undo_are_refused(evidence_root):
    store = LocalEvidenceStore(evidence_root)
    incident = make_incident()
    store.save_incident(incident)
    archive_step(store, incident.id, "note", "timeline.record", {"message": "x"}, {"recorded": "x"})
    archive_step(store, incident.id, "failed", "aws.block_ip", {}, None, status=StepStatus.failed)
    archive_step(store, incident.id, "rehearsal", "aws.block_ip", {}, {"message": "dry run", "undo": None},
                 dry_run=True)
    for step, reason in [("note", "has nothing to undo: its action has no undo"),
                         ("failed", "did not complete (failed)"),
                         ("rehearsal", "ran as a dry run and changed nothing")]:
        result = runner.invoke(actions_app, ["undo", incident.id, step, "--yes"])
        assert result.exit_code == 1 and reason in result.output, result.output
