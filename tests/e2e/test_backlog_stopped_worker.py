"""The backlog against a real Prefect server with no worker on the pool: the intake keeps acknowledging and
creating runs, /metrics counts the runs waiting and their age, /healthz turns degraded and names the cause;
once a worker takes them, it is healthy again."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from polling import wait_for
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists
from service_fixtures import intake_request

from flows.incidents import INCIDENT_FLOWS
from irp.intake import backlog
from irp.intake.service import IntakeService
from irp.models import IncidentType
from irp.settings import Settings
from irp.worker import InProcessWorker

REPO = Path(__file__).resolve().parents[2]
POOL = "irp-backlog-test"
TOKEN = "backlog-e2e-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

pytestmark = pytest.mark.usefixtures("prefect_server")


def _metric(text: str, name: str) -> float:
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def test_runs_no_worker_takes_make_the_intake_degraded_until_a_worker_comes(
        tmp_path: Path, evidence_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(backlog, "RUNS_READ_EVERY", 0.0)  # read the work pool at every request
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
        except ObjectAlreadyExists:
            pass
    INCIDENT_FLOWS[IncidentType.human_error].to_deployment(name="respond", work_pool_name=POOL).apply()
    route = f"backlog-{tmp_path.name}"  # this test's runs only: the session's server holds other tests' runs
    routing = tmp_path / "routing.yaml"
    routing.write_text(f"version: 1\nroutes:\n  - name: {route}\n    source: generic\n    incident_type: human_error\n")
    service = IntakeService(Settings(webhook_token=TOKEN, intake_journal=str(tmp_path / "journal.sqlite3"),
                                     routing_file=routing, intake_backlog_max_age_seconds=2))
    service.backlog = backlog.BacklogMonitor(service.journal, lambda: service.runs.waiting(tag=f"route:{route}"))
    service.start()
    worker = InProcessWorker(pool=POOL, poll_seconds=0.2, max_runs=4, name="backlog-test")
    thread = threading.Thread(target=worker.run, daemon=True)
    try:
        for i in range(3):
            answer = intake_request(service, "POST", "/alerts/generic", headers=AUTH, json={
                "title": f"stopped worker {i}", "fingerprint": f"stopped-worker-{i}-{tmp_path.name}",
                "labels": {"team": "support"}})
            assert answer.status_code == 202, answer.text  # acknowledged while nothing runs

        degraded = wait_for("the intake to say runs wait for a worker", lambda: (
            (h := intake_request(service, "GET", "/healthz", headers=AUTH)).json()["status"] == "degraded" and h),
            timeout=120, every=0.5)
        assert degraded.status_code == 200 and degraded.json()["runs_waiting"]["count"] >= 3
        assert "waiting for a worker" in degraded.json()["late"][0]
        assert degraded.json()["backlog"]["run"] == 0  # every run was created: the queue is the work pool's
        metrics = intake_request(service, "GET", "/metrics").text
        assert _metric(metrics, "irp_intake_runs_waiting") >= 3
        assert _metric(metrics, "irp_intake_runs_waiting_age_seconds") > 2

        thread.start()
        wait_for("the intake to be healthy once a worker took the runs", lambda: intake_request(
            service, "GET", "/healthz", headers=AUTH).json()["status"] == "ok", timeout=180, every=0.5)
        assert _metric(intake_request(service, "GET", "/metrics").text, "irp_intake_runs_waiting") == 0
    finally:
        worker.stop()
        if thread.is_alive():
            thread.join(60)  # the runs in progress end before the session's server does
        service.stop()
