"""What each source sends (request bodies) and what the intake answers (response bodies).

Machine sources (Alertmanager, Grafana, SNS, PagerDuty) are read leniently: fields they add in
later versions are ignored, so an upgrade never turns alerts into rejections. The two formats this
project defines (generic alerts and reports) are strict: an unknown key is a 422 naming it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from irp.models import IncidentType, Severity

__all__ = [
    "Accepted",
    "AlertOutcome",
    "AlertmanagerAlert",
    "AlertmanagerWebhook",
    "ErrorBody",
    "EventBridgeEvent",
    "FieldError",
    "GenericAlert",
    "GrafanaWebhook",
    "Health",
    "PagerDutyWebhook",
    "Report",
    "Replayed",
    "ReplayedAlert",
    "Reporter",
    "RoutingHealth",
    "SnsMessage",
    "UnroutedAlert",
]

Labels = dict[str, str]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- Prometheus Alertmanager webhook, version 4 -------------------------------------------------


class AlertmanagerAlert(_Lenient):
    """One alert of a notification group."""

    status: Literal["firing", "resolved"]
    labels: Labels = Field(..., max_length=200)
    annotations: Labels = Field(default_factory=dict, max_length=200)
    startsAt: datetime | None = None
    endsAt: datetime | None = None
    generatorURL: str = Field("", max_length=4096)
    fingerprint: str = Field("", max_length=128)


class AlertmanagerWebhook(_Lenient):
    """Alertmanager's webhook_config payload (version 4): one notification for a group of alerts."""

    version: Literal["4"]
    groupKey: str = Field("", max_length=4096)
    truncatedAlerts: int = Field(0, ge=0)
    status: Literal["firing", "resolved"]
    receiver: str = Field("", max_length=500)
    groupLabels: Labels = Field(default_factory=dict, max_length=200)
    commonLabels: Labels = Field(default_factory=dict, max_length=200)
    commonAnnotations: Labels = Field(default_factory=dict, max_length=200)
    externalURL: str = Field("", max_length=4096)
    alerts: list[AlertmanagerAlert] = Field(..., min_length=1, max_length=1000)


# --- Grafana alerting webhook contact point -----------------------------------------------------


class GrafanaAlert(AlertmanagerAlert):
    """One alert of a Grafana notification (Alertmanager's shape plus Grafana's links and values)."""

    silenceURL: str = Field("", max_length=4096)
    dashboardURL: str = Field("", max_length=4096)
    panelURL: str = Field("", max_length=4096)
    values: dict[str, Any] | None = None
    valueString: str = Field("", max_length=20_000)


class GrafanaWebhook(_Lenient):
    """Grafana's webhook contact point payload."""

    receiver: str = Field("", max_length=500)
    status: Literal["firing", "resolved"]
    orgId: int | None = None
    alerts: list[GrafanaAlert] = Field(..., min_length=1, max_length=1000)
    groupLabels: Labels = Field(default_factory=dict, max_length=200)
    commonLabels: Labels = Field(default_factory=dict, max_length=200)
    commonAnnotations: Labels = Field(default_factory=dict, max_length=200)
    externalURL: str = Field("", max_length=4096)
    version: str = Field("1", max_length=20)
    groupKey: str = Field("", max_length=4096)
    truncatedAlerts: int = Field(0, ge=0)
    title: str = Field("", max_length=4096)
    state: str = Field("", max_length=100)
    message: str = Field("", max_length=100_000)


# --- AWS SNS HTTP(S) subscription ---------------------------------------------------------------


class SnsMessage(_Lenient):
    """An SNS HTTP(S) delivery: a notification, or a subscription (un)confirmation."""

    Type: Literal["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"]
    MessageId: str = Field(..., min_length=1, max_length=256)
    TopicArn: str = Field(..., min_length=1, max_length=1024)
    Subject: str | None = Field(None, max_length=1000)
    Message: str = Field(..., max_length=300_000)
    Timestamp: str = Field(..., min_length=1, max_length=64)
    SignatureVersion: Literal["1", "2"]
    Signature: str = Field(..., min_length=1, max_length=4096)
    SigningCertURL: str = Field(..., min_length=1, max_length=2048)
    SubscribeURL: str | None = Field(None, max_length=4096)
    Token: str | None = Field(None, max_length=4096)
    UnsubscribeURL: str | None = Field(None, max_length=4096)


