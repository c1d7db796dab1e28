"""The body of every incident flow: one incident, its playbook, the six stage tasks in the policy's order.

detect → analyse → (notify initial ∥ contain → restore) → review → notify final.
The playbook is read when the run starts, so an edited playbook applies to the next run. The stage
tasks (tasks/) are given by the flow (flows/incidents.py) as a StageTasks.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from prefect import Task
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.runtime import deployment, flow_run
from prefect.settings import PREFECT_API_URL
from prefect.utilities.annotations import quote
from pydantic import BaseModel, Field

from irp import audit, lifecycle
from irp.actions.base import run_logger as get_run_logger
from irp.actions.registry import ActionContext
from irp.engine import admission
from irp.engine.records import RunContext, StageResult, StepRecord
from irp.engine.script import Script
from irp.engine.waits import Offline, Scripted, Suspend, Waiter, WaitingForPeople
from irp.errors import EvidenceError, IrpError
from irp.evidence import EvidenceStore, anchors, open_store, remove_tree, temporary_store
from irp.models import (
    UNCLASSIFIED_SEVERITY,
    Alert,
    ClientOrigin,
    Closure,
    Incident,
    IncidentStatus,
    IncidentType,
    Severity,
    Stage,
    StageOutcome,
    TimelineEntry,
    Waiting,
    new_incident_id,
    utcnow,
)
from irp.notifications.obligations import deadlines
from irp.playbook.loader import LoadedPlaybook, load_playbook, load_playbook_for_run
from irp.playbook.models import playbook_path
from irp.settings import get_settings

__all__ = ["RunStopped", "RunSummary", "StageTasks", "check_playbooks", "respond"]


class RunStopped(IrpError):
    """Raised at the end of a run that a failed step with on_failure: stop ended early."""


class RunSummary(BaseModel):
    """What a run did, for the CLI and the flow run's result."""

    incident_id: str
    type: IncidentType
    severity: Severity | None = Field(..., description="None only before the playbook classified it.")
    status: IncidentStatus
    stages: list[StageOutcome]
    stopped_by: str | None = None
    escalated: bool = False
    evidence_location: str
    evidence: list[str] = Field(default_factory=list)
    dry_run: bool = False
    flow_run_id: str = ""
    waiting: Waiting | None = Field(None, description="What the incident waits for when the run ended before it.")
    waiting_text: str = Field("", description="The same, in words (irp/lifecycle.py).")


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


def _label_run(incident: Incident, waiting: Stage | None = None) -> None:
    """Name the flow run after the incident (and the stage it waits at) and tag it with id, type and severity."""
    run_id = flow_run.id
    if not run_id:
        return
    run_tags = [f"incident:{incident.id}", f"type:{incident.type.value}", f"severity:{incident.severity.value}"]
    if incident.dry_run:
        run_tags.append("dry-run")
    if waiting:
        run_tags.append(f"waits:{waiting.value}")
    existing = [t for t in (flow_run.tags or []) if not t.startswith(("incident:", "type:", "severity:", "waits:"))]
    name = f"{incident.id} {incident.type.value}" + (f" — waits at {waiting.value}" if waiting else "")
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(run_id, name=name, tags=[*existing, *run_tags])
    except Exception as exc:  # labels are a convenience; never fail a response over them
        get_run_logger().warning("could not label the flow run: %s", exc)


@contextmanager
def _one_run_per_incident(store: EvidenceStore, incident_id: str) -> Iterator[None]:
    """Two runs of one incident never overlap: the evidence store's lock when it has one that every worker shares
    (a local folder: no server round trip), else the incident's Prefect concurrency limit (1 slot)."""
    if not flow_run.id:
        yield
        return
    held = store.run_lock(incident_id, on_wait=lambda: get_run_logger().info(
        "incident %s: another run responds to it; this one waits for it to end or to wait for people", incident_id))
    if held is not None:
        with held:
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
    decisions: Script | None = None,
    *,
    stages: StageTasks,
) -> RunSummary:
    """Run the playbook of `incident_type` on `alert`, or continue the incident `incident_id` where it waits.

    `clients`: the Clients a trusted source names (a route of routing.yaml, a responder's declaration);
    the Clients the alert's own data names are recorded as unconfirmed by the playbook's steps.
    `decisions`: scripted human decisions (irp/engine/script.py); without them a deployment's run
    suspends while it waits for people, any other run ends with the incident open (irp/engine/waits.py).
    """
    settings = get_settings()
    if dry_run:
        store, dry_folder = temporary_store()
    else:
        store, dry_folder = open_store(settings.evidence_url), None
    try:
        admission.arrived()
        with admission.admitted(admission.RANKS[Stage.detect]):  # opening an incident goes first, as detect
            incident, loaded, records = _open(store, incident_type, alert, severity, severity_hint, incident_id,
                                              clients, dry_run)
            waiter = _waiter(dry_run, decisions, incident)
            run = RunContext(alert=alert, playbook=loaded.playbook, evidence_url=store.url, dry_run=dry_run,
                             steps=_recorded_steps(store, incident), approvals=_approvals(),
                             script=decisions, script_start=incident.aware_at)
        with _one_run_per_incident(store, incident.id):
            incident, stopped_by = _run_line(stages, incident, run, records, store, waiter)
        if stopped_by:
            records.save(incident)
        store.put_json(incident.id, "incident.json", incident.model_dump(mode="json"), source_system="irp")
        summary = _summary(incident, store, stopped_by, dry_run)
    finally:
        if dry_folder:
            remove_tree(dry_folder)
    if stopped_by:
        raise RunStopped(f"incident {incident.id}: step {stopped_by} failed and stopped the run; "
                         f"evidence in {summary.evidence_location}")
    return summary


