"""An incident lives as long as its response (issue 16): stages wait for people, closure is earned.

On a real Prefect server with `irp worker` processes: the run waits at contain (suspended, no worker
busy), a worker is SIGKILLed and replaced, closing the measure from the CLI resumes the run exactly
once, with no AWS call repeated (counted at a proxy in front of moto); restore waits for a
confirmation, review for its outcome, the final letter lists what was done, and the metrics are the
decisions' times. The same lifecycle offline from a decisions file; a false positive ends cleanly.
"""

from __future__ import annotations

# ruff: noqa: F811  (pytest fixtures imported from service_fixtures are parameters here)
import json
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from playbook_copies import edit_playbook
from polling import wait_for
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.exceptions import ObjectAlreadyExists
from service_fixtures import aws, boto, fault_proxy, moto_server  # noqa: F401  (fixtures)
from typer.testing import CliRunner

from flows.incidents import INCIDENT_FLOWS
from irp.cli import app
from irp.engine.script import Script
from irp.errors import EvidenceError
from irp.evidence import open_store
from irp.models import Alert, IncidentStatus, IncidentType, Stage, new_incident_id
from irp.reports.kpis import measure_incident
from irp.settings import get_settings

REPO = Path(__file__).resolve().parents[2]
POOL = "irp-lifecycle-test"
ROTATE = "Rotate the credentials of the export service"

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def cloud(aws: str, fault_proxy, monkeypatch: pytest.MonkeyPatch) -> dict:
    """In moto: the exporting user and its key; the deployment allows the alert to name keys."""
    iam = boto("iam", aws)
    iam.create_user(UserName="svc-export")
    key = iam.create_access_key(UserName="svc-export")["AccessKey"]["AccessKeyId"]
    monkeypatch.setenv("IRP_ACTION_TARGETS", json.dumps({"access_key": {"allow": ["AKIA*"]}}))
    get_settings.cache_clear()
    return {"iam": iam, "key": key, "proxy": fault_proxy}


@pytest.fixture
def leak_playbook(playbooks: Path) -> Path:
    """data_leak.yaml with one automatic containment (the key) and one measure for a person."""

    def edit(document) -> None:
        document["stages"]["analyse"] = [s for s in document["stages"]["analyse"] if not s["action"].startswith("aws.")]
        document["stages"]["contain"] = [
            {"id": "cut_key", "action": "aws.deactivate_access_key",
             "args": {"access_key_id": "{{ alert.labels.access_key }}"}},
            {"id": "rotate", "action": "response.assign_action",
             "args": {"title": ROTATE, "owner": "platform-oncall", "due_in_hours": 2}},
        ]
        document["stages"]["restore"] = [{"id": "note", "action": "timeline.record",
                                          "args": {"message": "exports may resume once the credentials are rotated"}}]

    edit_playbook(playbooks, "data_leak", edit)
    return playbooks


def alert_with(key: str) -> Alert:
    alert = json.loads((REPO / "playbooks" / "samples" / "data_leak.json").read_text())
    return Alert.model_validate({**alert, "labels": {**alert["labels"], "access_key": key}, "fingerprint": ""})


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def start_worker(log: Path) -> subprocess.Popen:
    """`irp worker` in its own process, on the session's Prefect server (not a running `irp stack`)."""
    from prefect.settings import PREFECT_API_URL

    return subprocess.Popen([str(Path(sys.executable).parent / "irp"), "worker", "--pool", POOL, "--poll-seconds", "0.2"],
                            cwd=REPO, env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()},
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


def waiting_at(incident_id: str, run_id, stage: Stage):
    """The incident once its run is suspended at `stage` (record saved, flow run Paused)."""
    store = open_store(get_settings().evidence_url)

    def check():
        try:  # the folder exists from the first archived item, the record a moment later
            incident = store.load_incident(incident_id)
        except EvidenceError:
            return None
        if incident.waiting is None or incident.waiting.stage != stage:
            return None
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run_id).state
        return incident if state is not None and state.is_paused() else None

    return wait_for(f"the run to wait at {stage.value}", check, timeout=240)


