"""The domain model: alerts, incidents and their timeline (policy §2, §4, §5).

One source of truth: the CLI, the flows, the intake and the evidence store all use these models.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "ActionItem",
    "Closure",
    "CorrectiveAction",
    "ReviewOutcome",
    "StageEnd",
    "Waiting",
    "Delivery",
    "Alert",
    "UNCLASSIFIED_SEVERITY",
    "AlertSource",
    "ClientOrigin",
    "DataCategory",
    "Incident",
    "IncidentStatus",
    "IncidentType",
    "NotificationRecord",
    "Obligation",
    "PersonalData",
    "PlaybookRef",
    "Severity",
    "Stage",
    "StageOutcome",
    "StepStatus",
    "TargetKind",
    "TimelineEntry",
    "new_incident_id",
    "utcnow",
]


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class IncidentType(StrEnum):
    """Incident types of policy §2, one playbook each."""

    unauthorized_access = "unauthorized_access"
    account_compromise = "account_compromise"
    intrusion_attempt = "intrusion_attempt"
    data_leak = "data_leak"
    malware = "malware"
    service_unavailability = "service_unavailability"
    data_alteration = "data_alteration"
    cyberattack = "cyberattack"
    human_error = "human_error"
    technical_failure = "technical_failure"

    @property
    def label(self) -> str:
        return _TYPE_LABELS[self]


_TYPE_LABELS = {
    IncidentType.unauthorized_access: "Accès non autorisé",
    IncidentType.account_compromise: "Compromission de compte",
    IncidentType.intrusion_attempt: "Tentative d'intrusion",
    IncidentType.data_leak: "Fuite de données",
    IncidentType.malware: "Malware",
    IncidentType.service_unavailability: "Indisponibilité de service",
    IncidentType.data_alteration: "Altération de données",
    IncidentType.cyberattack: "Attaque informatique",
    IncidentType.human_error: "Erreur humaine",
    IncidentType.technical_failure: "Défaillance technique",
}


class Severity(StrEnum):
    """Severities of policy §5, most severe first."""

    critical = "critical"
    major = "major"
    minor = "minor"

    @property
    def description(self) -> str:
        return SEVERITY_DEFINITIONS[self]

    @property
    def rank(self) -> int:
        """0 for critical, 2 for minor: lower is more severe."""
        return list(Severity).index(self)


SEVERITY_DEFINITIONS = {
    Severity.critical: (
        "Incident critique (§5): susceptible d'entraîner une indisponibilité majeure, une fuite "
        "importante de données, une compromission critique ou un impact significatif sur les Clients."
    ),
    Severity.major: (
        "Incident majeur (§5): affecte significativement certaines fonctionnalités, la sécurité "
        "ou un nombre limité de Clients."
    ),
    Severity.minor: (
        "Incident mineur (§5): impact limité — anomalie isolée, dysfonctionnement mineur, "
        "tentative bloquée sans impact significatif."
    ),
}


class Stage(StrEnum):
    """The six stages every playbook runs, in this order."""

    detect = "detect"
    analyse = "analyse"
    contain = "contain"
    restore = "restore"
    notify = "notify"
    review = "review"


UNCLASSIFIED_SEVERITY = "unclassified_severity"  # label: the source's severity word outside §5's (irp/vocabulary.py)


class AlertSource(StrEnum):
    """Where an alert came from (policy §4 detection sources)."""

    alertmanager = "alertmanager"
    grafana = "grafana"
    sns = "sns"
    eventbridge = "eventbridge"
    pagerduty = "pagerduty"
    generic = "generic"
    report = "report"
    manual = "manual"


class DataCategory(StrEnum):
    """Categories of personal data CallCenterRate processes (policy §7, GDPR Art. 33(3)(a))."""

    identification = "identification"
    contact = "contact"
    credentials = "credentials"
    call_recordings = "call_recordings"
    call_transcripts = "call_transcripts"
    performance_ratings = "performance_ratings"
    financial = "financial"
    technical_identifiers = "technical_identifiers"
    special_category = "special_category"


class TargetKind(StrEnum):
    """What a state-changing action changes (an argument marked `Target` in irp/actions/registry.py).

    IRP_ACTION_TARGETS allows or protects targets per kind (glob patterns; CIDR ranges for cidr).
    """

    iam_user = "iam_user"
    iam_role = "iam_role"
    access_key = "access_key"
    instance = "instance"
    security_group = "security_group"
    cidr = "cidr"
    ip_set = "ip_set"
    web_acl = "web_acl"
    network_acl = "network_acl"
    bucket = "bucket"
    object = "object"
    aws_principal = "aws_principal"
    mfa_device = "mfa_device"
    secret = "secret"
    tenant = "tenant"
    feature = "feature"
    platform_user = "platform_user"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Alert(_Model):
    """One alert or report, normalised from its source; `raw` keeps the payload as received."""

    model_config = ConfigDict(extra="forbid", title="Alert")

    title: str = Field(..., min_length=1, max_length=500, title="Title", description="One-line summary.",
                       json_schema_extra={"position": 0})
    description: str = Field("", max_length=20_000, title="Description",
                             description="Free text from the source.", json_schema_extra={"position": 1})
    source: AlertSource = Field(AlertSource.generic, title="Source",
                                description="The system that sent the alert.", json_schema_extra={"position": 2})
    labels: dict[str, str] = Field(
        default_factory=dict, title="Labels", json_schema_extra={"position": 3},
        description="Key/value labels: tenant, service, data_categories, people_affected, records_affected…",
    )
    observed_at: datetime = Field(default_factory=utcnow, title="Observed at",
                                  description="When the source observed it.", json_schema_extra={"position": 4})
    fingerprint: str = Field(
        "", title="Fingerprint", json_schema_extra={"position": 5},
        description="Stable identity of the alert at its source; derived from the content when empty.",
    )
    status: Literal["firing", "resolved"] = Field(
        "firing", title="Status", description="firing or resolved, as the source says.",
        json_schema_extra={"position": 6},
    )
    raw: Any = Field(None, title="Raw payload", json_schema_extra={"position": 7},
                     description="The payload exactly as received, kept verbatim as evidence.")

    @field_validator("observed_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    def model_post_init(self, __context: Any) -> None:
        if not self.fingerprint:
            content = json.dumps(
                {"source": self.source, "title": self.title, "labels": self.labels}, sort_keys=True
            )
            self.fingerprint = hashlib.sha256(content.encode()).hexdigest()[:16]


class PersonalData(_Model):
    """Personal data involved in an incident (policy §7; GDPR Art. 33(3)(a))."""

    involved: bool = False
    categories: list[DataCategory] = Field(default_factory=list)
    unclassified: list[str] = Field(
        default_factory=list, description="Categories the source named that are not in the vocabulary: for the analyst.")
    approx_people: int | None = Field(None, ge=0, description="Approximate number of people concerned.")
    approx_records: int | None = Field(None, ge=0, description="Approximate number of records concerned.")
    high_risk: bool = Field(False, description="Likely high risk to people's rights (GDPR Art. 34).")


class StepStatus(StrEnum):
    completed = "completed"
    failed = "failed"
    skipped = "skipped"


class TimelineEntry(_Model):
    """One dated fact about an incident: a stage, a step, a decision, a notification."""

    at: datetime = Field(default_factory=utcnow)
    kind: str = Field(..., description="stage, step, note, escalation, alert, approval, notification…")
    message: str
    stage: Stage | None = None
    step: str | None = None
    actor: str = "irp"
    data: dict[str, Any] = Field(default_factory=dict)


class StageOutcome(_Model):
    """How one stage went in one run (notify runs twice: phase initial, then final)."""

    stage: Stage
    phase: str | None = None
    status: StepStatus
    started_at: datetime
    ended_at: datetime


class ActionItem(_Model):
    """Work assigned to a person: a manual response measure or a corrective action (§6, §11)."""

    id: str
    title: str
    owner: str
    stage: Stage
    step: str = Field("", description="The playbook step that assigned it, or that a person takes over.")
    details: str = ""
    due_at: datetime | None = None
    status: str = Field("open", description="open or closed.")
    closed_at: datetime | None = None
    closed_by: str = ""
    resolution: str = ""


class PlaybookRef(_Model):
    """The exact playbook a run executed."""

    name: str
    version: str
    policy_version: str
    path: str
    sha256: str


class Obligation(_Model):
    """A notification the incident calls for (policy §7; GDPR Art. 33, 34; NIS2 Art. 23): to whom, by when.

    Decided in analyse from the incident's facts; whether it is met is read from the notifications
    sent (irp/notifications/obligations.py), so a notification sent from outside the run counts too.
    """

    id: str = Field(..., description="Unique per incident, e.g. gdpr_authority or client:acme.")
    kind: str = Field(..., description="client, gdpr_authority, data_subjects, nis2_early_warning, "
                                        "nis2_notification, nis2_final_report or service_recipients.")
    audience: Literal["client", "authority", "internal", "data_subjects"]
    recipient: str = Field(..., description="Key of the configured recipients: a Client, an authority (cnil, anssi).")
    template: str = Field(..., description="Template of the message, in playbooks/templates/.")
    language: Literal["fr", "en"] = "fr"
    basis: str = Field(..., description="The rule that requires it, e.g. RGPD art. 33(1).")
    phase: Literal["initial", "final"] = Field("initial", description="The run's notify phase that sends it.")
    due_at: datetime = Field(..., description="Deadline, computed from the awareness time (or as `clock` says).")
    clock: str = Field("", description="What the deadline counts from, e.g. 72 h after awareness.")
    after: str | None = Field(None, description="Id of the obligation whose notification restarts this clock "
                                                "(NIS2 final report: one month after the incident notification).")


class Delivery(_Model):
    """What one channel did with one message (no secrets: URLs are shown without credentials)."""

    channel: Literal["email", "apprise", "none"]
    recipient: str = Field(..., description="The address, or the chat URL with its secrets masked.")
    status: Literal["sent", "failed", "refused", "not_sent"]
    attempts: int = 0
    detail: str = ""
    at: datetime = Field(default_factory=lambda: utcnow())


class NotificationRecord(_Model):
    """One notification rendered (and sent, when channels are configured), archived as evidence."""

    id: str
    at: datetime = Field(default_factory=lambda: utcnow())
    phase: str = Field("initial", description="initial, update, final, reminder or escalation.")
    audience: Literal["client", "authority", "internal", "data_subjects"]
    recipient: str = Field("", description="Key of the configured recipients (a Client, an authority, internal).")
    template: str
    language: str = "fr"
    subject: str
    obligation: str | None = Field(None, description="Id of the obligation it fulfils.")
    status: Literal["sent", "partial", "failed", "not_sent", "held", "dry_run"]
    reason: str = Field("", description="Why it was not (fully) sent.")
    hold: Literal["", "unconfirmed_client", "unknown_client", "review"] = Field(
        "", description="Why a message was kept back: the Client comes from alert data and is not confirmed (held, "
                        "archived), it is not a configured Client (reported, never mailed), or it awaits its "
                        "reviewer's approval (IRP_NOTIFY_REVIEW).")
    reviewed_by: str = Field("", description="Who approved the message before it left (IRP_NOTIFY_REVIEW).")
    edits: dict[str, str] = Field(default_factory=dict, description="Free-text parts the reviewer rewrote.")
    late_reason: str = Field("", description="Reasons for the delay, when sent after the deadline (Art. 33(1)).")
    deliveries: list[Delivery] = Field(default_factory=list)
    evidence: str = Field("", description="Evidence item holding the rendered message and the delivery result.")


TRUSTED_CLIENT_SOURCES = ("playbook", "routing", "responder")


class ClientOrigin(_Model):
    """How an incident came to name one of its Clients, and whether a §7 letter may go to it on that basis."""

    client: str = Field(..., min_length=1, max_length=200, description="The Client id (a key of IRP_NOTIFY_CLIENTS).")
    source: Literal["alert", "playbook", "routing", "responder", "enrichment"] = Field(
        ..., description="alert: read from alert data; playbook: written in the playbook; routing: stated by a "
                         "route of routing.yaml; responder: declared or confirmed by a person; enrichment: "
                         "looked up from alert data.")
    confirmed: bool = Field(False, description="A person or a configured rule vouches for it: letters may go.")
    by: str = Field("", max_length=200, description="The route, the person or the step it comes from.")
    at: datetime = Field(default_factory=utcnow)

    @classmethod
    def of(cls, client: str, source: str, by: str = "") -> ClientOrigin:
        """An origin, confirmed when its source is trusted (playbook, routing, responder)."""
        return cls(client=client, source=source, by=by, confirmed=source in TRUSTED_CLIENT_SOURCES)


class IncidentStatus(StrEnum):
    """Where the response is (irp/lifecycle.py says what each status waits for)."""

    detected = "detected"
    analysing = "analysing"
    containing = "containing"
    restoring = "restoring"
    reviewing = "reviewing"
    notifying = "notifying"
    closed = "closed"
    false_positive = "false_positive"
    stopped = "stopped"

    @property
    def ended(self) -> bool:
        """True once nothing more will happen: closed, closed as a false positive, or stopped."""
        return self in (IncidentStatus.closed, IncidentStatus.false_positive, IncidentStatus.stopped)


class CorrectiveAction(_Model):
    """A corrective action the review decided (§11): what, who, by when."""

    title: str = Field(..., min_length=1, max_length=500)
    owner: str = Field(..., min_length=1, max_length=200)
    due: datetime | None = Field(None, description="When it is due (a date or an ISO 8601 time).")

    @field_validator("due")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)


class ReviewOutcome(_Model):
    """What the post-incident review concluded (§11): causes, what worked, what did not, corrective actions."""

    by: str
    at: datetime
    causes: str
    worked: str = ""
    did_not_work: str = ""
    corrective: list[CorrectiveAction] = Field(default_factory=list)


class StageEnd(_Model):
    """When and how a stage ended: its automatic part left nothing open, its measures were closed, or a
    responder ended it (irp/lifecycle.py)."""

    stage: Stage
    at: datetime
    how: Literal["automatic", "measures_closed", "advanced", "review_recorded", "notifications_met"]
    by: str = "irp"
    note: str = ""


class Closure(_Model):
    """How the incident ended: closed once everything it owed was done, or closed as a false positive."""

    at: datetime
    how: Literal["closed", "false_positive"]
    by: str = "irp"
    note: str = ""


class Waiting(_Model):
    """What a run waits for, and how it will be woken (irp/engine/waits.py)."""

    stage: Stage
    needs: list[str] = Field(default_factory=list, description="What is missing, in words.")
    since: datetime = Field(default_factory=utcnow)
    flow_run_id: str = ""
    mode: Literal["suspended", "offline", "scripted"] = "offline"


class Incident(_Model):
    """A security incident (policy §2) and everything known about it."""

    id: str
    type: IncidentType
    severity: Severity
    severity_reason: str = ""
    severity_source: str = Field(
        "default", description="default (playbook), hint (alert routing), rule (§5 rules) or operator."
    )
    status: IncidentStatus = IncidentStatus.detected
    title: str
    summary: str = ""
    detected_at: datetime = Field(..., description="When the source observed the event.")
    aware_at: datetime = Field(default_factory=utcnow, description="When Confluent Digital became aware.")
    stages: list[StageOutcome] = Field(default_factory=list)
    affected_clients: list[str] = Field(default_factory=list)
    client_origins: list[ClientOrigin] = Field(
        default_factory=list, description="Where each affected Client comes from; §7 letters need a confirmed one.")
    affected_systems: list[str] = Field(default_factory=list)
    personal_data: PersonalData = Field(default_factory=PersonalData)
    reporter: str = Field("", description="Who reported it: a source system or a person (§8).")
    alerts: list[str] = Field(default_factory=list, description="Fingerprints of the alerts joined.")
    escalated: bool = False
    actions: list[ActionItem] = Field(default_factory=list, description="Assigned measures (§6, §11).")
    waiting: Waiting | None = Field(None, description="What the response waits for, while it waits.")
    review: ReviewOutcome | None = Field(None, description="The review's outcome, once recorded (§11).")
    closure: Closure | None = Field(None, description="When and how the incident ended.")
    playbook: PlaybookRef | None = None
    flow_run_ids: list[str] = Field(default_factory=list)
    dry_run: bool = False
    timeline: list[TimelineEntry] = Field(default_factory=list)
    obligations: list[Obligation] = Field(
        default_factory=list, description="Notifications due, to whom, by when (decided in analyse).")
    notifications: list[NotificationRecord] = Field(
        default_factory=list, description="Notifications rendered and sent by the runs (§7, §12).")

    def client_confirmed(self, client: str) -> bool:
        """True when a letter may go to `client`: the playbook, the routing or a responder named it, or a
        responder confirmed it afterwards (`irp incidents confirm-clients`, a timeline event)."""
        if any(o.client == client and o.confirmed for o in self.client_origins):
            return True
        return any(e.kind == "clients_confirmed" and client in (e.data.get("clients") or []) for e in self.timeline)

    def with_clients(self, clients: list[str], source: str, by: str = "") -> dict[str, Any]:
        """The changes that add `clients` from `source`; an origin is added unless one as good is there."""
        origin = {c: ClientOrigin.of(c, source, by) for c in dict.fromkeys(clients)}
        fresh = [c for c in origin if not any(o.client == c and (o.confirmed or o.source == source)
                                              for o in self.client_origins)]
        return {"affected_clients": list(dict.fromkeys([*self.affected_clients, *clients])),
                "client_origins": [*self.client_origins, *(origin[c] for c in fresh)]}

    def automatic_done(self, stage: Stage, phase: str | None = None) -> StageOutcome | None:
        """The outcome of `stage`'s automatic part (of `phase`, for notify), once it ran."""
        return next((s for s in self.stages if s.stage == stage and s.phase == phase), None)


def new_incident_id(now: datetime | None = None) -> str:
    """A new incident id such as INC-20261129-7F3A9C."""
    now = now or utcnow()
    return f"INC-{now:%Y%m%d}-{secrets.token_hex(3).upper()}"
