"""Alert routing: playbooks/routing.yaml maps alerts to an incident type and a severity hint.

Routes are tried in order; the first whose matchers all hold decides. An alert no route matches
(and no `default`) is recorded as unrouted and listed at GET /alerts/unrouted: never dropped.
Errors are reported like playbook errors, as FILE:LINE:COL: key.path: message.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flows.playbook import Problem, load_yaml, schema_problems
from irp.errors import PlaybookError
from irp.models import Alert, AlertSource, ClientOrigin, IncidentType, Severity

__all__ = ["Route", "Routed", "Router", "Routing", "load_routing", "routing_json_schema", "validate_routing"]

_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_LABEL = r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Route(_Strict):
    """Alerts matching every matcher open an incident of `incident_type`."""

    name: str = Field(..., pattern=_NAME, description="Unique name, shown on the incident and in metrics.")
    description: str = Field("", description="Why this route exists, for the people who maintain it.")
    source: AlertSource | list[AlertSource] | None = Field(
        None, description="Only alerts from this source (or these sources); any source when absent.")
    labels: dict[str, str] = Field(
        default_factory=dict, description="Label equals value; an empty value matches a missing label.")
    labels_regex: dict[str, str] = Field(
        default_factory=dict, description="Label fully matches the regular expression (Python syntax).")
    title_regex: str | None = Field(None, description="The title contains a match of the regular expression.")
    incident_type: IncidentType | None = Field(None, description="The playbook that responds (policy §2).")
    incident_type_label: str | None = Field(
        None, description="Take the incident type from this label instead (e.g. a SIEM rule's category); "
                          "the route matches only when the label holds a valid incident type.")
    severity: Severity | None = Field(None, description="Initial severity hint passed to the run (policy §5).")
    group_by: list[str] | None = Field(
        None, description="Labels whose values group alerts into one incident; default: one incident per "
                          "alert fingerprint.")
    clients: list[str] = Field(
        default_factory=list, description="The Clients every alert this route matches concerns, as the administrator "
        "states them: trusted for §7 letters (an alert's own tenant label is not). Match on what authenticates the "
        "sender, e.g. an SNS topic or an alert source owned by one Client.")

    def sources(self) -> set[AlertSource] | None:
        if self.source is None:
            return None
        return set(self.source) if isinstance(self.source, list) else {self.source}


class DefaultRoute(_Strict):
    """Where alerts go that no route matches; without it they are recorded as unrouted."""

    incident_type: IncidentType
    severity: Severity | None = None


class Routing(_Strict):
    """The routing file."""

    version: Literal[1] = Field(..., description="Format version of this file: 1.")
    routes: list[Route] = Field(default_factory=list, description="Tried in order; the first match wins.")
    default: DefaultRoute | None = Field(None, description="Route for alerts no route matches.")


@dataclass(frozen=True)
class Routed:
    """Where one alert goes: the route, the incident type, the severity hint and the grouping key."""

    route: str
    incident_type: IncidentType
    severity: Severity | None
    group_key: str
    clients: tuple[str, ...] = ()

    def run_clients(self) -> list[dict]:
        """The run's `clients` parameter: the Clients this route states, trusted for §7 letters."""
        return [ClientOrigin.of(client, "routing", by=f"route {self.route}").model_dump(mode="json")
                for client in self.clients]


def routing_json_schema() -> dict:
    """The JSON Schema of routing.yaml (committed as playbooks/schema/routing.schema.json)."""
    schema = Routing.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "irp alert routing (playbooks/routing.yaml)"
    return schema


def _regexes(routing: Routing) -> list[tuple[tuple, str]]:
    found: list[tuple[tuple, str]] = []
    for index, route in enumerate(routing.routes):
        for label, pattern in route.labels_regex.items():
            found.append((("routes", index, "labels_regex", label), pattern))
        if route.title_regex is not None:
            found.append((("routes", index, "title_regex"), route.title_regex))
    return found


