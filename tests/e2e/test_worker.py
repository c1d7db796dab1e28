"""irp worker: claims scheduled runs of the pool, runs each exactly once, even with two workers."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from lifecycle_fixtures import EVERYONE_AGREES
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.exceptions import ObjectAlreadyExists

from flows.incidents import INCIDENT_FLOWS
from irp.models import IncidentType
from irp.worker import InProcessWorker

REPO = Path(__file__).resolve().parents[2]
POOL = "irp-worker-test"


@pytest.fixture
def deployment_id(prefect_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(REPO)
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
        except ObjectAlreadyExists:
            pass
    deployment = INCIDENT_FLOWS[IncidentType.human_error].to_deployment(name="worker-test", work_pool_name=POOL)
    return str(deployment.apply())


def test_two_workers_run_each_scheduled_run_exactly_once(deployment_id: str) -> None:
    workers = [InProcessWorker(pool=POOL, poll_seconds=0.1, max_runs=4, name=f"w{i}") for i in range(2)]
    threads = [threading.Thread(target=w.run) for w in workers]
    for thread in threads:
        thread.start()
    alert = json.loads((REPO / "playbooks" / "samples" / "human_error.json").read_text())
    try:
        with get_client(sync_client=True) as client:
            people = EVERYONE_AGREES.model_dump(mode="json")  # each run goes through its whole life unattended
            ids = [client.create_flow_run_from_deployment(deployment_id, parameters={"alert": alert, "decisions": people}).id
                   for _ in range(4)]
            deadline = time.monotonic() + 300
            while True:
                runs = [client.read_flow_run(i) for i in ids]
                if all(r.state.is_final() for r in runs):
                    break
                assert time.monotonic() < deadline, [r.state.name for r in runs]
                time.sleep(0.5)
            assert [r.state.name for r in runs] == ["Completed"] * 4
            task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
        detects = [t for t in task_runs if t.name.startswith("detect-")]
        assert sorted(str(t.flow_run_id) for t in detects) == sorted(str(i) for i in ids)  # each ran once
        assert len({r.name.split()[0] for r in runs}) == 4 and all(r.name.startswith("INC-") for r in runs)
    finally:
        for worker in workers:
            worker.stop()
        for thread in threads:
            thread.join(60)