class CloudWatchAlarm(_Lenient):
    """The Message of an SNS notification sent by a CloudWatch alarm."""

    AlarmName: str = Field(..., min_length=1, max_length=255)
    AlarmDescription: str | None = Field(None, max_length=20_000)
    AWSAccountId: str = Field("", max_length=32)
    AlarmArn: str | None = Field(None, max_length=2048)
    NewStateValue: str = Field(..., max_length=64)
    NewStateReason: str = Field("", max_length=20_000)
    StateChangeTime: str = Field("", max_length=64)
    Region: str = Field("", max_length=64)
    OldStateValue: str = Field("", max_length=64)
    Trigger: dict[str, Any] | None = None


class EventBridgeEvent(_Lenient):
    """An EventBridge event: posted by an API destination, or the Message of an SNS notification."""

    version: str = Field("0", max_length=16)
    id: str = Field(..., min_length=1, max_length=256)
    detail_type: str = Field(..., alias="detail-type", min_length=1, max_length=256)
    source: str = Field(..., min_length=1, max_length=256)
    account: str = Field("", max_length=32)
    time: str = Field("", max_length=64)
    region: str = Field("", max_length=64)
    resources: list[str] = Field(default_factory=list, max_length=100)
    detail: dict[str, Any] = Field(default_factory=dict)


# --- PagerDuty v3 webhooks ---------------------------------------------------------------------


class PagerDutyRef(_Lenient):
    id: str = Field("", max_length=64)
    summary: str = Field("", max_length=1000)
    html_url: str = Field("", max_length=4096)


class PagerDutyIncident(_Lenient):
    """event.data for incident.* events whose data.type is incident."""

    id: str = Field(..., min_length=1, max_length=64)
    type: str = "incident"
    html_url: str = Field("", max_length=4096)
    number: int | None = None
    status: str = Field("", max_length=64)
    incident_key: str | None = Field(None, max_length=1000)
    created_at: datetime | None = None
    title: str = Field("", max_length=4096)
    service: PagerDutyRef | None = None
    priority: PagerDutyRef | None = None
    urgency: str = Field("", max_length=64)
    escalation_policy: PagerDutyRef | None = None
    teams: list[PagerDutyRef] = Field(default_factory=list, max_length=100)


class PagerDutyEvent(_Lenient):
    id: str = Field(..., min_length=1, max_length=256)
    event_type: str = Field(..., min_length=1, max_length=128)
    resource_type: str = Field("", max_length=128)
    occurred_at: datetime | None = None
    agent: PagerDutyRef | None = None
    client: dict[str, Any] | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class PagerDutyWebhook(_Lenient):
    """A PagerDuty v3 webhook delivery: one event."""

    event: PagerDutyEvent


# --- This project's own formats -----------------------------------------------------------------


class GenericAlert(_Strict):
    """An alert from logs, a SIEM, anomaly detection or an internal control (policy §4)."""

    title: str = Field(..., min_length=1, max_length=500, description="One-line summary.")
    description: str = Field("", max_length=20_000, description="Free text.")
    fingerprint: str = Field(
        "", max_length=128,
        description="Stable identity of the alert: repeats with the same fingerprint join one incident. "
                    "Derived from title and labels when empty.")
    labels: Labels = Field(default_factory=dict, max_length=200, description="Key/value labels routing matches on.")
    observed_at: datetime | None = Field(None, description="When the source observed it (ISO 8601); default: now.")
    status: Literal["firing", "resolved"] = Field("firing", description="resolved records the end on the incident.")
    source: str | None = Field(
        None, description="Optional, so that an `irp run --alert` document can be posted as is; when given it must be "
                          "generic (this endpoint).")

    @field_validator("source")
    @classmethod
    def _this_endpoint(cls, value: str | None) -> str | None:
        if value not in (None, "generic"):
            raise ValueError(f"source {value!r} does not match this endpoint (/alerts/generic): omit it or give 'generic'")
        return value