def _open(store: EvidenceStore, incident_type: IncidentType, alert: Alert, severity: Severity | None,
          severity_hint: Severity | None, incident_id: str | None, clients: list[ClientOrigin] | None,
          dry_run: bool) -> tuple[Incident, LoadedPlaybook, audit.AuditedRecord]:
    """The incident this run opens (its inputs archived), or the one it continues; its playbook; its record."""
    incident_id = incident_id or _run_incident_id()
    existing = _existing(store, incident_id)
    if existing is not None and existing.type != incident_type:
        raise IrpError(f"incident {incident_id} is a {existing.type.value} incident, not {incident_type.value}: "
                       f"continue it with the {existing.type.value} flow")
    loaded = (_started_playbook(store, existing) if existing else None) or \
        load_playbook_for_run(playbook_path(get_settings().playbooks_dir, incident_type))
    records = audit.AuditedRecord(store, actor=f"flow run {flow_run.id}" if flow_run.id else "irp engine")
    if existing is None:
        incident = _new_incident(incident_type, alert, loaded, severity, severity_hint, incident_id, clients, dry_run)
        _archive_inputs(store, incident, alert, loaded)
        records.save(incident)
    else:
        incident = existing
        records.last = existing
        if flow_run.id and str(flow_run.id) not in incident.flow_run_ids:
            incident = incident.model_copy(update={"flow_run_ids": [*incident.flow_run_ids, str(flow_run.id)]})
            records.save(incident)
    get_run_logger().info("incident %s (%s): playbook %s v%s sha256 %s%s", incident.id, incident_type.value,
                          loaded.playbook.name, loaded.playbook.version, loaded.ref.sha256,
                          " (continued)" if existing else "")
    return incident, loaded, records


def _run_incident_id() -> str:
    """The id of the incident a run opens without one: derived from the flow run, so a resumed run finds it."""
    if not flow_run.id:
        return new_incident_id()
    started = flow_run.scheduled_start_time or utcnow()
    return f"INC-{started:%Y%m%d}-{hashlib.sha256(str(flow_run.id).encode()).hexdigest()[:6].upper()}"


def _existing(store: EvidenceStore, incident_id: str) -> Incident | None:
    """The incident's record when a run already opened it (this run before a suspend, or an earlier one)."""
    if incident_id not in store.incident_ids():
        return None
    try:
        return store.load_incident(incident_id)
    except EvidenceError:
        return None


def _started_playbook(store: EvidenceStore, incident: Incident) -> LoadedPlaybook | None:
    """The playbook the incident started with (its archived bytes), so a continued response keeps its plan."""
    if incident.playbook is None:
        return None
    name = f"playbook/{Path(incident.playbook.path).name}"
    current = Path(incident.playbook.path)
    try:
        if current.is_file() and hashlib.sha256(current.read_bytes()).hexdigest() == incident.playbook.sha256:
            return load_playbook_for_run(current)
        with store.open(incident.id, name) as handle:
            data = handle.read()
        with tempfile.TemporaryDirectory() as folder:
            copy = Path(folder) / current.name
            copy.write_bytes(data)
            loaded = load_playbook(copy)
        return LoadedPlaybook(loaded.playbook, incident.playbook, data)
    except (OSError, IrpError) as exc:
        get_run_logger().warning("incident %s: its archived playbook cannot be read (%s); the current one applies",
                                 incident.id, exc)
        return None


def _recorded_steps(store: EvidenceStore, incident: Incident) -> dict[str, StepRecord]:
    """The step records of the stages already run, for templates that read `steps.ID` after a resume."""
    found: dict[str, StepRecord] = {}
    if not incident.stages:
        return found
    for item in store.manifest(incident.id):
        if not item.name.startswith("steps/"):
            continue
        try:
            with store.open(incident.id, item.name) as handle:
                record = StepRecord.model_validate_json(handle.read())
        except Exception:  # noqa: BLE001 (a record that cannot be read is reported by `irp evidence verify`)
            continue
        found[record.id] = record
    return found


