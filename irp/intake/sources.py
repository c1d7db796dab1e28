"""The alert sources (path, request model, normaliser) and how a request body becomes their alerts.

One path for every caller (the endpoints, `irp playbooks route`, the replay of unrouted alerts, the
bench): JSON read as `json.loads` reads it, an object, nested at most MAX_DEPTH, the source's model,
then its normaliser.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from irp.errors import field_errors
from irp.intake import normalise
from irp.intake.normalise import PayloadError
from irp.intake.payloads import (
    AlertmanagerWebhook,
    EventBridgeEvent,
    GenericAlert,
    GrafanaWebhook,
    PagerDutyWebhook,
    Report,
    SnsMessage,
)
from irp.models import Alert

__all__ = ["MAX_DEPTH", "SOURCES", "BodyError", "InvalidPayload", "Source", "alerts_in", "parse_json",
           "read_payload"]

MAX_DEPTH = 64


@dataclass(frozen=True)
class Source:
    """One alert source: its path, request model and normaliser."""

    name: str
    path: str
    model: type[BaseModel]
    normalise: Callable[[Any, dict], list]
    summary: str
    description: str
    headers: tuple[str, ...] = ()


_HMAC_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("alertmanager", "/alerts/alertmanager", AlertmanagerWebhook, normalise.from_alertmanager,
           "Prometheus Alertmanager webhook (version 4)",
           "A webhook_config receiver: each alert of the group is routed and deduplicated by its fingerprint.",
           _HMAC_HEADERS),
    Source("grafana", "/alerts/grafana", GrafanaWebhook, normalise.from_grafana,
           "Grafana alerting webhook contact point", "Each alert of the notification, like Alertmanager's.",
           _HMAC_HEADERS),
    Source("sns", "/alerts/sns", SnsMessage, normalise.from_sns,
           "AWS SNS HTTP(S) subscription",
           "CloudWatch alarms, EventBridge events (AWS Health) and other notifications; the message "
           "signature is verified; a SubscriptionConfirmation is confirmed by the outbox.", ()),
    Source("eventbridge", "/alerts/eventbridge", EventBridgeEvent, normalise.from_eventbridge,
           "Amazon EventBridge API destination (raw events)",
           "GuardDuty and Security Hub findings, AWS Health and CloudTrail events as EventBridge sends them; the "
           "connection authenticates with the API-key header (IRP_EVENTBRIDGE_API_KEY_HEADER), basic auth or a "
           "bearer token. The same events through SNS are read the same way.", ("x-irp-api-key",)),
    Source("pagerduty", "/alerts/pagerduty", PagerDutyWebhook, normalise.from_pagerduty,
           "PagerDuty v3 webhook",
           "Signed with X-PagerDuty-Signature. incident.triggered/reopened open or join an incident, "
           "incident.resolved resolves it, other incident events are recorded on it.",
           ("x-pagerduty-signature",)),
    Source("generic", "/alerts/generic", GenericAlert, normalise.from_generic,
           "Generic alert (logs, SIEM, anomaly detection, internal controls)",
           "The documented JSON format of docs/intake.md; unknown keys are rejected.", _HMAC_HEADERS),
    Source("report", "/reports", Report, normalise.from_report,
           "Report a suspected incident (policy §8)",
           "A Client or an employee reports suspicious activity; it is routed by its category.", _HMAC_HEADERS),
)}

_DIGITS = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBER = b"0" * 19  # 19 digits in a row: maybe an integer beyond 64 bits


def parse_json(body: bytes) -> Any:
    """The JSON document, as `json.loads` reads it (errors worded by it too), mostly parsed by orjson (4x faster).

    orjson refuses what the standard parser tolerates (NaN, a BOM, lone surrogates, 1e400): those
    go to `json.loads`. It reads integers beyond 64 bits as floats: bodies with 19 digits in a row
    go to `json.loads` too, so every number keeps its exact value.
    """
    if body.translate(_DIGITS).find(_LONG_NUMBER) < 0:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return json.loads(body)


def _depth_ok(document: Any, body: bytes) -> bool:
    if body.count(b"[") + body.count(b"{") <= MAX_DEPTH:  # cannot nest deeper than it has brackets
        return True
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return False
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return True


class BodyError(ValueError):
    """Raised when a request body is not a JSON object of its source's payload: `reason` labels the rejection."""

    def __init__(self, reason: str, detail: str, errors: list[tuple[str, str]] | None = None,
                 message: str | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.errors = errors or []
        ValueError.__init__(self, message or detail)


class InvalidPayload(BodyError, PayloadError):
    """Raised when the body is a JSON object but not the source's payload (its model lists the errors)."""


def read_payload(source: Source, body: bytes) -> tuple[dict[str, Any], Any]:
    """(document, payload) of a body as `source` sends it: JSON, an object, nested at most MAX_DEPTH, the model's."""
    try:
        document = parse_json(body)
    except RecursionError:
        raise BodyError("invalid_json", "invalid JSON: nested too deeply", message="nested too deeply") from None
    except ValueError as exc:
        raise BodyError("invalid_json", f"invalid JSON: {exc}", [("", str(exc))], message=str(exc)) from None
    if not isinstance(document, dict):
        kind = type(document).__name__
        raise BodyError("invalid_json", "expected a JSON object", [("", f"expected an object, got {kind}")],
                        message=f"expected a JSON object, got {kind}")
    if not _depth_ok(document, body):
        raise BodyError("invalid_payload", f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        return document, source.model.model_validate(document)
    except ValidationError as exc:
        raise InvalidPayload("invalid_payload", f"invalid {source.name} payload", field_errors(exc)) from None


def alerts_in(source: Source, body: bytes) -> list[tuple[Alert, str]]:
    """The alerts of a body as `source` sends it, normalised: (alert, event). No authentication, no routing.

    BodyError when it is not the source's payload (InvalidPayload, a PayloadError, when the model refuses it).
    """
    document, payload = read_payload(source, body)
    if isinstance(payload, SnsMessage) and payload.Type != "Notification":
        return []  # a subscription message: confirmed, not routed
    return source.normalise(payload, document)


