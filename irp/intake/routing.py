"""Alert routing: matching alerts against playbooks/routing.yaml to an incident type and a severity hint.

Routes are tried in order; the first whose matchers all hold decides. An alert no route matches
(and no `default`) is recorded as unrouted and listed at GET /alerts/unrouted: never dropped.
The file's models, loader and checks are in irp/playbook/ (errors as FILE:LINE:COL: key.path: message).

A route's `map` sets labels from the alert's source document with JMESPath before its matchers are
tried (a label the source set is kept: mapping fills in, never overrides). `data_categories` is read
through the vocabulary (synonyms become the playbooks' words; other values are kept, unclassified).
Mapped labels are data like any label: only a route's static `clients` is trusted.

An alert no route matches whose source marks it severe (`source_severity`: its `severity` label, or an
AWS finding's own severity, read through the vocabulary) at one of IRP_TRIAGE_SEVERITIES is not left
in the list: it goes to triage (a Routed without incident type), whose run asks a responder the type.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jmespath
import jmespath.exceptions

from irp import vocabulary
from irp.errors import PlaybookError
from irp.models import UNCLASSIFIED_SEVERITY, Alert, ClientOrigin, IncidentType, Severity
from irp.playbook.loader import load_routing_file
from irp.playbook.models import Route, Routing
from irp.settings import get_settings

__all__ = ["MAX_MAPPED_VALUE", "TRIAGE_ROUTE", "Routed", "Router", "source_document", "source_severity"]

MAX_MAPPED_VALUE = 1000
TRIAGE_ROUTE = "triage"  # the route name of an unrouted alert sent to triage
# Where a source states its own severity in the event it sends (EventBridge, directly or through SNS).
_SOURCE_SEVERITY = jmespath.compile("detail.findings[0].Severity.Label || detail.severity")


@dataclass(frozen=True)
class Routed:
    """Where one alert goes: the route, the incident type (None: triage), the severity hint and the grouping key."""

    route: str
    incident_type: IncidentType | None
    severity: Severity | None
    group_key: str
    clients: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()  # the labels the route's map set (data, never authority)

    def apply(self, alert: Alert) -> Alert:
        """The alert with the labels this route set (its fingerprint unchanged)."""
        return alert.model_copy(update={"labels": {**alert.labels, **dict(self.labels)}}) if self.labels else alert

    def run_clients(self) -> list[dict]:
        """The run's `clients` parameter: the Clients this route states, trusted for §7 letters."""
        return [ClientOrigin.of(client, "routing", by=f"route {self.route}").model_dump(mode="json")
                for client in self.clients]


class Router:
    """Matches alerts against a loaded routing file; `sha256` is the digest of the file's bytes."""

    def __init__(self, routing: Routing, sha256: str = "", triage: Iterable[Severity] | None = None) -> None:
        self.routing = routing
        self.sha256 = sha256
        self.triage = frozenset(get_settings().triage_severities if triage is None else triage)
        self._compiled = []
        for route in routing.routes:
            # Matchers on labels the map does not set are tried first: most alerts fail them, unmapped.
            mapped = set(route.map)
            equals = list(route.labels.items())
            regexes = [(label, re.compile(pattern)) for label, pattern in route.labels_regex.items()]
            self._compiled.append((
                route,
                route.sources(),
                tuple(m for m in equals if m[0] not in mapped),
                tuple(m for m in regexes if m[0] not in mapped),
                re.compile(route.title_regex) if route.title_regex is not None else None,
                tuple((label, jmespath.compile(expression)) for label, expression in route.map.items()),
                tuple(m for m in equals if m[0] in mapped),
                tuple(m for m in regexes if m[0] in mapped),
            ))

    @classmethod
    def from_file(cls, path: Path, triage: Iterable[Severity] | None = None) -> Router:
        """Read and check a routing file; PlaybookError lists every problem. `triage`: the source severities that
        send an unrouted alert to triage (default IRP_TRIAGE_SEVERITIES)."""
        routing, problems, digest = load_routing_file(path)
        if problems or routing is None:
            raise PlaybookError(problems)
        return cls(routing, digest, triage)

    def route_all(self, alerts: Iterable[tuple[Alert, str]]) -> list[tuple[Alert, Routed | None, str]]:
        """(alert with its mapped labels, where it goes, event) for each (alert, event)."""
        out = []
        for alert, event in alerts:
            routed = self.route(alert)
            out.append((routed.apply(alert) if routed else alert, routed, event))
        return out

    def route(self, alert: Alert) -> Routed | None:
        """Where `alert` goes, or None when no route matches and there is no default."""
        document: list[Any] = []  # read once, when a route maps
        for route, sources, equals, regexes, title, mapping, mapped_equals, mapped_regexes in self._compiled:
            if sources is not None and alert.source not in sources:
                continue
            labels = alert.labels
            if equals and any(labels.get(label, "") != value for label, value in equals):
                continue
            if regexes and any(not rx.fullmatch(labels.get(label, "")) for label, rx in regexes):
                continue
            if title is not None and not title.search(alert.title):
                continue
            mapped: dict[str, str] = {}
            if mapping:
                if not document:
                    document.append(source_document(alert))
                mapped = _mapped(mapping, document[0], labels)
                labels = {**labels, **mapped}
                if any(labels.get(label, "") != value for label, value in mapped_equals):
                    continue
                if any(not rx.fullmatch(labels.get(label, "")) for label, rx in mapped_regexes):
                    continue
            incident_type = route.incident_type
            if route.incident_type_label is not None:
                value = labels.get(route.incident_type_label, "")
                if value not in IncidentType.__members__:
                    continue
                incident_type = IncidentType(value)
            normalised = _vocabulary(labels)
            if normalised:
                mapped, labels = {**mapped, **normalised}, {**labels, **normalised}
            severity = route.severity
            if route.severity_label is not None:
                word = labels.get(route.severity_label, "")
                hint = vocabulary.severity(word)
                if hint is not None:
                    severity = hint
                elif word and UNCLASSIFIED_SEVERITY not in labels:  # kept for the analyst: the run records it
                    mapped = {**mapped, UNCLASSIFIED_SEVERITY: word}
            return Routed(route.name, incident_type, severity, _group_key(alert.source.value, alert.fingerprint,
                                                                          labels, route),
                          tuple(route.clients), tuple(mapped.items()))
        if self.routing.default is not None:
            default = self.routing.default
            return Routed("default", default.incident_type, default.severity,
                          _group_key(alert.source.value, alert.fingerprint, alert.labels, None),
                          labels=tuple(_vocabulary(alert.labels).items()))
        severity = source_severity(alert) if self.triage else None
        if severity in self.triage:
            return Routed(TRIAGE_ROUTE, None, severity, f"{TRIAGE_ROUTE}:{alert.source.value}:{alert.fingerprint}")
        return None


