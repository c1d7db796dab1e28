"""Alert routing: matching alerts against playbooks/routing.yaml to an incident type and a severity hint.

Routes are tried in order; the first whose matchers all hold decides. An alert no route matches
(and no `default`) is recorded as unrouted and listed at GET /alerts/unrouted: never dropped.
The file's models, loader and checks are in irp/playbook/ (errors as FILE:LINE:COL: key.path: message).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from irp.errors import PlaybookError
from irp.models import Alert, ClientOrigin, IncidentType, Severity
from irp.playbook.loader import load_routing_file
from irp.playbook.models import Route, Routing

__all__ = ["Routed", "Router"]


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
        routing, problems, digest = load_routing_file(path)
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
