"""The deployment contract (irp/deployments.py) is what prefect.yaml deploys and what the flows accept."""

from __future__ import annotations

import inspect
from pathlib import Path

from ruamel.yaml import YAML

from flows.incidents import INCIDENT_FLOWS
from flows.triage import triage
from irp.deployments import (
    RESPOND_DEPLOYMENT,
    RESPOND_PARAMETERS,
    TRIAGE_DEPLOYMENT,
    TRIAGE_PARAMETERS,
    respond_call,
    respond_deployment,
    triage_call,
)
from irp.models import Alert, IncidentType

REPO = Path(__file__).resolve().parents[2]


def _incident_deployments() -> dict[str, str]:
    """flow function name -> deployment name, for every prefect.yaml entry of flows/incidents.py."""
    document = YAML(typ="safe").load((REPO / "prefect.yaml").read_text())
    found = {}
    for deployment in document["deployments"]:
        path, _, function = deployment["entrypoint"].partition(":")
        if path == "flows/incidents.py":
            found[function] = deployment["name"]
    return found


def test_prefect_yaml_deploys_every_incident_flow_under_the_contract_name() -> None:
    assert _incident_deployments() == {t.value: RESPOND_DEPLOYMENT for t in IncidentType}


def test_every_incident_flow_takes_the_contract_parameters() -> None:
    for incident_type, flow in INCIDENT_FLOWS.items():
        assert flow.name == incident_type.value
        accepted = inspect.signature(flow.fn).parameters
        assert [p for p in RESPOND_PARAMETERS if p not in accepted] == [], incident_type


def test_the_intake_call_names_the_deployment_and_its_parameters() -> None:
    alert = Alert(source="generic", title="disk wiped")
    deployment, parameters = respond_call(IncidentType.data_alteration, alert, "INC-1", "major")
    assert deployment == respond_deployment(IncidentType.data_alteration) == "data_alteration/respond"
    assert tuple(parameters) == RESPOND_PARAMETERS[:-1]  # clients only when a route states some
    assert INCIDENT_FLOWS[IncidentType.data_alteration].validate_parameters(parameters)["incident_id"] == "INC-1"
    origin = {"client": "acme", "source": "routing", "confirmed": True, "by": "route acme-sns"}
    _, parameters = respond_call(IncidentType.data_alteration, alert, "INC-1", "major", [origin])
    assert tuple(parameters) == RESPOND_PARAMETERS
    assert INCIDENT_FLOWS[IncidentType.data_alteration].validate_parameters(parameters)["clients"][0].client == "acme"


def test_the_triage_deployment_and_its_parameters() -> None:
    document = YAML(typ="safe").load((REPO / "prefect.yaml").read_text())
    deployed = {d["entrypoint"]: d["name"] for d in document["deployments"]}
    flow_name, deployment = TRIAGE_DEPLOYMENT.split("/")
    assert triage.name == flow_name and deployed["flows/triage.py:triage"] == deployment
    name, parameters = triage_call(Alert(source="generic", title="root login"), "INC-2", "critical")
    assert name == TRIAGE_DEPLOYMENT and tuple(parameters) == TRIAGE_PARAMETERS
    assert triage.validate_parameters(parameters)["incident_id"] == "INC-2"


def test_the_review_deployment_is_the_one_a_held_message_starts() -> None:
    from flows.notification_review import review_notification
    from irp.actions.notification import REVIEW_DEPLOYMENT

    document = YAML(typ="safe").load((REPO / "prefect.yaml").read_text())
    deployed = {d["entrypoint"]: d["name"] for d in document["deployments"]}
    flow_name, deployment = REVIEW_DEPLOYMENT.split("/")
    assert review_notification.name == flow_name
    assert deployed["flows/notification_review.py:review_notification"] == deployment
    parameters = review_notification.validate_parameters({"incident_id": "INC-3", "obligation_id": "gdpr_authority"})
    assert parameters == {"incident_id": "INC-3", "obligation_id": "gdpr_authority"}
