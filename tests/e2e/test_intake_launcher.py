"""The intake's run launcher against the session's Prefect server: one run per idempotency key, and a
deployment applied anew (new id, same name) still gets the runs."""

from __future__ import annotations

import uuid

import pytest

from flows.incidents import INCIDENT_FLOWS
from irp.intake.service import RunLauncher
from irp.models import Alert, AlertSource, IncidentType, new_incident_id

pytestmark = pytest.mark.timeout(180)


def _payload(deployment: str) -> dict:
    incident_id = new_incident_id()
    alert = Alert(source=AlertSource.generic, fingerprint=uuid.uuid4().hex[:16], title="launcher test")
    return {"deployment": deployment, "idempotency_key": f"launcher-test:{incident_id}",
            "parameters": {"alert": alert.model_dump(mode="json"), "incident_id": incident_id, "severity_hint": None},
            "flow_run_name": f"{incident_id} launcher test", "tags": ["launcher-test"]}


def test_runs_follow_a_deployment_applied_anew(prefect_server: str) -> None:
    from prefect import get_client

    flow = INCIDENT_FLOWS[IncidentType.human_error]
    name = f"launcher-{uuid.uuid4().hex[:6]}"
    first_id = flow.to_deployment(name=name).apply()
    launcher = RunLauncher()
    try:
        payload = _payload(f"{flow.name}/{name}")
        run = launcher(payload)
        assert launcher(payload) == run  # the same key: the same run, not a second one
        with get_client(sync_client=True) as client:
            assert client.read_flow_run(run).deployment_id == first_id
            client.delete_deployment(first_id)
        second_id = flow.to_deployment(name=name).apply()
        assert second_id != first_id
        later = launcher(_payload(f"{flow.name}/{name}"))  # the cached id answers 404: looked up again
        with get_client(sync_client=True) as client:
            assert client.read_flow_run(later).deployment_id == second_id
            client.delete_deployment(second_id)
    finally:
        launcher.close()
