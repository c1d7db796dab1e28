"""The deployment contract between the intake and the flows: what the intake starts, and with what.

Each incident type's flow (flows/incidents.py) is deployed as `<type>/respond` (prefect.yaml); the
intake starts it with the parameters RESPOND_PARAMETERS names. An unrouted alert its source marks
severe starts the triage flow (flows/triage.py), deployed as TRIAGE_DEPLOYMENT, with TRIAGE_PARAMETERS.
A test checks prefect.yaml and the flows' signatures against this module.
"""

from __future__ import annotations

from typing import Any

from irp.models import Alert, IncidentType

__all__ = ["RESPOND_DEPLOYMENT", "RESPOND_PARAMETERS", "TRIAGE_DEPLOYMENT", "TRIAGE_PARAMETERS", "respond_call",
           "respond_deployment", "triage_call"]

RESPOND_DEPLOYMENT = "respond"  # the deployment name of every incident flow
RESPOND_PARAMETERS = ("alert", "incident_id", "severity_hint", "clients")  # what the intake may pass to it
TRIAGE_DEPLOYMENT = "triage/triage"  # flows/triage.py:triage, deployed as "triage"
TRIAGE_PARAMETERS = ("alert", "incident_id", "severity_hint")


def respond_deployment(incident_type: IncidentType) -> str:
    """`<flow>/<deployment>` of the flow that responds to `incident_type`."""
    return f"{incident_type.value}/{RESPOND_DEPLOYMENT}"


def respond_call(incident_type: IncidentType, alert: Alert, incident_id: str, severity_hint: str | None,
                 clients: list[dict[str, Any]] | None = None) -> tuple[str, dict[str, Any]]:
    """(deployment, parameters) that start the response to a new incident opened by `alert`.

    `clients` (the Clients a route states, trusted) is passed only when the route states some.
    """
    values = (alert.model_dump(mode="json"), incident_id, severity_hint, clients)
    parameters = dict(zip(RESPOND_PARAMETERS, values, strict=True))
    if clients is None:
        del parameters["clients"]
    return respond_deployment(incident_type), parameters


def triage_call(alert: Alert, incident_id: str, severity_hint: str | None) -> tuple[str, dict[str, Any]]:
    """(deployment, parameters) that start the triage of an unrouted alert its source marks severe."""
    values = (alert.model_dump(mode="json"), incident_id, severity_hint)
    return TRIAGE_DEPLOYMENT, dict(zip(TRIAGE_PARAMETERS, values, strict=True))
