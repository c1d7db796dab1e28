"""Source payloads to Alert models: one function per source, each returning the alerts a request carries.

Each alert comes with its event: "firing" (may open an incident), "resolved" (recorded on the open
incident) or "update" (recorded on the open incident, never opens one; the Alert says firing).
`raw` keeps what was received for this alert.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from pydantic import ValidationError

from irp.errors import field_errors
from irp.intake.payloads import (
    AlertmanagerWebhook,
    CloudWatchAlarm,
    EventBridgeEvent,
    GenericAlert,
    GrafanaWebhook,
    PagerDutyIncident,
    PagerDutyWebhook,
    Report,
    SnsMessage,
)
from irp.models import Alert, AlertSource, utcnow

__all__ = [
    "Incoming",
    "from_alertmanager",
    "from_eventbridge",
    "from_generic",
    "from_grafana",
    "from_pagerduty",
    "from_report",
    "from_sns",
    "labels_fingerprint",
    "PayloadError",
]

class Incoming(NamedTuple):
    """One alert of a request and what it says happened."""

    alert: Alert
    event: Literal["firing", "resolved", "update"]


def _incoming(alert: Alert) -> Incoming:
    return Incoming(alert, alert.status)


class PayloadError(ValueError):
    """Raised when a payload passes its source model but its content cannot be read; lists (path, message)."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{path}: {message}" for path, message in errors))


def _validate(model: Any, data: Any, prefix: tuple) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise PayloadError(field_errors(exc, prefix)) from None


TITLE_MAX = 500
DESCRIPTION_MAX = 20_000
_NO_END = datetime(1, 1, 1, tzinfo=UTC)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _title(*candidates: str | None) -> str:
    for candidate in candidates:
        if candidate and candidate.strip():
            return _clip(candidate.strip().splitlines()[0], TITLE_MAX)
    return "(untitled alert)"


def labels_fingerprint(source: str, labels: dict[str, str]) -> str:
    """A stable identity from the label set (titles often carry changing values)."""
    content = json.dumps({"source": source, "labels": labels}, sort_keys=True)
    return hashlib.sha256(content.encode()).hexdigest()[:16]


def _when(value: datetime | None) -> datetime:
    """The source's time (UTC when it names no zone); now when absent or Alertmanager's zero time."""
    if value is None:
        return utcnow()
    if value.tzinfo is None:  # before comparing: naive and aware times do not compare (TypeError, a 500)
        value = value.replace(tzinfo=UTC)
    if value.year == 1 and value <= _NO_END:  # the zero time is in year 1: the cheap test first
        return utcnow()
    return value


def _grouped(source: AlertSource, payload: AlertmanagerWebhook | GrafanaWebhook, document: dict) -> list[Incoming]:
    envelope = {key: value for key, value in document.items() if key != "alerts"}
    group_title = payload.title if isinstance(payload, GrafanaWebhook) else ""  # getattr on a model: slow miss
    alerts = []
    for index, item in enumerate(payload.alerts):
        labels = {**payload.commonLabels, **item.labels}
        annotations = {**payload.commonAnnotations, **item.annotations}
        description = annotations.get("description", "")
        if item.generatorURL:
            description = f"{description}\n\nSource: {item.generatorURL}".strip()
        alerts.append(_incoming(Alert(
            source=source,
            fingerprint=item.fingerprint or labels_fingerprint(source.value, labels),
            title=_title(annotations.get("summary"), labels.get("alertname"), group_title),
            description=_clip(description, DESCRIPTION_MAX),
            labels=labels,
            observed_at=_when(item.startsAt),
            status=item.status,
            raw={**envelope, "alerts": [document["alerts"][index]]},
        )))
    return alerts


def from_alertmanager(payload: AlertmanagerWebhook, document: dict) -> list[Incoming]:
    """Each alert of the group, with its Alertmanager fingerprint; raw is the notification narrowed to it."""
    return _grouped(AlertSource.alertmanager, payload, document)


def from_grafana(payload: GrafanaWebhook, document: dict) -> list[Incoming]:
    """Each alert of the Grafana notification, like Alertmanager's."""
    return _grouped(AlertSource.grafana, payload, document)


def from_generic(payload: GenericAlert, document: dict) -> list[Incoming]:
    """The documented generic format: one alert."""
    return [_incoming(Alert(
        source=AlertSource.generic,
        fingerprint=payload.fingerprint,
        title=payload.title,
        description=payload.description,
        labels=payload.labels,
        observed_at=_when(payload.observed_at),
        status=payload.status,
        raw=document,
    ))]