def _approvals() -> str:
    """Approvals are asked in the Prefect UI when there is a server to ask them on."""
    return "pause" if PREFECT_API_URL.value() else "none"


def _waiter(dry_run: bool, script: Script | None, incident: Incident) -> Waiter | None:
    """How this run waits for people (irp/engine/waits.py); None for a dry run, which never waits."""
    if dry_run:
        return None
    if script is not None:
        return Scripted(script, incident.aware_at)
    if flow_run.id and deployment.id:
        return Suspend()
    return Offline()


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
    store.put_json(incident.id, "run/alert.json", alert.model_dump(mode="json", exclude={"raw"}), source_system="irp")


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
        waiting=incident.waiting,
        waiting_text=lifecycle.waiting_text(incident),
    )


def _run_line(stages: StageTasks, incident: Incident, run: RunContext, records: audit.AuditedRecord,
              store: EvidenceStore, waiter: Waiter | None) -> tuple[Incident, str | None]:
    """The policy's order, each stage's automatic part once, then its wait for people (§6, §11).

    detect → analyse → (notify initial ∥ contain) → wait contain → restore → wait restore → review →
    wait review → notify final → wait notifications → closed. A stop ends the line; what ran is kept.
    """

    def automatic(stage_task: Task, stage: Stage, phase: str | None = None) -> str | None:
        nonlocal incident
        if incident.automatic_done(stage, phase):
            return None
        status = _STATUS_OF.get(stage)
        if status:
            incident = incident.model_copy(update={"status": status})
        kwargs = {"phase": phase} if phase else {}
        with admission.admitted(admission.RANKS[stage]):  # in a burst, earlier stages go first
            result: StageResult = stage_task(quote(incident), quote(run), **kwargs)
            incident = _apply(result, incident, run)
            records.save(incident)
            anchors.checkpoint_quietly(store, incident.id)  # its chain head, outside the store; never raises
        return result.stopped_by

    def wait(stage: Stage) -> bool:
        """Until `stage`'s needs are met; False when the incident was closed as a false positive meanwhile."""
        nonlocal incident
        incident, going_on = _wait_for_people(stage, incident, records, store, waiter)
        return going_on

    try:
        try:
            for stage_task, stage in ((stages.detect, Stage.detect), (stages.analyse, Stage.analyse)):
                stopped_by = automatic(stage_task, stage)
                if stopped_by:
                    return _stop(incident, stopped_by), stopped_by
        finally:  # named and tagged once, with the severity analyse decided; not on the way to the first stage
            _label_run(incident)
        if not wait(Stage.detect):  # a false positive declared while the run was away
            return _ended(incident, records), None
        initial = None
        if not incident.automatic_done(Stage.notify, "initial"):
            initial = stages.notify.submit(quote(incident), quote(run), phase="initial")
        stopped_by = automatic(stages.contain, Stage.contain)
        if initial is not None:
            notified: StageResult = initial.result()
            incident = _apply(notified, incident, run)
            records.save(incident)
            stopped_by = stopped_by or notified.stopped_by
        if stopped_by:
            return _stop(incident, stopped_by), stopped_by
        for stage_task, stage in ((None, Stage.contain), (stages.restore, Stage.restore), (stages.review, Stage.review)):
            if stage_task is not None:
                stopped_by = automatic(stage_task, stage)
                if stopped_by:
                    return _stop(incident, stopped_by), stopped_by
            if not wait(stage):
                return _ended(incident, records), None
        if incident.review and not incident.automatic_done(Stage.notify, "final") and not run.dry_run:
            incident = _final_review_report(store, incident, run)
            records.save(incident)
        stopped_by = automatic(stages.notify, Stage.notify, "final")
        if stopped_by:
            return _stop(incident, stopped_by), stopped_by
        if not wait(Stage.notify):
            return _ended(incident, records), None
        return _close(incident, records, waiter), None
    except _Waiting as waiting:
        return waiting.incident, None


def _wait_for_people(stage: Stage, incident: Incident, records: audit.AuditedRecord, store: EvidenceStore,
                     waiter: Waiter | None) -> tuple[Incident, bool]:
    """Wait until `stage`'s needs are met; the incident then, and False when it was closed as a false positive."""
    n = 0
    while True:
        incident = _reload(store, incident)
        if incident.status == IncidentStatus.false_positive:
            return incident, False
        missing = _needs(incident, stage, waiter)
        if not missing or waiter is None:
            break
        waiting = Waiting(stage=stage, needs=missing, flow_run_id=str(flow_run.id or ""), mode=waiter.mode,
                          since=incident.waiting.since if incident.waiting and incident.waiting.stage == stage
                          else waiter.now())
        incident = incident.model_copy(update={"status": _WAIT_STATUS[stage], "waiting": waiting})
        records.save(incident)
        _label_run(incident, waiting=stage)
        try:
            waiter.wait(store, incident, stage, missing, n)
        except WaitingForPeople:
            raise _Waiting(incident) from None
        n += 1
    if incident.waiting is not None:
        incident = incident.model_copy(update={"waiting": None})
        records.save(incident)
    return incident, True