def source_severity(alert: Alert) -> Severity | None:
    """The §5 severity the source gives an alert: its `severity` label, else (EventBridge events) a Security Hub
    finding's Severity.Label or a GuardDuty finding's score (7 and above high, 4 and above medium), through the
    vocabulary; None when it gives none or a word the vocabulary does not know."""
    word = alert.labels.get("severity", "")
    if not word and alert.source.value in ("eventbridge", "sns"):
        try:
            found = _SOURCE_SEVERITY.search(source_document(alert))
        except jmespath.exceptions.JMESPathError:
            found = None
        if isinstance(found, int | float) and not isinstance(found, bool):
            found = "high" if found >= 7 else "medium" if found >= 4 else "low"
        word = found if isinstance(found, str) else ""
    return vocabulary.severity(word) if word else None


def _group_key(source: str, fingerprint: str, labels: dict[str, str], route: Route | None) -> str:
    """Alerts with the same key join one incident while it is open."""
    if route is None or not route.group_by:
        return f"{source}:{fingerprint}"
    return f"route:{route.name}:{_digest(tuple((label, labels.get(label, '')) for label in route.group_by))}"


def source_document(alert: Alert) -> Any:
    """What a route's map reads: the event an SNS notification carries (its Message, when JSON), else the payload."""
    raw = alert.raw
    if alert.source.value == "sns" and isinstance(raw, dict) and isinstance(raw.get("Message"), str):
        try:
            return json.loads(raw["Message"])
        except (ValueError, RecursionError):
            return raw
    return raw


def _mapped(mapping: tuple, document: Any, labels: dict[str, str]) -> dict[str, str]:
    """The labels a map sets that the source did not; an expression that finds nothing (or fails) sets nothing."""
    out = {}
    for label, expression in mapping:
        if label in labels:
            continue
        try:
            value = expression.search(document)
        except jmespath.exceptions.JMESPathError:  # e.g. a function given the wrong type by this document
            continue
        text = _text(value)
        if text:
            out[label] = text[:MAX_MAPPED_VALUE]
    return out


def _vocabulary(labels: dict[str, str]) -> dict[str, str]:
    """`data_categories` in the playbooks' words (synonyms replaced, unknown values kept), when that changes it."""
    value = labels.get("data_categories")
    if not value:
        return {}
    known, unclassified = vocabulary.data_categories(value.split(","))
    normalised = ",".join([*known, *unclassified])
    return {"data_categories": normalised} if normalised != value else {}


def _text(value: Any) -> str:
    """A label value: strings as they are, numbers and booleans as JSON writes them, lists of those joined by ','."""
    if value is None or isinstance(value, dict):
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ",".join(text for text in (_text(item) for item in value if not isinstance(item, list)) if text)
    return json.dumps(value)


@lru_cache(maxsize=4096)  # a storm repeats a few groups; JSON and SHA-256 were most of routing's cost
def _digest(values: tuple[tuple[str, str], ...]) -> str:
    """The grouping digest of (label, value) pairs; the journal keeps it, so it never changes."""
    return hashlib.sha256(json.dumps(dict(values), sort_keys=True).encode()).hexdigest()[:16]
