"""An unrouted alert its source marks critical, posted to the intake: a triage run is created from its
deployment and run by a worker, the internal recipients get the message over SMTP (aiosmtpd, STARTTLS and
AUTH), a responder chooses the type on the Resume form, and that type's run starts on the same incident."""

# ruff: noqa: F811  (pytest fixtures imported from notify_fixtures are parameters here)
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from notify_fixtures import smtp_server, tls_cert  # noqa: F401 (fixtures)
from polling import runs_named, wait_for
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter, FlowRunFilterName
from prefect.exceptions import ObjectAlreadyExists
from prefect.flow_runs import resume_flow_run
from service_fixtures import intake_request

from flows.incidents import INCIDENT_FLOWS
from flows.triage import triage
from irp.intake.service import IntakeService
from irp.models import Alert, IncidentType
from irp.settings import Settings, get_settings
from irp.worker import InProcessWorker

REPO = Path(__file__).resolve().parents[2]
POOL = "irp-triage-test"
TOKEN = "triage-test-token"
INTERNAL = ["security@confluent-digital.com", "dpo@confluent-digital.com"]


@pytest.fixture
def stack(prefect_server: str, smtp_server, tls_cert, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """SMTP configured for the flows, triage deployed on a pool a worker serves, human_error deployed (not run)."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("IRP_SMTP_URL", smtp_server.url)
    monkeypatch.setenv("IRP_SMTP_CA_BUNDLE", str(tls_cert.cert))
    monkeypatch.setenv("IRP_NOTIFY_RETRY_BASE_SECONDS", "0.05")
    get_settings.cache_clear()
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
        except ObjectAlreadyExists:
            pass
    triage.to_deployment(name="triage", work_pool_name=POOL).apply()
    respond = INCIDENT_FLOWS[IncidentType.human_error].to_deployment(name="respond").apply()
    worker = InProcessWorker(pool=POOL, poll_seconds=0.2, max_runs=2, name="triage-test")
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    service = IntakeService(Settings(webhook_token=TOKEN, intake_journal=str(tmp_path / "journal.sqlite3")))
    service.start()
    try:
        yield service, smtp_server, str(respond)
    finally:
        service.stop()
        worker.stop()
        thread.join(60)


def test_a_critical_unrouted_alert_is_told_and_triaged_into_its_type(stack, evidence_root: Path) -> None:
    service, smtp, respond_id = stack
    alert = {"title": "Root user signed in from an unknown country", "description": "SIEM correlation rule 42",
             "labels": {"severity": "critical", "account": "prod", "country": "XX"}}
    answer = intake_request(service, "POST", "/alerts/generic", json=alert,
                            headers={"Authorization": f"Bearer {TOKEN}"})
    [outcome] = answer.json()["alerts"]
    assert (answer.status_code, outcome["outcome"], outcome["incident_type"]) == (202, "new_incident", "triage")
    incident_id = outcome["incident_id"]

    told = wait_for("the internal message", lambda: all(smtp.to(a) for a in INTERNAL) and smtp.messages)
    subject = told[0].message["Subject"]
    assert f"[IRP][À TRIER] {incident_id}" in subject and "Root user signed in" in subject
    assert all(m.tls and m.login for m in told)
    assert "Choisissez le type d'incident" in told[0].message.get_body(("plain",)).get_content()

    run = wait_for("the paused triage run", lambda: [
        r for r in runs_named(incident_id) if r.name == f"{incident_id} triage" and r.state.is_paused()])[0]
    assert run.parameters["incident_id"] == incident_id
    resume_flow_run(run.id, run_input={"incident_type": "human_error", "responder": "Alice Martin",
                                       "reason": "the root login was a colleague's test, wrongly configured"})
    with get_client(sync_client=True) as client:
        done = wait_for("the triage run to end", lambda: (r := client.read_flow_run(run.id)).state.is_final() and r)
        assert done.state.is_completed(), done.state.message
        [child] = client.read_flow_runs(  # this incident's run of the deployment (other tests use it too)
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[respond_id])),
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=incident_id)))
    assert child.parameters["incident_id"] == incident_id and child.parameters["severity_hint"] == "critical"
    assert child.parameters["alert"]["title"] == alert["title"] and child.name == f"{incident_id} human_error"
    assert child.parent_task_run_id is not None  # started by the triage run, linked to it

    objects = evidence_root / incident_id / "objects"
    decision = json.loads((objects / "triage" / "decision.json").read_text())
    assert (decision["incident_type"], decision["responder"], decision["flow_run_id"]) == (
        "human_error", "Alice Martin", str(child.id))
    record = json.loads((objects / "triage" / "triage.json").read_text())
    assert record["severity"] == "critical" and record["flow_run_id"] == str(run.id)
    delivery = json.loads((objects / "notifications" / "triage" / "triage_alert.fr.delivery.json").read_text())
    assert delivery["status"] == "sent" and sorted(d["recipient"] for d in delivery["deliveries"]) == sorted(INTERNAL)


def test_nobody_choosing_in_time_is_escalated_and_the_triage_ends(prefect_server, smtp_server, tls_cert,
                                                                   evidence_root: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRP_SMTP_URL", smtp_server.url)
    monkeypatch.setenv("IRP_SMTP_CA_BUNDLE", str(tls_cert.cert))
    monkeypatch.setenv("IRP_TRIAGE_TIMEOUT_HOURS", "0.002")  # 7.2 s
    get_settings.cache_clear()
    result = triage(alert=Alert(title="Unknown critical thing", labels={"severity": "critical"}),
                    incident_id="INC-20261207-CCCCCC", severity_hint="critical")
    assert result == {"incident_id": "INC-20261207-CCCCCC", "incident_type": None, "flow_run_id": None}
    subjects = [m.message["Subject"] for m in smtp_server.to(INTERNAL[0])]
    assert subjects == ["[IRP][À TRIER] INC-20261207-CCCCCC — Unknown critical thing",
                        "[IRP][TRI EN ATTENTE] INC-20261207-CCCCCC — Unknown critical thing"]
    decision = json.loads((evidence_root / "INC-20261207-CCCCCC" / "objects" / "triage" / "decision.json").read_text())
    assert decision["incident_type"] is None and decision["reason"] == "nobody chose a type in time"