def task_runs(run_id) -> list[str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    return [t.name for t in runs]


def test_a_response_waits_for_people_survives_a_killed_worker_and_repeats_nothing(
        cloud: dict, leak_playbook: Path, tmp_path: Path) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
        except ObjectAlreadyExists:
            pass
    deployment_id = INCIDENT_FLOWS[IncidentType.data_leak].to_deployment(name="lifecycle", work_pool_name=POOL).apply()
    incident_id = new_incident_id()
    log = tmp_path / "worker.log"
    worker = start_worker(log)
    try:
        with get_client(sync_client=True) as client:
            run_id = client.create_flow_run_from_deployment(deployment_id, parameters={
                "alert": alert_with(cloud["key"]).model_dump(mode="json"), "incident_id": incident_id}).id
        incident = waiting_at(incident_id, run_id, Stage.contain)
        # the automatic containment ran once; the person's measure holds the stage
        key_state = cloud["iam"].list_access_keys(UserName="svc-export")["AccessKeyMetadata"][0]["Status"]
        assert key_state == "Inactive" and cloud["proxy"].count("UpdateAccessKey") == 1
        [measure] = [a for a in incident.actions if a.title == ROTATE]
        shown = cli("incidents", "show", incident_id)
        assert "containing — 1 measure(s) open" in shown and measure.id in shown

        os.killpg(worker.pid, signal.SIGKILL)  # the run waits in Prefect, not in the worker
        worker.wait(30)
        worker = start_worker(log)

        closed = cli("actions", "close", incident_id, measure.id, "--by", "Alice Durand",
                     "--resolution", "credentials rotated, ticket SEC-42")
        assert f"resumed flow run {run_id}" in closed
        incident = waiting_at(incident_id, run_id, Stage.restore)
        assert cloud["proxy"].count("UpdateAccessKey") == 1  # nothing repeated on resume
        names = task_runs(run_id)
        assert sum(n.startswith("contain-") for n in names) == 1 and sum(n.startswith("detect-") for n in names) == 1
        assert "a responder's confirmation" in cli("incidents", "show", incident_id)

        cli("incidents", "advance", incident_id, "restore", "--by", "Bob Martin", "--note", "exports checked")
        incident = waiting_at(incident_id, run_id, Stage.review)
        for item in incident.actions:  # the DPO's analyse measure, still open, also holds the review
            if item.status != "closed":
                cli("actions", "close", incident_id, item.id, "--by", "Claire DPO", "--resolution", "assessed")
        cli("incidents", "review", incident_id, "--by", "Claire DPO", "--causes", "A token leaked in a CI log.",
            "--worked", "DLP alert within minutes", "--corrective", "title=Scan CI logs,owner=dev-lead,due=2027-02-01")
        incident = waiting_at(incident_id, run_id, Stage.notify)  # no channel configured: the letters are owed
        cli("incidents", "advance", incident_id, "notify", "--by", "Claire DPO",
            "--note", "CNIL notified through its online form, receipt 2026-1234")

        def done():
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(run_id).state
            return state if state.is_final() else None

        assert wait_for("the run to finish", done, timeout=240).is_completed()
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(30)
    store = open_store(get_settings().evidence_url)
    incident = store.load_incident(incident_id)
    assert incident.status == IncidentStatus.closed and incident.closure.how == "closed"
    assert cloud["proxy"].count("UpdateAccessKey") == 1
    assert sum(n.startswith("contain-") for n in task_runs(run_id)) == 1
    rotated = next(a for a in incident.actions if a.title == ROTATE)
    metrics = measure_incident(incident).measures
    assert metrics["contain"].reached_at == rotated.closed_at
    confirmed = next(e for e in incident.timeline if e.kind == "decision" and e.data.get("stage") == "restore")
    assert metrics["restore"].reached_at == confirmed.at
    assert incident.review.causes == "A token leaked in a CI log."
    assert any(a.title == "Scan CI logs" and a.owner == "dev-lead" for a in incident.actions)
    finals = [i.name for i in store.manifest(incident_id) if i.name.startswith("notifications/final/") and
              i.name.endswith(".md")]
    assert finals
    with store.open(incident_id, finals[0]) as handle:
        letter = handle.read().decode()
    assert f"- {ROTATE} — le " in letter  # a measure taken, with its date (no wording for this test's step)
    with store.open(incident_id, "review/final-report.md") as handle:
        report = handle.read().decode()
    assert "A token leaked in a CI log." in report and "draft" not in report.splitlines()[0]


def test_a_decisions_file_runs_the_same_lifecycle_offline(cloud: dict, leak_playbook: Path) -> None:
    script = Script.model_validate({"decisions": [
        {"at": "40m", "by": "Alice Durand", "close": "rotate", "note": "credentials rotated"},
        {"at": "3h", "by": "Bob Martin", "advance": "restore", "note": "exports checked"},
        {"at": "1d", "by": "Claire DPO", "close": "all", "note": "assessed"},
        {"at": "3d", "by": "Claire DPO", "review": {"causes": "A token leaked in a CI log.",
                                                  "corrective": [{"title": "Scan CI logs", "owner": "dev-lead", "due": "30d"}]}},
        {"at": "3d1h", "by": "Claire DPO", "advance": "notify", "note": "CNIL notified by form"},
    ]})
    summary = INCIDENT_FLOWS[IncidentType.data_leak](alert=alert_with(cloud["key"]), decisions=script)
    assert summary.status == IncidentStatus.closed, summary.waiting_text
    incident = open_store(get_settings().evidence_url).load_incident(summary.incident_id)
    start = incident.aware_at
    metrics = measure_incident(incident).measures
    assert metrics["contain"].reached_at == start + timedelta(minutes=40)
    assert metrics["restore"].reached_at == start + timedelta(hours=3)
    assert incident.closure.at == start + timedelta(days=3, hours=1)
    corrective = next(a for a in incident.actions if a.title == "Scan CI logs")
    assert corrective.due_at == start + timedelta(days=33)


def test_a_false_positive_ends_cleanly_with_undo_offered(cloud: dict, leak_playbook: Path) -> None:
    summary = INCIDENT_FLOWS[IncidentType.data_leak](alert=alert_with(cloud["key"]))
    assert summary.status == IncidentStatus.containing and summary.waiting.stage == Stage.contain  # offline: ends open
    said = cli("incidents", "false-positive", summary.incident_id, "--by", "Alice Durand",
               "--reason", "the export was the nightly backup")
    assert f"irp actions undo {summary.incident_id} cut_key" in said
    store = open_store(get_settings().evidence_url)
    incident = store.load_incident(summary.incident_id)
    assert incident.status == IncidentStatus.false_positive and incident.closure.by == "Alice Durand"
    result = CliRunner().invoke(app, ["incidents", "resume", summary.incident_id])
    assert result.exit_code != 0 and "has ended (false_positive)" in result.output
    assert not incident.automatic_done(Stage.notify, "final")
    assert any(e.details.get("act") == "false_positive" for e in store.custody(incident.id) if e.event == "audit")
