"""Declaring an incident by hand (policy §8: a Client or an employee reports a suspected incident).

The Prefect UI builds the run form from this flow's signature: the report is one typed model with
titled fields, descriptions, dropdowns for the type, the severity and the data categories, in the
order a responder fills them. The report becomes an Alert (source "report") and runs the type's
own flow as a subflow, exactly as an alert would. The declaration itself (who reported what) is
the first entry of the incident's audit log (irp/audit.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from prefect import flow
from prefect.deployments import run_deployment
from prefect.runtime import deployment, flow_run
from pydantic import BaseModel, ConfigDict, Field

from flows.incidents import INCIDENT_FLOWS
from irp import audit
from irp.deployments import respond_deployment
from irp.engine.respond import RunSummary
from irp.evidence import open_store
from irp.models import (
    Alert,
    AlertSource,
    ClientOrigin,
    DataCategory,
    IncidentStatus,
    IncidentType,
    Severity,
    new_incident_id,
    utcnow,
)
from irp.settings import get_settings

__all__ = ["IncidentReport", "declare_incident"]


def _field(position: int, title: str, description: str, **kwargs: Any) -> Any:
    return Field(title=title, description=description, json_schema_extra={"position": position}, **kwargs)


class IncidentReport(BaseModel):
    """A suspected incident, as a Client, an employee or a third party reports it."""

    model_config = ConfigDict(extra="forbid", title="Incident report")

    incident_type: IncidentType = _field(0, "Incident type", "Policy §2: what kind of incident.")
    title: str = _field(1, "Title", "One line: what happened.", min_length=3, max_length=200)
    reporter: str = _field(2, "Reported by", "Name and organisation of the person reporting.",
                           min_length=1, max_length=200)
    reporter_role: Literal["client", "employee", "third_party"] = _field(
        3, "Reporter is", "A Client (§8), an employee, or a third-party provider (§9).", default="client")
    description: str = _field(4, "Description", "What was seen, when, where; links to tickets.",
                              default="", max_length=20_000)
    severity: Severity | None = _field(
        5, "Severity", "Leave empty to let the playbook classify it (§5); set it to override.", default=None)
    affected_clients: list[str] = _field(6, "Affected Clients", "Client (tenant) ids, if known.",
                                         default_factory=list)
    affected_systems: list[str] = _field(7, "Affected systems", "Services or hosts, if known.",
                                         default_factory=list)
    data_categories: list[DataCategory] = _field(
        8, "Personal data categories", "Categories of personal data possibly concerned (§7).",
        default_factory=list)
    approx_people: int | None = _field(9, "People concerned (approx.)", "Leave empty if unknown.",
                                       default=None, ge=0)
    approx_records: int | None = _field(10, "Records concerned (approx.)", "Leave empty if unknown.",
                                        default=None, ge=0)
    observed_at: datetime | None = _field(11, "Observed at", "When it was noticed; empty means now.",
                                          default=None)

    def to_alert(self) -> Alert:
        """The Alert this report stands for, with the label names the playbooks read."""
        labels = {
            "tenant": ",".join(self.affected_clients),
            "service": ",".join(self.affected_systems),
            "data_categories": ",".join(c.value for c in self.data_categories),
            "people_affected": "" if self.approx_people is None else str(self.approx_people),
            "records_affected": "" if self.approx_records is None else str(self.approx_records),
            "reporter": self.reporter,
            "reporter_role": self.reporter_role,
        }
        return Alert(
            source=AlertSource.report,
            title=self.title,
            description=self.description,
            labels={key: value for key, value in labels.items() if value},
            observed_at=self.observed_at or utcnow(),
            raw=self.model_dump(mode="json"),
        )


@flow(name="declare_incident", log_prints=True,
      description="Declare an incident reported by a Client, an employee or a third party (§8, §9).")
def declare_incident(report: IncidentReport, dry_run: bool = False) -> RunSummary:
    """Declare an incident by hand and start its response, as an alert would.

    Deployed (the stack), the response is its type's own deployment run, which waits for people in
    Prefect; called in-process, it runs as a subflow (which ends where it waits for people).

    Args:
        report: What is reported: the type, what happened, who reports it, what is affected.
        dry_run: Run every step without side effects (training).
    """
    incident_id = new_incident_id()
    if not dry_run:
        details = {"reporter_role": report.reporter_role, "type": report.incident_type.value, "title": report.title,
                   "severity": report.severity.value if report.severity else None,
                   "flow_run_id": str(flow_run.id or "")}
        audit.record(open_store(get_settings().evidence_url), incident_id, "declared", actor=report.reporter,
                     strict=False, details=details)
    # A responder declares: the Clients named here are confirmed (§7 letters may go to them).
    clients = [ClientOrigin.of(client, "responder", by=f"declared (reported by {report.reporter})")
               for client in dict.fromkeys(c.strip() for c in report.affected_clients) if client]
    alert = report.to_alert()
    if deployment.id and not dry_run:
        started = run_deployment(respond_deployment(report.incident_type), timeout=0, as_subflow=False, parameters={
            "alert": alert.model_dump(mode="json"), "severity": report.severity, "incident_id": incident_id,
            "clients": [c.model_dump(mode="json") for c in clients]})
        print(f"incident {incident_id}: response started as flow run {started.id}")
        return RunSummary(incident_id=incident_id, type=report.incident_type,
                          severity=report.severity, status=IncidentStatus.detected, stages=[],
                          evidence_location=open_store(get_settings().evidence_url).location(incident_id),
                          flow_run_id=str(started.id), waiting_text="response started: see its flow run")
    return INCIDENT_FLOWS[report.incident_type](alert=alert, severity=report.severity, dry_run=dry_run,
                                                incident_id=incident_id, clients=clients)