def from_report(payload: Report, document: dict) -> list[Incoming]:
    """A report of policy §8; identical reports (a double submit) share a fingerprint."""
    reporter = payload.reporter
    labels = {
        "category": payload.category if isinstance(payload.category, str) else payload.category.value,
        "reporter_role": reporter.role,
        "reporter_organisation": reporter.organisation,
        "personal_data": payload.personal_data,
    }
    who = f"{reporter.name} <{reporter.email}>" + (f", {reporter.organisation}" if reporter.organisation else "")
    description = f"Reported by {who} ({reporter.role}).\n\n{payload.details}"
    if payload.affected_systems:
        description += "\n\nAffected systems: " + ", ".join(payload.affected_systems)
    fingerprint = hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return [_incoming(Alert(
        source=AlertSource.report,
        fingerprint=f"report-{fingerprint}",
        title=payload.summary,
        description=_clip(description, DESCRIPTION_MAX),
        labels=labels,
        observed_at=_when(payload.observed_at),
        status="firing",
        raw=document,
    ))]


_PD_STATUS = {"incident.triggered": "firing", "incident.reopened": "firing", "incident.resolved": "resolved"}


def from_pagerduty(payload: PagerDutyWebhook, document: dict) -> list[Incoming]:
    """incident.triggered/reopened fire, incident.resolved resolves, other incident events are updates.

    Events about other resources (services, pings) carry no alert.
    """
    event = payload.event
    data = event.data
    if event.resource_type != "incident" and not event.event_type.startswith("incident."):
        return []
    if data.get("type", "incident") == "incident":
        incident = _validate(PagerDutyIncident, data, ("event", "data"))
        incident_id, title = incident.id, incident.title
        labels = {
            "event_type": event.event_type,
            "service": incident.service.summary if incident.service else "",
            "urgency": incident.urgency,
            "priority": incident.priority.summary if incident.priority else "",
            "pd_status": incident.status,
        }
        link = incident.html_url
    else:  # notes, status updates, responders: data.incident references the incident
        reference = data.get("incident")
        if not isinstance(reference, dict) or not isinstance(reference.get("id"), str) or not reference["id"]:
            raise PayloadError([("event.data.incident.id", "an incident reference with an id is required")])
        incident_id = reference["id"][:64]
        title = str(reference.get("summary") or "")
        labels = {"event_type": event.event_type}
        link = str(reference.get("html_url") or "")
    agent = f" by {event.agent.summary}" if event.agent and event.agent.summary else ""
    note = str(data.get("content") or data.get("message") or "")
    description = f"PagerDuty {event.event_type}{agent}." + (f"\n\n{note}" if note else "") + (
        f"\n\n{link}" if link else "")
    event_kind = _PD_STATUS.get(event.event_type, "update")
    return [Incoming(Alert(
        source=AlertSource.pagerduty,
        fingerprint=f"pd-{incident_id}",
        title=_title(title, f"PagerDuty incident {incident_id}"),
        description=_clip(description, DESCRIPTION_MAX),
        labels=labels,
        observed_at=_when(event.occurred_at),
        status="resolved" if event_kind == "resolved" else "firing",
        raw=document,
    ), event_kind)]


def _parse_time(*values: str) -> datetime:
    for value in values:
        if not value:
            continue
        text = value.replace("Z", "+00:00")
        if len(text) > 5 and text[-5] in "+-" and text[-3] != ":":  # CloudWatch writes +0000
            text = f"{text[:-2]}:{text[-2:]}"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            continue
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return utcnow()


def _lenient(model: Any, data: Any) -> Any:
    """The model, or None when the content does not fit it (the notification is then kept as plain text)."""
    try:
        return model.model_validate(data)
    except ValidationError:
        return None


_CW_STATUS = {"ALARM": "firing", "OK": "resolved"}


