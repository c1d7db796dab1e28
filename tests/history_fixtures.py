"""Incidents with known timestamps, saved the way the engine saves them (record + audit + evidence)."""

from __future__ import annotations

from datetime import datetime, timedelta

from irp import audit
from irp.evidence import LocalEvidenceStore
from irp.lifecycle import Decision, decision_entry
from irp.models import (
    ActionItem,
    Incident,
    IncidentStatus,
    IncidentType,
    NotificationRecord,
    PlaybookRef,
    Severity,
    Stage,
    StageOutcome,
    StepStatus,
    TimelineEntry,
)

ORDER = [(Stage.detect, None), (Stage.analyse, None), (Stage.contain, None), (Stage.restore, None),
         (Stage.notify, "initial"), (Stage.review, None), (Stage.notify, "final")]


def build_incident(
    incident_id: str,
    *,
    type: IncidentType = IncidentType.data_leak,
    severity: Severity = Severity.critical,
    detected: datetime,
    aware_after: timedelta = timedelta(minutes=5),
    contained_after: timedelta | None = timedelta(hours=3),
    restored_after: timedelta | None = timedelta(hours=30),
    notified_after: timedelta | None = timedelta(hours=2),
    status: IncidentStatus = IncidentStatus.closed,
    title: str = "Export of call recordings to an unknown host",
    actions: list[ActionItem] | None = None,
    flow_run_ids: list[str] | None = None,
) -> Incident:
    """An incident whose milestones fall at known offsets: contain/restore from detection, notify from awareness."""
    aware = detected + aware_after
    stages: list[StageOutcome] = []
    timeline = [TimelineEntry(at=aware, kind="alert", message=f"generic alert: {title}")]
    cursor = aware
    for stage, phase in ORDER:
        if stage == Stage.contain:
            if contained_after is None:
                break
            end = detected + contained_after
        elif stage == Stage.restore:
            if restored_after is None:
                break
            end = detected + restored_after
        else:
            end = cursor + timedelta(minutes=1)
        end = max(end, cursor)
        stages.append(StageOutcome(stage=stage, phase=phase, status=StepStatus.completed, started_at=cursor,
                                   ended_at=end))
        if stage in (Stage.contain, Stage.restore):  # these stages end when a responder says so (irp/lifecycle.py)
            timeline.append(decision_entry(Decision(decision="advance", id=f"{incident_id}-{stage.value}",
                                                    by="oncall", stage=stage, note=f"{stage.value} done"), end))
        timeline.append(TimelineEntry(at=cursor, kind="stage", stage=stage, message=f"stage {stage.value} started"))
        timeline.append(TimelineEntry(at=end, kind="step", stage=stage, step=f"{stage.value}_step",
                                      message=f"step {stage.value}_step (timeline.record) completed"))
        timeline.append(TimelineEntry(at=end, kind="stage", stage=stage, message=f"stage {stage.value} completed"))
        cursor = end
    notifications = []
    if notified_after is not None:
        timeline.append(TimelineEntry(at=aware + notified_after, kind="notification", stage=Stage.notify,
                                      message="initial client notification sent: Incident de sécurité"))
        notifications.append(NotificationRecord(id=f"N-{incident_id}", at=aware + notified_after, audience="client",
                                                recipient="acme", template="client_notification",
                                                subject="Incident de sécurité", status="sent"))
    return Incident(
        id=incident_id, type=type, severity=severity, status=status, title=title,
        summary="4.2 GB of call recordings sent to 203.0.113.50.", detected_at=detected, aware_at=aware,
        stages=stages, timeline=sorted(timeline, key=lambda e: e.at), actions=actions or [],
        notifications=notifications,
        playbook=PlaybookRef(name=type.value, version="1.2.0", policy_version="2026-05-13",
                             path=f"playbooks/{type.value}.yaml", sha256="ab" * 32),
        flow_run_ids=flow_run_ids or [],
    )


def save(store: LocalEvidenceStore, incident: Incident) -> Incident:
    """Archive an alert and save the record through the audited writer, as the engine does."""
    records = audit.AuditedRecord(store, actor="flow run test")
    store.put_json(incident.id, "alerts/alert.json", {"title": incident.title}, source_system="generic")
    opened = incident.model_copy(update={"status": IncidentStatus.detected, "stages": [], "actions": []})
    records.save(opened)
    records.save(incident)
    return incident
