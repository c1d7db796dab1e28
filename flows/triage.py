"""Triage: an alert no route matches but whose source marks it severe (policy §4, §14), started by the intake.

The run archives the alert, tells the internal recipients at once, then waits on its Resume form for a
responder to choose the incident type (irp/triage.py: TriageDecision); it then starts that type's
deployment (`<type>/respond`) on the same incident id, as the run's child, so one incident holds the alert,
the message, the decision and the response. Nobody choosing within IRP_TRIAGE_TIMEOUT_HOURS is escalated
to the internal recipients; the alert stays listed as unrouted.
"""

from __future__ import annotations

import json

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.runtime import flow_run
from prefect.states import Running

from irp.deployments import respond_deployment
from irp.evidence import open_store
from irp.models import Alert, IncidentType, Severity
from irp.settings import get_settings
from irp.triage import NOT_AN_INCIDENT, TriageDecision, escalate_timeout, open_triage, record_decision

__all__ = ["triage"]


def _form(alert: Alert, incident_id: str, severity: Severity | None) -> str:
    """The markdown the Resume form shows: the alert as received (data, in a code block)."""
    labels = json.dumps(alert.labels, indent=2, ensure_ascii=False)
    return "\n".join([
        f"## Triage of {incident_id}: which kind of incident is it?",
        "",
        f"No route of routing.yaml matched this {alert.source.value} alert; its source says "
        f"**{severity.value if severity else 'severe'}**. Choose the incident type (policy §2): its playbook runs "
        "on this incident. not_an_incident closes the triage.",
        "",
        "```text",
        alert.title.replace("`", "'"),
        "```",
        "",
        "**Labels**",
        "",
        "```json",
        labels.replace("`", "'"),
        "```",
    ])


@flow(name="triage", log_prints=True,
      description="An unrouted alert its source marks severe: tell the internal recipients, let a responder choose "
                  "the incident type, run its playbook.")
def triage(alert: Alert, incident_id: str, severity_hint: Severity | None = None) -> dict:
    """Open a triage incident, wait for a responder to choose its type on the Resume form, start that type's run.

    Args:
        alert: The alert no route matched.
        incident_id: The incident id the intake gave it; the chosen type's run continues this incident.
        severity_hint: The severity its source gave (§5 word, after the vocabulary).
    """
    logger = get_run_logger()
    settings = get_settings()
    store = open_store(settings.evidence_url)
    opened = open_triage(store, settings, alert, incident_id, severity_hint, str(flow_run.id or ""))
    logger.info("triage %s: internal recipients told (%s)", incident_id, opened.notification.status)
    try:
        decision = pause_flow_run(
            wait_for_input=TriageDecision.with_initial_data(description=_form(alert, incident_id, severity_hint)),
            timeout=int(settings.triage_timeout_hours * 3600), poll_interval=5, key="triage")
    except FlowPauseTimeout:
        with get_client(sync_client=True) as client:  # the server still says Paused: back to Running to end
            client.set_flow_run_state(flow_run.id, Running(), force=True)
        record_decision(store, incident_id, None)
        escalate_timeout(store, settings, incident_id, settings.triage_timeout_hours)
        logger.warning("triage %s: nobody chose a type in %s h; escalated", incident_id, settings.triage_timeout_hours)
        return {"incident_id": incident_id, "incident_type": None, "flow_run_id": None}
    if decision.incident_type == NOT_AN_INCIDENT:
        record_decision(store, incident_id, decision)
        logger.info("triage %s: not an incident (%s: %s)", incident_id, decision.responder, decision.reason)
        return {"incident_id": incident_id, "incident_type": NOT_AN_INCIDENT, "flow_run_id": None}
    incident_type = IncidentType(decision.incident_type)
    parameters = {"alert": alert.model_dump(mode="json"), "incident_id": incident_id,
                  "severity_hint": severity_hint.value if severity_hint else None}
    if decision.severity is not None:
        parameters["severity"] = decision.severity.value
    started = run_deployment(respond_deployment(incident_type), parameters=parameters, timeout=0,
                             idempotency_key=f"triage:{incident_id}", flow_run_name=f"{incident_id} {incident_type}",
                             tags=["irp-triage", f"triaged-by:{decision.responder[:50]}"])
    record_decision(store, incident_id, decision, str(started.id))
    logger.info("triage %s: %s chosen by %s; run %s started", incident_id, incident_type, decision.responder,
                started.id)
    return {"incident_id": incident_id, "incident_type": incident_type.value, "flow_run_id": str(started.id)}
