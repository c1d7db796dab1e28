"""One Prefect flow per incident type of policy §2, each named after its type.

Every flow is the same engine run (irp/engine/respond.py) with the six stage tasks (tasks/) on a
different playbook (playbooks/<type>.yaml), so the flows are made by one factory; prefect.yaml
deploys each by its name, e.g. flows/incidents.py:data_leak, as `<type>/respond`. The intake starts
them with the parameters irp/deployments.py names (the contract; tests/unit/test_deployments.py
checks both sides).
"""

from __future__ import annotations

from prefect import Flow, flow

from irp.engine.respond import RunSummary, StageTasks, respond
from irp.engine.script import Script
from irp.models import Alert, ClientOrigin, IncidentType, Severity
from tasks.analyse import analyse
from tasks.contain import contain
from tasks.detect import detect
from tasks.notify import notify
from tasks.restore import restore
from tasks.review import review

__all__ = ["INCIDENT_FLOWS", *[t.value for t in IncidentType]]


_DOC = """Respond to a {label} incident (policy §2: {type}).

Args:
    alert: The alert or report that opened the incident.
    severity: Leave empty to let the playbook classify (§5); set it to override.
    dry_run: Run every step without side effects, recording what each would have done.
    incident_id: Leave empty for a new incident; set it to continue an existing one where it waits.
    severity_hint: Initial severity suggested by alert routing; the playbook's rules decide.
    clients: Clients a trusted source names: the route that matched the alert, or a responder
        (§7 letters go only to confirmed Clients; those the alert itself names wait for a responder).
    decisions: Scripted human decisions at simulated times (tests, demos, exercises); leave empty
        for a real response, whose stages wait for people in the Resume form of this run.
"""

STAGE_TASKS = StageTasks(detect=detect, analyse=analyse, contain=contain, restore=restore, notify=notify, review=review)


def _incident_flow(incident_type: IncidentType) -> Flow:
    def run(
        alert: Alert,
        severity: Severity | None = None,
        dry_run: bool = False,
        incident_id: str | None = None,
        severity_hint: Severity | None = None,
        clients: list[ClientOrigin] | None = None,
        decisions: Script | None = None,
    ) -> RunSummary:
        return respond(incident_type, alert, severity, dry_run, incident_id, severity_hint, clients, decisions,
                       stages=STAGE_TASKS)

    run.__name__ = incident_type.value
    run.__qualname__ = incident_type.value
    run.__doc__ = _DOC.format(label=incident_type.label.lower(), type=incident_type.value)
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
