"""The body of every incident flow: one incident, its playbook, the six stage tasks in the policy's order.

detect → analyse → (notify initial ∥ contain → restore) → review → notify final.
The playbook is read when the run starts, so an edited playbook applies to the next run. The stage
tasks (tasks/) are given by the flow (flows/incidents.py) as a StageTasks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from prefect import Task, get_run_logger
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote
from pydantic import BaseModel, Field

from irp import audit
from irp.engine.records import RunContext, StageResult
from irp.errors import IrpError
from irp.evidence import EvidenceStore, open_store, remove_tree, temporary_store
from irp.models import (
    UNCLASSIFIED_SEVERITY,
    Alert,
    ClientOrigin,
    Incident,
    IncidentStatus,
    IncidentType,
    Severity,
    StageOutcome,
    TimelineEntry,
    new_incident_id,
)
from irp.playbook.loader import LoadedPlaybook, load_playbook_for_run
from irp.playbook.models import playbook_path
from irp.settings import get_settings

__all__ = ["RunStopped", "RunSummary", "StageTasks", "check_playbooks", "respond"]


class RunStopped(IrpError):
    """Raised at the end of a run that a failed step with on_failure: stop ended early."""


class RunSummary(BaseModel):
    """What a run did, for the CLI and the flow run's result."""

    incident_id: str
    type: IncidentType
    severity: Severity
    status: IncidentStatus
    stages: list[StageOutcome]
    stopped_by: str | None = None
    escalated: bool = False
    evidence_location: str
    evidence: list[str] = Field(default_factory=list)
    dry_run: bool = False
    flow_run_id: str = ""


@dataclass(frozen=True)
class StageTasks:
    """The six stage tasks (tasks/), each `(incident, run, **kwargs) -> StageResult`; notify takes `phase`."""

    detect: Task
    analyse: Task
    contain: Task
    restore: Task
    notify: Task
    review: Task


_STATUS_OF = {
    "detect": IncidentStatus.detected,
    "analyse": IncidentStatus.analysing,
    "contain": IncidentStatus.containing,
    "restore": IncidentStatus.restoring,
    "review": IncidentStatus.reviewing,
}


def _label_run(incident: Incident) -> None:
    """Name the flow run after the incident and tag it with id, type and severity."""
    run_id = flow_run.id
    if not run_id:
        return
    run_tags = [f"incident:{incident.id}", f"type:{incident.type.value}", f"severity:{incident.severity.value}"]
    if incident.dry_run:
        run_tags.append("dry-run")
    existing = [t for t in (flow_run.tags or []) if not t.startswith(("incident:", "type:", "severity:"))]
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(run_id, name=f"{incident.id} {incident.type.value}", tags=[*existing, *run_tags])
    except Exception as exc:  # labels are a convenience; never fail a response over them
        get_run_logger().warning("could not label the flow run: %s", exc)


@contextmanager
def _one_run_per_incident(incident_id: str) -> Iterator[None]:
    """Hold the incident's concurrency limit (1 slot) so two runs of one incident never overlap."""
    if not flow_run.id:
        yield
        return
    name = f"incident-{incident_id.lower()}"
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name, 1)
    with concurrency(name, occupy=1, strict=True):
        yield


def check_playbooks() -> list[str]:
    """Load and check every incident type's playbook now, so the first run of each finds it checked.

    For long-lived workers; returns the problems found (each run still reports its own).
    """
    problems = []
    for incident_type in IncidentType:
        try:
            load_playbook_for_run(playbook_path(get_settings().playbooks_dir, incident_type))
        except IrpError as exc:
            problems.append(str(exc))
    return problems


def respond(
    incident_type: IncidentType,
    alert: Alert,
    severity: Severity | None = None,
    dry_run: bool = False,
    incident_id: str | None = None,
    severity_hint: Severity | None = None,
    clients: list[ClientOrigin] | None = None,
    *,
    stages: StageTasks,
) -> RunSummary:
    """Run the playbook of `incident_type` on `alert`: the body of every incident flow.

    `clients`: the Clients a trusted source names (a route of routing.yaml, a responder's declaration);
    the Clients the alert's own data names are recorded as unconfirmed by the playbook's steps.
    """
    settings = get_settings()
    loaded = load_playbook_for_run(playbook_path(settings.playbooks_dir, incident_type))
    if dry_run:
        store, dry_folder = temporary_store()
    else:
        store, dry_folder = open_store(settings.evidence_url), None
    incident = _new_incident(incident_type, alert, loaded, severity, severity_hint, incident_id, clients, dry_run)
    get_run_logger().info("incident %s (%s): playbook %s v%s sha256 %s", incident.id, incident_type.value,
                          loaded.playbook.name, loaded.playbook.version, loaded.ref.sha256)
    try:
        _archive_inputs(store, incident, alert, loaded)
        # Every save of the record is audited (state changes, irp/audit.py), as this flow run.
        records = audit.AuditedRecord(store, actor=f"flow run {flow_run.id}" if flow_run.id else "irp engine")
        records.save(incident)
        run = RunContext(alert=alert, playbook=loaded.playbook, evidence_url=store.url, dry_run=dry_run)
        with _one_run_per_incident(incident.id):
            incident, stopped_by = _run_stages(stages, incident, run, records)
        store.put_json(incident.id, "incident.json", incident.model_dump(mode="json"), source_system="irp")
        records.save(incident)
        summary = _summary(incident, store, stopped_by, dry_run)
    finally:
        if dry_folder:
            remove_tree(dry_folder)
    if stopped_by:
        raise RunStopped(f"incident {incident.id}: step {stopped_by} failed and stopped the run; "
                         f"evidence in {summary.evidence_location}")
    return summary