class _Waiting(Exception):  # noqa: N818 (control flow: the run ends while the incident waits)
    def __init__(self, incident: Incident) -> None:
        super().__init__(incident.id)
        self.incident = incident


_WAIT_STATUS = {Stage.detect: IncidentStatus.analysing, Stage.analyse: IncidentStatus.analysing,
                Stage.contain: IncidentStatus.containing, Stage.restore: IncidentStatus.restoring,
                Stage.review: IncidentStatus.reviewing, Stage.notify: IncidentStatus.notifying}


def _apply(result: StageResult, incident: Incident, run: RunContext) -> Incident:
    run.steps.update({record.id: record for record in result.steps})
    return result.apply(incident)


def _reload(store: EvidenceStore, incident: Incident) -> Incident:
    """The record as stored, with every decision taken meanwhile (irp/lifecycle.py)."""
    try:
        return store.load_incident(incident.id)
    except EvidenceError:
        return lifecycle.fold(incident)


def _needs(incident: Incident, stage: Stage, waiter: Waiter | None) -> list[str]:
    """What `stage` waits for; for notify, the owed notifications neither met nor explained."""
    if stage != Stage.notify:
        return lifecycle.needs(incident, stage, waiter.now() if waiter else None)
    if lifecycle.advanced(incident, Stage.notify):
        return []
    owed = [d for d in deadlines(incident, waiter.now() if waiter else utcnow()) if d.is_open]
    if not owed:
        return []
    return [f"{len(owed)} notification(s) owed: " + ", ".join(
                f"{d.obligation.id} ({d.status}, due {d.due_at:%Y-%m-%d %H:%M} UTC)" for d in owed),
            f"send each (irp incidents notify {incident.id} OBLIGATION) or explain "
            f"(irp incidents advance {incident.id} notify --note TEXT)"]


def _final_review_report(store: EvidenceStore, incident: Incident, run: RunContext) -> Incident:
    """The review report again, now with the outcome people recorded (the review stage wrote the draft)."""
    from irp.actions.review import ReportArgs, write_report

    ctx = ActionContext(incident=incident, alert=run.alert, store=store, stage=Stage.review, step="review_outcome",
                        action="review.write_report", flow_run_id=str(flow_run.id or ""), playbook=run.playbook,
                        steps=run.steps)
    try:
        write_report(ReportArgs(), ctx)
    except Exception as exc:  # noqa: BLE001 (the draft stays; the outcome is in the record and the timeline)
        get_run_logger().warning("incident %s: the final review report could not be written: %s", incident.id, exc)
        return incident
    return incident.model_copy(update={"timeline": sorted([*incident.timeline, *ctx.timeline], key=lambda e: e.at)})


def _close(incident: Incident, records: audit.AuditedRecord, waiter: Waiter | None) -> Incident:
    """Closed: every stage ended and every owed notification met or explained."""
    ends = [e.at for s in lifecycle.MAIN_LINE[:-1] if (e := lifecycle.stage_end(incident, s))]
    now = waiter.now() if waiter else utcnow()
    at = max([now, *ends]) if waiter and waiter.mode == "scripted" else now
    closure = Closure(at=at, how="closed", by="irp", note="every stage ended; every owed notification met or explained")
    incident = incident.model_copy(update={
        "status": IncidentStatus.closed, "closure": closure, "waiting": None,
        "timeline": [*incident.timeline, TimelineEntry(at=at, kind="closed", message=f"incident closed: {closure.note}")]})
    records.save(incident)
    audit.record(records.store, incident.id, "closed", actor=records.actor, incident=records.last or incident,
                 strict=False)
    return incident


def _ended(incident: Incident, records: audit.AuditedRecord) -> Incident:
    """A false positive: nothing more runs, no final letter goes."""
    if incident.waiting is not None:
        incident = incident.model_copy(update={"waiting": None})
        records.save(incident)
    return incident


def _stop(incident: Incident, step_id: str) -> Incident:
    entry = TimelineEntry(kind="stop", message=f"run stopped: step {step_id} failed (on_failure: stop)")
    return incident.model_copy(update={"status": IncidentStatus.stopped, "timeline": [*incident.timeline, entry]})
