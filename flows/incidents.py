"""One Prefect flow per incident type of policy §2, each named after its type.

Every flow is the same engine run on a different playbook (playbooks/<type>.yaml), so the flows
are made by one factory; prefect.yaml deploys each by its name, e.g. flows/incidents.py:data_leak.
"""

from __future__ import annotations

from typing import Annotated

from prefect import Flow, flow
from pydantic import Field

from flows.engine import RunSummary, respond
from irp.models import Alert, IncidentType, Severity

__all__ = ["INCIDENT_FLOWS", *[t.value for t in IncidentType]]


def _incident_flow(incident_type: IncidentType) -> Flow:
    def run(
        alert: Annotated[Alert, Field(title="Alert", description="The alert or report that opened the incident.")],
        severity: Annotated[Severity | None, Field(
            title="Severity (override)", description="Set only to override the playbook's §5 classification.",
        )] = None,
        dry_run: Annotated[bool, Field(title="Dry run", description="Run every step without side effects.")] = False,
        incident_id: Annotated[str | None, Field(
            title="Incident id", description="Leave empty for a new incident.",
        )] = None,
        severity_hint: Annotated[Severity | None, Field(
            title="Severity hint", description="Initial severity suggested by alert routing.",
        )] = None,
    ) -> RunSummary:
        return respond(incident_type, alert, severity, dry_run, incident_id, severity_hint)

    run.__name__ = incident_type.value
    run.__qualname__ = incident_type.value
    run.__doc__ = f"Respond to a {incident_type.label.lower()} incident (policy §2: {incident_type.value})."
    return flow(
        run,
        name=incident_type.value,
        description=f"{incident_type.label}: playbooks/{incident_type.value}.yaml, run stage by stage.",
        log_prints=True,
        validate_parameters=True,
    )


INCIDENT_FLOWS: dict[IncidentType, Flow] = {t: _incident_flow(t) for t in IncidentType}

unauthorized_access = INCIDENT_FLOWS[IncidentType.unauthorized_access]
account_compromise = INCIDENT_FLOWS[IncidentType.account_compromise]
intrusion_attempt = INCIDENT_FLOWS[IncidentType.intrusion_attempt]
data_leak = INCIDENT_FLOWS[IncidentType.data_leak]
malware = INCIDENT_FLOWS[IncidentType.malware]
service_unavailability = INCIDENT_FLOWS[IncidentType.service_unavailability]
data_alteration = INCIDENT_FLOWS[IncidentType.data_alteration]
cyberattack = INCIDENT_FLOWS[IncidentType.cyberattack]
human_error = INCIDENT_FLOWS[IncidentType.human_error]
technical_failure = INCIDENT_FLOWS[IncidentType.technical_failure]