class Reporter(_Strict):
    name: str = Field(..., min_length=1, max_length=200)
    email: str = Field(..., min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    organisation: str = Field("", max_length=200, description="The Client, for a Client's report.")
    role: Literal["client", "employee", "other"] = Field("client")


class Report(_Strict):
    """A Client or an employee reporting a suspected incident (policy §8)."""

    reporter: Reporter
    summary: str = Field(..., min_length=1, max_length=500, description="What happened, in one line.")
    details: str = Field("", max_length=20_000, description="What was seen, when, where.")
    category: IncidentType | Literal["other"] = Field(
        "other", description="The reporter's guess of the incident type (policy §2), or other.")
    observed_at: datetime | None = Field(None, description="When it was noticed (ISO 8601); default: now.")
    affected_systems: list[str] = Field(default_factory=list, max_length=50)
    personal_data: Literal["yes", "no", "unknown"] = Field("unknown", description="Personal data involved?")


# --- Responses ----------------------------------------------------------------------------------


class AlertOutcome(BaseModel):
    """What became of one alert of the request."""

    fingerprint: str
    status: str = Field(..., description="firing, resolved or update, as the source says.")
    outcome: Literal["new_incident", "joined", "resolved", "update", "no_incident", "unrouted"] = Field(
        ..., description="new_incident: a run is created (for incident_type triage: the triage run, as no route "
                         "matched an alert its source marks severe); joined/resolved/update: recorded on the open "
                         "incident; no_incident: a resolved or update for no open incident, recorded; unrouted: no "
                         "route matched, listed at GET /alerts/unrouted.")
    deduplicated: bool = Field(..., description="True when the alert joined an open incident instead of a new run.")
    incident_id: str | None = None
    incident_type: IncidentType | Literal["triage"] | None = None
    route: str | None = None
    severity_hint: Severity | None = None
    flow_run_id: str | None = Field(None, description="The incident's flow run, once created.")
    ui_url: str | None = Field(None, description="The flow run in the Prefect UI, once created.")


class Accepted(BaseModel):
    """202: the request is durably recorded; runs are created from the journal."""

    delivery_id: str
    repeat_delivery: bool = Field(False, description="The source resent a delivery already accepted.")
    alerts: list[AlertOutcome]


class ReplayedAlert(AlertOutcome):
    """An unrouted alert the routing in force now matches, accepted as if it had just come."""

    source: str
    delivery_id: str = Field(..., description="The replay's delivery (GET /deliveries/{delivery_id}).")
    replayed_delivery_id: str = Field(..., description="The delivery the alert came in.")


class Replayed(BaseModel):
    """What routing the unrouted alerts again did."""

    routing_sha256: str = Field(..., description="SHA-256 of the routing file in force.")
    replayed: list[ReplayedAlert]
    still_unrouted: int = Field(..., description="Alerts no route matches yet; still listed.")
    purged: int = Field(..., description="Alerts whose delivery is past IRP_INTAKE_RETENTION_DAYS; still listed.")


class FieldError(BaseModel):
    path: str = Field(..., description="Dotted path of the field in the request body ('' for the whole body).")
    message: str


class ErrorBody(BaseModel):
    detail: str
    errors: list[FieldError] = Field(default_factory=list)


class RoutingHealth(BaseModel):
    file: str
    sha256: str = Field(description="SHA-256 of the routing file in force.")
    routes: int
    loaded_at: datetime
    problems: list[str] = Field(
        default_factory=list, description="FILE:LINE:COL problems of the file on disk, which is not in force.")


class RunsWaiting(BaseModel):
    count: int
    oldest_seconds: float


class Health(BaseModel):
    """The service's health; everything but `status` only with the bearer token."""

    status: Literal["ok", "degraded"]
    journal: str | None = Field(None, description="Where the journal is (with the token).")
    backlog: dict[str, int] | None = Field(None, description="Outbox items waiting, per kind (with the token).")
    backlog_age_seconds: dict[str, float] | None = Field(
        None, description="How long the oldest outbox item of each kind has waited (with the token).")
    runs_waiting: RunsWaiting | None = Field(
        None, description="Runs created that no worker has started yet (with the token; absent when the Prefect "
                          "server does not answer).")
    late: list[str] | None = Field(
        None, description="What has waited longer than IRP_INTAKE_BACKLOG_MAX_AGE_SECONDS (with the token).")
    last_error: str | None = Field(None, description="The outbox's last error (with the token).")
    routing: RoutingHealth | None = Field(None, description="The routing in force (with the token).")


class UnroutedAlert(BaseModel):
    source: str
    fingerprint: str
    title: str
    labels: Labels
    count: int
    first_seen: datetime
    last_seen: datetime
    last_delivery_id: str