def from_sns(message: SnsMessage, document: dict) -> list[Incoming]:
    """A CloudWatch alarm, an EventBridge event (AWS Health) or any other SNS notification."""
    try:
        inner: Any = json.loads(message.Message)
    except (ValueError, RecursionError):
        inner = None
    alarm = _lenient(CloudWatchAlarm, inner) if isinstance(inner, dict) and "AlarmName" in inner else None
    event = _lenient(EventBridgeEvent, inner) if isinstance(inner, dict) and "detail-type" in inner else None
    if alarm is not None:
        identity = alarm.AlarmArn or f"{alarm.AWSAccountId}:{alarm.Region}:{alarm.AlarmName}"
        trigger = alarm.Trigger or {}
        labels = {
            "kind": "cloudwatch_alarm",
            "alarm_name": alarm.AlarmName,
            "account": alarm.AWSAccountId,
            "region": alarm.Region,
            "state": alarm.NewStateValue,
            "namespace": str(trigger.get("Namespace", ""))[:256],
            "metric": str(trigger.get("MetricName", ""))[:256],
            "topic_arn": message.TopicArn,
        }
        state = _CW_STATUS.get(alarm.NewStateValue, "update")
        return [Incoming(Alert(
            source=AlertSource.sns,
            fingerprint="cw-" + hashlib.sha256(identity.encode()).hexdigest()[:16],
            title=_title(message.Subject, f"CloudWatch alarm {alarm.AlarmName}"),
            description=_clip(f"{alarm.AlarmDescription or ''}\n\n{alarm.NewStateReason}".strip(), DESCRIPTION_MAX),
            labels=labels,
            observed_at=_parse_time(alarm.StateChangeTime, message.Timestamp),
            status="resolved" if state == "resolved" else "firing",
            raw=document,
        ), state)]
    if event is not None:
        return _events(AlertSource.sns, event, document, inner, message.Subject, message.Timestamp,
                       {"topic_arn": message.TopicArn})
    return [_incoming(Alert(
        source=AlertSource.sns,
        fingerprint="sns-" + hashlib.sha256(f"{message.TopicArn}:{message.MessageId}".encode()).hexdigest()[:16],
        title=_title(message.Subject, message.Message, f"SNS notification on {message.TopicArn}"),
        description=_clip(message.Message, DESCRIPTION_MAX),
        labels={"kind": "notification", "topic_arn": message.TopicArn},
        observed_at=_parse_time(message.Timestamp),
        status="firing",
        raw=document,
    ))]


def from_eventbridge(event: EventBridgeEvent, document: dict) -> list[Incoming]:
    """An EventBridge event from an API destination: GuardDuty, Security Hub (one alert per finding), AWS Health,
    CloudTrail; raw is the event (narrowed to the finding for Security Hub)."""
    return _events(AlertSource.eventbridge, event, document, document, None, "", {})


_HEALTH_LABELS = (("service", "service"), ("event_type_code", "eventTypeCode"),
                  ("event_type_category", "eventTypeCategory"))


def _events(source: AlertSource, event: EventBridgeEvent, raw: dict, document: dict, subject: str | None,
            received: str, extra: dict[str, str]) -> list[Incoming]:
    """The alerts of one EventBridge event, received directly or in an SNS notification (then raw is the
    notification and document its Message): the same labels, fingerprint and title either way."""
    detail = event.detail
    findings = detail.get("findings")
    if isinstance(findings, list) and findings and all(isinstance(f, dict) for f in findings):  # Security Hub
        alerts = []
        for finding in findings[:100]:
            narrowed = {**document, "detail": {**detail, "findings": [finding]}}
            alerts.append(_event(source, event, finding, narrowed if raw is document else raw, subject,
                                 received, extra))
        return alerts
    return [_event(source, event, detail, raw, subject, received, extra)]


def _event(source: AlertSource, event: EventBridgeEvent, item: dict, raw: dict, subject: str | None,
           received: str, extra: dict[str, str]) -> Incoming:
    """One alert of an EventBridge event; `item` is its detail, or one Security Hub finding."""
    detail = event.detail
    descriptions = detail.get("eventDescription") or []
    text = str(item.get("description") or item.get("Description") or "")
    if isinstance(descriptions, list) and descriptions and isinstance(descriptions[0], dict):  # AWS Health
        text = str(descriptions[0].get("latestDescription", ""))
    identity = str(detail.get("eventArn") or item.get("Id") or (item.get("id") if item is detail else "") or event.id)
    labels = {"kind": "eventbridge", "event_source": event.source, "detail_type": event.detail_type,
              "account": event.account, "region": event.region}
    for label, key in _HEALTH_LABELS:
        if detail.get(key):
            labels[label] = str(detail[key])[:256]
    labels.update(extra)
    name = str(detail.get("eventTypeCode") or detail.get("eventName") or event.source)
    workflow = item.get("Workflow")
    resolved = (str(detail.get("statusCode", "")) == "closed"
                or isinstance(workflow, dict) and workflow.get("Status") == "RESOLVED")
    return _incoming(Alert(
        source=source,
        fingerprint="eb-" + hashlib.sha256(f"{event.account}:{identity}".encode()).hexdigest()[:16],
        title=_title(subject, str(item.get("title") or item.get("Title") or ""), f"{event.detail_type}: {name}"),
        description=_clip(text, DESCRIPTION_MAX),
        labels=labels,
        observed_at=_parse_time(str(detail.get("startTime", "")), event.time, received),
        status="resolved" if resolved else "firing",
        raw=raw,
    ))
