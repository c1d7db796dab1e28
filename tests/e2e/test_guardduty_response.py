"""From a GuardDuty finding to a response, end to end: the finding as EventBridge's API destination posts it to
/alerts/eventbridge (API-key header), routed by the shipped routing.yaml, the run created from its deployment
and executed by a worker, against moto's server over HTTP.

- An IAM credential finding: the key is described and its CloudTrail events archived in analyse; then, the
  deployment not allowing alert data to choose access keys (IRP_ACTION_TARGETS), the deactivation waits for
  a person, the key still active and its evidence already archived; approved, the key is deactivated.
- An EC2 finding: the instance, in an Auto Scaling group and a target group, is described and its state
  collected, then quarantined (standby, out of the target group); `irp actions undo` puts it back in both.
"""

# ruff: noqa: F811  (pytest fixtures imported from service_fixtures are parameters here)
from __future__ import annotations

import json
import threading
from datetime import datetime
from pathlib import Path

import pytest
from aws_stack import AWS_SAMPLES, Approver, Cloud, prepare, step_records
from polling import runs_named, wait_for
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists
from prefect.flow_runs import resume_flow_run
from pydantic import SecretStr
from service_fixtures import aws, fault_proxy, intake_request, moto_server  # noqa: F401
from typer.testing import CliRunner

from flows.incidents import INCIDENT_FLOWS
from irp.cli.actions import actions_app
from irp.evidence import LocalEvidenceStore
from irp.intake.service import IntakeService
from irp.models import IncidentType
from irp.settings import Settings, get_settings
from irp.worker import InProcessWorker

REPO = Path(__file__).resolve().parents[2]
POOL = "irp-guardduty-test"
API_KEY = "eventbridge-connection-key"

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def stack(fault_proxy, aws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """moto (through the proxy), the two incident flows deployed on a pool a worker serves, the intake in-process."""
    monkeypatch.chdir(REPO)
    cloud = Cloud(aws, fault_proxy, monkeypatch)
    monkeypatch.delenv("IRP_ACTION_TARGETS")  # alert data chooses nothing without a person (the default)
    get_settings.cache_clear()
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
        except ObjectAlreadyExists:
            pass
    for incident_type in (IncidentType.account_compromise, IncidentType.malware):
        INCIDENT_FLOWS[incident_type].to_deployment(name="respond", work_pool_name=POOL).apply()
    worker = InProcessWorker(pool=POOL, poll_seconds=0.2, max_runs=2, name="guardduty-test")
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    service = IntakeService(Settings(eventbridge_api_key=SecretStr(API_KEY),
                                     intake_journal=str(tmp_path / "journal.sqlite3")))
    service.start()
    try:
        yield cloud, service
    finally:
        service.stop()
        worker.stop()
        thread.join(60)


def post_finding(service: IntakeService, body: str) -> dict:
    answer = intake_request(service, "POST", "/alerts/eventbridge", content=body.encode(),
                            headers={"x-irp-api-key": API_KEY, "content-type": "application/json"})
    assert answer.status_code == 202, answer.text
    [outcome] = answer.json()["alerts"]
    return outcome


def run_of(incident_id: str):
    """The incident's response run (its letters' reviews are runs of their own, named "<id> review <obligation>")."""
    found = [run for run in runs_named(incident_id) if " review " not in run.name]
    return found[0] if found else None


def finished(incident_id: str):
    """The run once its automatic part is over: suspended waiting for people (or ended)."""
    run = run_of(incident_id)
    return run if run and (run.state.is_final() or run.state.name == "Suspended") else None


def test_a_guardduty_credential_finding_describes_archives_then_deactivates_the_key(stack, evidence_root) -> None:
    cloud, service = stack
    outcome = post_finding(service, prepare(cloud, (AWS_SAMPLES / "guardduty-iam-credentials.json").read_text()))
    assert (outcome["outcome"], outcome["incident_type"], outcome["route"], outcome["severity_hint"]) == (
        "new_incident", "account_compromise", "guardduty-credentials", "critical")
    incident_id = outcome["incident_id"]

    held = wait_for("the deactivation waiting for its approval", lambda: (
        (run := run_of(incident_id)) and run.state.is_paused() and run))
    assert held.state.state_details.pause_key == "approval-contain-deactivate-key-0"
    assert cloud.key_status() == "Active"  # nothing changed yet
    store = LocalEvidenceStore(evidence_root)
    before = {item.name for item in store.manifest(incident_id)}
    assert any(n.startswith("actions/analyse/describe_key/") for n in before)
    assert any(n.startswith("actions/analyse/trail_key/cloudtrail-") for n in before)

    resume_flow_run(held.id, run_input={"decision": "approve", "approver": "Alice Martin",
                                        "reason": "GuardDuty: key used from outside AWS"})
    with Approver():  # the later gates: remove_persistence (always asked), block_src (held like the key)
        run = wait_for("the run to wait for people", lambda: finished(incident_id))
    assert run.state.name == "Suspended", run.state.message  # the measures of contain are people's work
    assert cloud.key_status() == "Inactive"

    records = {r["id"]: r for r in step_records(evidence_root, incident_id)}
    key = records["deactivate_key"]
    assert key["status"] == "completed" and key["held"] == ""  # its own approval: the key may be a service's
    described = records["describe_key"]["output"]["details"]
    assert (described["user"], described["status"]) == ("key-owner", "Active")  # as it was before the change
    trail = records["trail_key"]["output"]["details"]
    assert trail["count"] == 3 and trail["event_names"] == {"ListBuckets": 1, "CreateUser": 1, "CreateAccessKey": 1}
    manifest = {item.name: item for item in store.manifest(incident_id)}
    evidence = [manifest[name] for step in ("describe_key", "trail_key") for name in records[step]["evidence"]]
    assert evidence and max(i.collected_at for i in evidence) < datetime.fromisoformat(key["started_at"])
    assert "approvals/contain/deactivate_key.json" in manifest
    archived = json.loads((evidence_root / incident_id / "objects" / records["trail_key"]["evidence"][0]).read_text())
    assert [e["EventName"] for e in archived["events"]] == ["ListBuckets", "CreateUser", "CreateAccessKey"]


def test_a_guardduty_ec2_finding_quarantines_out_of_group_and_target_group_and_undo_puts_it_back(
        stack, evidence_root) -> None:
    cloud, service = stack
    outcome = post_finding(service, prepare(cloud, (AWS_SAMPLES / "guardduty-ec2-cryptocurrency.json").read_text()))
    assert (outcome["incident_type"], outcome["route"]) == ("malware", "guardduty-malware")
    incident_id = outcome["incident_id"]
    assert cloud.placement() == {"state": "InService", "in_target_group": True}
    with Approver() as approver:
        run = wait_for("the run to wait for people", lambda: finished(incident_id))
    assert run.state.name == "Suspended" and approver.approved, run.state.message
    assert cloud.placement() == {"state": "Standby", "in_target_group": False}
    records = {r["id"]: r for r in step_records(evidence_root, incident_id)}
    assert records["describe_host"]["output"]["details"]["auto_scaling_group"] == "web"
    assert datetime.fromisoformat(records["collect_host_state"]["ended_at"]) < datetime.fromisoformat(
        records["quarantine_host"]["started_at"])

    result = CliRunner().invoke(actions_app, ["undo", incident_id, "quarantine_host", "--yes"])
    assert result.exit_code == 0, result.output
    assert cloud.placement() == {"state": "InService", "in_target_group": True}