def _semantic_problems(routing: Routing, file: str, positions) -> list[Problem]:
    problems: list[Problem] = []

    def add(loc: tuple, message: str) -> None:
        line, col = positions.find(loc)
        problems.append(Problem(file, line, col, ".".join(map(str, loc)), message))

    seen: dict[str, int] = {}
    for index, route in enumerate(routing.routes):
        if route.name in seen:
            add(("routes", index, "name"), f"duplicate route name {route.name!r} (first at routes.{seen[route.name]})")
        seen.setdefault(route.name, index)
        if (route.incident_type is None) == (route.incident_type_label is None):
            add(("routes", index), "set exactly one of incident_type and incident_type_label")
        extra = [route.incident_type_label] if route.incident_type_label else []
        for label in [*route.labels, *route.labels_regex, *(route.group_by or []), *extra]:
            if not re.match(_LABEL, label):
                add(("routes", index), f"invalid label name {label!r}: use letters, digits, '_', '.' and '-'")
    for loc, pattern in _regexes(routing):
        try:
            re.compile(pattern)
        except re.error as exc:
            add(loc, f"invalid regular expression {pattern!r}: {exc}")
    return problems


def _load(path: Path) -> tuple[Routing | None, list[Problem], str]:
    """(routing, problems, SHA-256 of the bytes read; "" when the file could not be read)."""
    try:
        document, positions, _text, data = load_yaml(path)
    except PlaybookError as exc:
        return None, list(exc.problems), ""
    digest = hashlib.sha256(data).hexdigest()
    try:
        routing = Routing.model_validate(document)
    except ValidationError as exc:
        return None, schema_problems(exc, Routing, str(path), positions), digest
    return routing, _semantic_problems(routing, str(path), positions), digest


def validate_routing(path: Path) -> list[Problem]:
    """Every problem of a routing file, each printed as FILE:LINE:COL: key.path: message; [] when valid."""
    return _load(path)[1]


def load_routing(path: Path) -> Routing:
    """Read and check a routing file; PlaybookError lists every problem."""
    return Router.from_file(path).routing


class Router:
    """Matches alerts against a loaded routing file; `sha256` is the digest of the file's bytes."""

    def __init__(self, routing: Routing, sha256: str = "") -> None:
        self.routing = routing
        self.sha256 = sha256
        self._compiled = [
            (
                route,
                route.sources(),
                tuple(route.labels.items()),
                tuple((label, re.compile(pattern)) for label, pattern in route.labels_regex.items()),
                re.compile(route.title_regex) if route.title_regex is not None else None,
            )
            for route in routing.routes
        ]

    @classmethod
    def from_file(cls, path: Path) -> Router:
        """Read and check a routing file; PlaybookError lists every problem."""
        routing, problems, digest = _load(path)
        if problems or routing is None:
            raise PlaybookError(problems)
        return cls(routing, digest)

    def route(self, alert: Alert) -> Routed | None:
        """Where `alert` goes, or None when no route matches and there is no default."""
        labels = alert.labels
        for route, sources, equals, regexes, title in self._compiled:
            if sources is not None and alert.source not in sources:
                continue
            if equals and any(labels.get(label, "") != value for label, value in equals):
                continue
            if regexes and any(not rx.fullmatch(labels.get(label, "")) for label, rx in regexes):
                continue
            if title is not None and not title.search(alert.title):
                continue
            incident_type = route.incident_type
            if route.incident_type_label is not None:
                value = alert.labels.get(route.incident_type_label, "")
                if value not in IncidentType.__members__:
                    continue
                incident_type = IncidentType(value)
            return Routed(route.name, incident_type, route.severity, _group_key(alert, route), tuple(route.clients))
        if self.routing.default is not None:
            default = self.routing.default
            return Routed("default", default.incident_type, default.severity, _group_key(alert, None))
        return None


def _group_key(alert: Alert, route: Route | None) -> str:
    """Alerts with the same key join one incident while it is open."""
    if route is None or not route.group_by:
        return f"{alert.source.value}:{alert.fingerprint}"
    labels = alert.labels
    return f"route:{route.name}:{_digest(tuple((label, labels.get(label, '')) for label in route.group_by))}"


@lru_cache(maxsize=4096)  # a storm repeats a few groups; JSON and SHA-256 were most of routing's cost
def _digest(values: tuple[tuple[str, str], ...]) -> str:
    """The grouping digest of (label, value) pairs; the journal keeps it, so it never changes."""
    return hashlib.sha256(json.dumps(dict(values), sort_keys=True).encode()).hexdigest()[:16]