def _new_incident(incident_type: IncidentType, alert: Alert, loaded: LoadedPlaybook, severity: Severity | None,
                  severity_hint: Severity | None, incident_id: str | None, clients: list[ClientOrigin] | None,
                  dry_run: bool) -> Incident:
    """The incident a run opens (or continues, given `incident_id`), before any stage ran."""
    return Incident(
        id=incident_id or new_incident_id(),
        type=incident_type,
        severity=severity or severity_hint or loaded.playbook.classification.default,
        severity_source="operator" if severity else "hint" if severity_hint else "default",
        severity_reason="set by the operator" if severity else "",
        title=alert.title,
        summary=alert.description,
        detected_at=alert.observed_at,
        reporter=alert.labels.get("reporter", alert.source.value),
        affected_clients=list(dict.fromkeys(c.client for c in clients or [])),
        client_origins=list(clients or []),
        alerts=[alert.fingerprint],
        playbook=loaded.ref,
        flow_run_ids=[str(flow_run.id)] if flow_run.id else [],
        dry_run=dry_run,
        timeline=[TimelineEntry(kind="alert", message=f"{alert.source.value} alert: {alert.title}",
                                data={"fingerprint": alert.fingerprint}), *_unclassified(alert)],
    )


def _unclassified(alert: Alert) -> list[TimelineEntry]:
    """A finding for the analyst when the source's severity word is not one of §5's (routing kept it as a label)."""
    word = alert.labels.get(UNCLASSIFIED_SEVERITY)
    if not word:
        return []
    return [TimelineEntry(kind="finding", data={UNCLASSIFIED_SEVERITY: word},
                          message=f"the source's severity {word[:100]!r} is not in the vocabulary (minor, major, "
                                  "critical or a synonym in IRP_VOCABULARY_SYNONYMS): the playbook's classification "
                                  "decides; an analyst should check it")]


def _archive_inputs(store: EvidenceStore, incident: Incident, alert: Alert, loaded: LoadedPlaybook) -> None:
    """Archive what the run starts from: the alert as received and the playbook's exact bytes."""
    store.put(incident.id, f"alerts/{alert.fingerprint}.json",
              json.dumps(alert.raw if alert.raw is not None else alert.model_dump(mode="json"),
                         indent=2, ensure_ascii=False, default=str).encode(),
              content_type="application/json", source_system=alert.source.value,
              source_time=alert.observed_at.isoformat())
    store.put(incident.id, f"playbook/{Path(loaded.ref.path).name}", loaded.source,
              content_type="application/yaml", source_system="irp")


def _summary(incident: Incident, store: EvidenceStore, stopped_by: str | None, dry_run: bool) -> RunSummary:
    """What the run did, from the incident at its end and the evidence archived."""
    return RunSummary(
        incident_id=incident.id,
        type=incident.type,
        severity=incident.severity,
        status=incident.status,
        stages=incident.stages,
        stopped_by=stopped_by,
        escalated=incident.escalated,
        evidence_location="(dry run: nothing archived)" if dry_run else store.location(incident.id),
        evidence=[item.name for item in store.manifest(incident.id)],
        dry_run=dry_run,
        flow_run_id=str(flow_run.id or ""),
    )


def _run_stages(stages: StageTasks, incident: Incident, run: RunContext,
                records: audit.AuditedRecord) -> tuple[Incident, str | None]:
    """The stages in the policy's order; a stop ends the main line but what ran is kept."""

    def step_into(stage_task: Task, incident: Incident, **kwargs: str) -> tuple[Incident, StageResult]:
        status = _STATUS_OF.get(stage_task.name)
        if status:
            incident = incident.model_copy(update={"status": status})
        result: StageResult = stage_task(quote(incident), quote(run), **kwargs)
        run.steps.update({record.id: record for record in result.steps})
        incident = result.apply(incident)
        records.save(incident)
        return incident, result

    # Task runs carry no tags: tag-based concurrency checks would cost a server call per step.
    try:
        for stage_task in (stages.detect, stages.analyse):
            incident, result = step_into(stage_task, incident)
            if result.stopped_by:
                return _stop(incident, result.stopped_by), result.stopped_by
    finally:  # named and tagged once, with the severity analyse decided; not on the way to the first stage
        _label_run(incident)
    initial = stages.notify.submit(quote(incident), quote(run), phase="initial")
    stopped_by = None
    for stage_task in (stages.contain, stages.restore):
        incident, result = step_into(stage_task, incident)
        if result.stopped_by:
            stopped_by = result.stopped_by
            break
    notified: StageResult = initial.result()
    run.steps.update({record.id: record for record in notified.steps})
    incident = notified.apply(incident)
    stopped_by = stopped_by or notified.stopped_by
    if stopped_by:
        return _stop(incident, stopped_by), stopped_by
    incident, result = step_into(stages.review, incident)
    if result.stopped_by:
        return _stop(incident, result.stopped_by), result.stopped_by
    incident, result = step_into(stages.notify, incident, phase="final")
    if result.stopped_by:
        return _stop(incident, result.stopped_by), result.stopped_by
    return incident.model_copy(update={"status": IncidentStatus.closed}), None


def _stop(incident: Incident, step_id: str) -> Incident:
    entry = TimelineEntry(kind="stop", message=f"run stopped: step {step_id} failed (on_failure: stop)")
    return incident.model_copy(update={"status": IncidentStatus.stopped, "timeline": [*incident.timeline, entry]})
