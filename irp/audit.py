"""The audit log (policy §10, GDPR Art. 33(5)): every incident state change and operator act, tamper-evident.

Audit entries are `audit` events in the incident's custody log (irp/evidence/custody.py): one hash
chain per incident, kept with its evidence in the same store (local folder or S3) and exported with
it. Editing, removing or reordering any entry breaks the chain; `verify` names the first broken one.
State changes also carry the SHA-256 of the incident record as saved (`sha256`, over the record
without its timeline, which entries from outside the run may join), so a record edited out of band
no longer matches the last audited state.

    act                 actor                       when
    opened              the flow run                the engine created the incident record
    declared            the person reporting        the declare_incident flow (§8), before the run
    updated             the flow run                the engine saved a new state (status, severity, stages…)
    approved, rejected  the approver                a decision on a gated step
    approval_timed_out  irp                         nobody decided in time; the default applied
    action_closed       --by NAME                   `irp actions close`
    exported            user@host                   `irp incidents export`
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, Field

from irp.errors import EvidenceError
from irp.evidence.anchors import anchor_problems
from irp.evidence.base import EvidenceStore, local_actor
from irp.evidence.custody import VERSION, digest, parse_entries
from irp.evidence.models import CustodyEntry, IntegrityProblem
from irp.models import Incident

__all__ = [
    "ACTS",
    "AuditReport",
    "AuditedRecord",
    "IncidentAudit",
    "entries",
    "record",
    "record_digest",
    "record_state",
    "verify",
    "verify_incident",
]

log = logging.getLogger(__name__)

ACTS = ("opened", "declared", "updated", "approved", "rejected", "approval_timed_out", "action_closed", "exported",
        "clients_confirmed", "stage_advanced", "review_recorded", "false_positive", "closed", "triaged",
        "notification_approved", "notification_postponed", "approval_paged", "approval_refused", "approval_void",
        "approval_link_refused")


def record_digest(incident: Incident, version: int = VERSION) -> str:
    """SHA-256 of the incident record without its timeline (canonical JSON), as read from the store.

    Only the fields the record holds count (`exclude_unset`): a record written before a field was added to
    the model still verifies after an upgrade, the new field being absent from it, not set to its default.
    `version`: that of the custody entry holding the digest (custody.canonical).
    """
    return digest(incident.model_dump(mode="json", exclude={"timeline"}, exclude_unset=True), version)


def record(
    store: EvidenceStore,
    incident_id: str,
    act: str,
    *,
    actor: str | None = None,
    incident: Incident | None = None,
    details: dict[str, Any] | None = None,
    strict: bool = True,
) -> CustodyEntry | None:
    """Append one audit entry to the incident's chain; with `incident`, the record's digest and status.

    strict=False (the engine): a store that refuses is logged, never fails the response.
    """
    if act not in ACTS:
        raise ValueError(f"unknown audit act {act!r}; valid: {', '.join(ACTS)}")
    payload: dict[str, Any] = {"act": act}
    digest = None
    if incident is not None:
        digest = record_digest(incident)
        payload.update(status=incident.status.value, severity=incident.severity.value)
    payload.update(details or {})
    try:
        return store.record_custody(incident_id, "audit", actor=actor or local_actor(), sha256=digest,
                                    details=payload)
    except EvidenceError as exc:
        if strict:
            raise
        log.warning("audit entry %s for %s not recorded: %s", act, incident_id, exc)
        return None


def changes(before: Incident, after: Incident) -> dict[str, Any]:
    """What differs between two saved states of an incident, for people to read."""
    found: dict[str, Any] = {}
    for field in ("type", "severity", "status", "escalated"):
        old, new = getattr(before, field), getattr(after, field)
        if old != new:
            found[field] = [str(getattr(old, "value", old)), str(getattr(new, "value", new))]
    if before.personal_data != after.personal_data:
        found["personal_data"] = after.personal_data.model_dump(mode="json")
    if len(after.stages) > len(before.stages) or after.stages[: len(before.stages)] != before.stages:
        found["stages"] = [f"{s.stage.value}{' (' + s.phase + ')' if s.phase else ''} {s.status.value}"
                           for s in after.stages[len(before.stages):]]
    old_actions = {a.id: a for a in before.actions}
    for a in after.actions:
        if a.id not in old_actions:
            found.setdefault("actions_assigned", []).append(a.id)
        elif old_actions[a.id].status != a.status:
            found.setdefault("actions_changed", []).append(f"{a.id} {a.status}")
    if before.waiting != after.waiting:
        found["waiting"] = (f"{after.waiting.stage.value}: {'; '.join(after.waiting.needs)}"[:500]
                            if after.waiting else "no longer waiting")
    if before.review != after.review and after.review:
        found["review"] = f"recorded by {after.review.by}"
    if before.closure != after.closure and after.closure:
        found["closure"] = f"{after.closure.how} by {after.closure.by}"
    if before.flow_run_ids != after.flow_run_ids:
        found["flow_run_ids"] = after.flow_run_ids
    return found


def record_state(store: EvidenceStore, before: Incident | None, after: Incident, *, actor: str) -> None:
    """Audit a record the engine just saved: `opened`, or `updated` with what changed (never raises)."""
    if before is None:
        record(store, after.id, "opened", actor=actor, incident=after, strict=False,
               details={"type": after.type.value, "title": after.title, "reporter": after.reporter,
                        "flow_run_ids": after.flow_run_ids})
        return
    if record_digest(before) == record_digest(after):
        return
    record(store, after.id, "updated", actor=actor, incident=after, strict=False,
           details={"changes": changes(before, after)})


class AuditedRecord:
    """Saves an incident's record and audits what changed since the previous save (the engine's writer)."""

    def __init__(self, store: EvidenceStore, *, actor: str) -> None:
        self.store = store
        self.actor = actor
        self.last: Incident | None = None

    def save(self, incident: Incident) -> None:
        """Save the record; audit it as a load now returns it (with the people's decisions, irp/lifecycle.py)."""
        self.store.save_incident(incident)
        try:
            incident = self.store.load_incident(incident.id)
        except EvidenceError as exc:
            log.warning("incident %s: saved record not read back for the audit: %s", incident.id, exc)
        record_state(self.store, self.last, incident, actor=self.actor)
        self.last = incident


def entries(store: EvidenceStore, incident_id: str) -> list[CustodyEntry]:
    """The incident's audit entries, in order."""
    return [entry for entry in store.custody(incident_id) if entry.event == "audit"]


class IncidentAudit(BaseModel):
    """What `verify` found for one incident."""

    incident_id: str
    chain_entries: int = Field(..., description="Entries in the chain (custody and audit).")
    audit_entries: int
    problems: list[IntegrityProblem] = Field(default_factory=list, description="Chain breaks first, in log order.")
    head_seq: int | None = Field(None, description="The chain head: the last custody entry's seq.")
    head_hash: str | None = Field(None, description="The chain head: the last custody entry's hash.")

    @property
    def intact(self) -> bool:
        return not self.problems


class AuditReport(BaseModel):
    """`irp audit verify`: one result per incident."""

    store: str
    incidents: list[IncidentAudit]

    @property
    def intact(self) -> bool:
        return all(i.intact for i in self.incidents)


def verify_incident(store: EvidenceStore, incident_id: str) -> IncidentAudit:
    """The store's check of the incident (objects, manifest, events, record, chain: EvidenceStore.check),
    and that its record matches the last audited state; read-only."""
    raws = store._custody_raw(incident_id)  # the chain as stored, byte for byte
    try:
        report = store.check(incident_id)
    except EvidenceError:
        if not raws:
            raise EvidenceError(f"no incident {incident_id} in {store.url}; `irp incidents list` shows the known ones"
                                ) from None
        raise
    problems = []
    audited = [(raw.label, entry) for raw in raws for entry in parse_entries([raw]) if entry.event == "audit"]
    try:
        incident = store.load_incident(incident_id)
    except EvidenceError:
        incident = None
    except ValueError as exc:  # a record that no longer parses
        problems.append(IntegrityProblem(kind="altered", subject="incident.json", detail=f"not a valid incident record: "
                                         f"{str(exc).splitlines()[0]}"))
        incident = None
    states = [(label, entry) for label, entry in audited if entry.sha256]
    if incident is not None and not states:
        problems.append(IntegrityProblem(kind="missing", subject="incident.json",
                                         detail="the incident has a record but no audited state"))
    elif incident is not None:
        label, last = states[-1]
        if record_digest(incident, last.v) != last.sha256:
            problems.append(IntegrityProblem(
                kind="altered", subject="incident.json",
                detail=f"differs from the last audited state ({label}: entry {last.seq}, status "
                       f"{last.details.get('status')} at {last.at:%Y-%m-%d %H:%M:%S} UTC): edited outside irp"))
    named = {p.subject for p in problems}  # the audit's own finding on the record says more than the store's
    found = [p for p in report.problems if p.subject not in named]
    found.sort(key=lambda p: p.kind != "broken")  # chain breaks first, each in log order
    return IncidentAudit(incident_id=incident_id, chain_entries=len(raws), audit_entries=len(audited),
                         problems=found + problems, head_seq=report.head_seq, head_hash=report.head_hash)


def verify(store: EvidenceStore, incident_ids: list[str] | None = None) -> AuditReport:
    """Verify every incident in the store (or the ones given): the store's check (which compares its chain with the
    latest checkpoint, irp/evidence/anchors.py) and the audit chain; an anchored incident gone from the store is
    named as deleted."""
    anchored = anchor_problems(store, incident_ids or None)
    ids = incident_ids if incident_ids else [*store.incident_ids(), *(i for i in anchored if i not in store.incident_ids())]
    results = []
    for incident_id in ids:
        try:
            result = verify_incident(store, incident_id)
        except EvidenceError:
            if not anchored.get(incident_id):
                raise
            result = IncidentAudit(incident_id=incident_id, chain_entries=0, audit_entries=0,
                                   problems=anchored[incident_id])
        results.append(result)
    return AuditReport(store=store.url, incidents=results)
