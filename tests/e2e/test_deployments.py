"""`prefect deploy --all` against a fresh server creates every deployment with its typed form."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

from irp.models import DataCategory, IncidentType, Severity

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")


@pytest.fixture(scope="module")
def deployments(prefect_server: str) -> dict:
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    for args in ([PREFECT, "work-pool", "create", "irp", "--type", "process", "--overwrite"],
                 [PREFECT, "--no-prompt", "deploy", "--all"]):
        result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with get_client(sync_client=True) as client:
        found = client.read_deployments()
        return {f"{client.read_flow(d.flow_id).name}/{d.name}": d for d in found}


def test_one_deployment_per_incident_type_and_one_to_declare(deployments: dict) -> None:
    expected = {f"{t.value}/respond" for t in IncidentType} | {"declare_incident/declare"}
    assert expected <= set(deployments)
    for name in expected:
        deployment = deployments[name]
        assert deployment.work_pool_name == "irp"
        assert deployment.enforce_parameter_schema
        assert "irp" in deployment.tags
        assert deployment.description and len(deployment.description) > 40


def test_incident_form_has_a_typed_alert_and_severity_dropdowns(deployments: dict) -> None:
    schema = deployments["data_leak/respond"].parameter_openapi_schema
    assert schema["required"] == ["alert"]
    properties = schema["properties"]
    assert [name for name, _ in sorted(properties.items(), key=lambda kv: kv[1]["position"])] == [
        "alert", "severity", "dry_run", "incident_id", "severity_hint", "clients", "decisions"]
    assert all(p.get("description") for p in properties.values())
    assert schema["definitions"]["Severity"]["enum"] == [s.value for s in Severity]
    alert = schema["definitions"]["Alert"]["properties"]
    assert alert["title"]["title"] == "Title" and alert["labels"]["type"] == "object"
    assert alert["status"]["enum"] == ["firing", "resolved"]


def test_declaration_form_is_titled_ordered_and_has_dropdowns(deployments: dict) -> None:
    schema = deployments["declare_incident/declare"].parameter_openapi_schema
    report = schema["definitions"]["IncidentReport"]
    fields = sorted(report["properties"].items(), key=lambda kv: kv[1]["position"])
    assert [name for name, _ in fields][:4] == ["incident_type", "title", "reporter", "reporter_role"]
    assert all(f.get("title") and f.get("description") for _, f in fields)
    assert schema["definitions"]["IncidentType"]["enum"] == [t.value for t in IncidentType]
    assert report["properties"]["data_categories"]["items"] == {"$ref": "#/definitions/DataCategory"}
    assert schema["definitions"]["DataCategory"]["enum"] == [c.value for c in DataCategory]
    assert report["properties"]["reporter_role"]["enum"] == ["client", "employee", "third_party"]
    assert set(report["required"]) == {"incident_type", "title", "reporter"}
