"""Response metrics (policy §3 "détecter rapidement… restaurer les Services", §11): per incident and aggregated.

Four durations per incident, each against a target for its severity (IRP_RESPONSE_TARGETS_MINUTES):

    acknowledge  detection (the source's observed_at) → awareness (the incident opened, aware_at)
    contain      detection → the contain stage ended (its measures closed, or a responder ended it)
    restore      detection → the restore stage ended (a responder confirmed service and data are back)
    notify       awareness → the first notification delivered (one rendered but not sent never counts)

A measure is `met` or `missed` once reached; before that it is `pending` until its target has
passed (then `missed`); on an ended incident that owed no notification, notify is `n/a`.
Means over the incidents that reached a measure give MTTA, MTTC, MTTR and MTTN.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from statistics import mean
from typing import Any, Literal

from pydantic import BaseModel, Field

from irp.errors import ConfigurationError
from irp.lifecycle import stage_end
from irp.models import Incident, IncidentStatus, Severity, Stage, utcnow
from irp.notifications.obligations import notifications_of
from irp.settings import get_settings

__all__ = [
    "METRICS",
    "Aggregate",
    "IncidentMetrics",
    "Measure",
    "aggregate",
    "format_duration",
    "measure_incident",
    "targets",
]

METRICS = ("acknowledge", "contain", "restore", "notify")
MEAN_NAMES = {"acknowledge": "MTTA", "contain": "MTTC", "restore": "MTTR", "notify": "MTTN"}
DEFAULT_TARGETS_MINUTES: dict[str, dict[str, float]] = {
    "critical": {"acknowledge": 15, "contain": 240, "restore": 1440, "notify": 1440},
    "major": {"acknowledge": 60, "contain": 1440, "restore": 4320, "notify": 4320},
    "minor": {"acknowledge": 480, "contain": 4320, "restore": 10080, "notify": 4320},
}

State = Literal["met", "missed", "pending", "n/a"]


class Measure(BaseModel):
    """One duration of one incident against its target."""

    metric: str
    started_at: datetime = Field(..., description="When this clock starts: detection, or awareness for notify.")
    reached_at: datetime | None = Field(None, description="When the milestone was reached, if it was.")
    seconds: float | None = Field(None, description="reached_at - started_at, in seconds.")
    target_seconds: float
    state: State

    @property
    def met(self) -> bool | None:
        """True or False once decided, None while pending or not applicable."""
        return {"met": True, "missed": False}.get(self.state)


class IncidentMetrics(BaseModel):
    """The four measures of one incident."""

    incident_id: str
    type: str
    severity: Severity
    status: IncidentStatus
    detected_at: datetime
    measures: dict[str, Measure]


class Aggregate(BaseModel):
    """Means and deadlines met over a group of incidents (all, one type, one severity)."""

    group: str = Field(..., description="all, type or severity.")
    key: str = Field(..., description="The type or severity; 'all' for everything.")
    incidents: int
    mean_seconds: dict[str, float | None] = Field(..., description="Per metric: mean over incidents that reached it.")
    met: dict[str, int] = Field(..., description="Per metric: how many met their target.")
    decided: dict[str, int] = Field(..., description="Per metric: how many are met or missed (not pending, not n/a).")

    def met_ratio(self, metric: str) -> float | None:
        return self.met[metric] / self.decided[metric] if self.decided[metric] else None


def targets(raw: dict[str, dict[str, float]] | None = None) -> dict[Severity, dict[str, float]]:
    """Target seconds per severity and metric: the defaults, overridden by IRP_RESPONSE_TARGETS_MINUTES."""
    if raw is None:
        raw = get_settings().response_targets_minutes
    table = {severity: dict(DEFAULT_TARGETS_MINUTES[severity.value]) for severity in Severity}
    for severity_name, values in (raw or {}).items():
        if severity_name not in Severity.__members__:
            raise ConfigurationError(
                f"IRP_RESPONSE_TARGETS_MINUTES: unknown severity {severity_name!r}; "
                f"valid: {', '.join(s.value for s in Severity)}")
        if not isinstance(values, dict):
            raise ConfigurationError(
                f"IRP_RESPONSE_TARGETS_MINUTES: {severity_name} must map metrics to minutes, "
                f'e.g. {{"contain": 240}}; got {values!r}')
        for metric, minutes in values.items():
            if metric not in METRICS:
                raise ConfigurationError(f"IRP_RESPONSE_TARGETS_MINUTES: {severity_name}.{metric}: unknown metric; "
                                         f"valid: {', '.join(METRICS)}")
            if isinstance(minutes, bool) or not isinstance(minutes, int | float) or minutes <= 0:
                raise ConfigurationError(f"IRP_RESPONSE_TARGETS_MINUTES: {severity_name}.{metric}: "
                                         f"{minutes!r} is not a positive number of minutes")
            table[Severity(severity_name)][metric] = float(minutes)
    return {severity: {m: v * 60 for m, v in row.items()} for severity, row in table.items()}


def first_notification_at(incident: Incident) -> datetime | None:
    """When the first notification was delivered (to at least one recipient), by a run or from outside one."""
    found = [r.at for r in notifications_of(incident) if r.status in ("sent", "partial")]
    return min(found) if found else None


def measure_incident(incident: Incident, *, now: datetime | None = None,
                     target_table: dict[Severity, dict[str, float]] | None = None) -> IncidentMetrics:
    """The four measures of `incident` as of `now` (default: the current time)."""
    now = now or utcnow()
    table = target_table or targets()
    limits = table[incident.severity]
    ended = incident.status.ended
    contained, restored = stage_end(incident, Stage.contain), stage_end(incident, Stage.restore)
    milestones = {
        "acknowledge": (incident.detected_at, incident.aware_at),
        "contain": (incident.detected_at, contained.at if contained else None),
        "restore": (incident.detected_at, restored.at if restored else None),
        "notify": (incident.aware_at, first_notification_at(incident)),
    }
    measures = {}
    for metric, (start, reached) in milestones.items():
        target = limits[metric]
        if reached is not None:
            seconds = max(0.0, (reached - start).total_seconds())
            state: State = "met" if seconds <= target else "missed"
        else:
            seconds = None
            if metric == "notify" and ended and not incident.obligations:
                state = "n/a"
            else:
                state = "missed" if (now - start).total_seconds() > target else "pending"
        measures[metric] = Measure(metric=metric, started_at=start, reached_at=reached, seconds=seconds,
                                   target_seconds=target, state=state)
    return IncidentMetrics(incident_id=incident.id, type=incident.type.value, severity=incident.severity,
                           status=incident.status, detected_at=incident.detected_at, measures=measures)


def _aggregate(group: str, key: str, rows: list[IncidentMetrics]) -> Aggregate:
    means: dict[str, float | None] = {}
    met: dict[str, int] = {}
    decided: dict[str, int] = {}
    for metric in METRICS:
        values = [r.measures[metric].seconds for r in rows if r.measures[metric].seconds is not None]
        means[metric] = mean(values) if values else None
        states = [r.measures[metric].state for r in rows]
        met[metric] = states.count("met")
        decided[metric] = states.count("met") + states.count("missed")
    return Aggregate(group=group, key=key, incidents=len(rows), mean_seconds=means, met=met, decided=decided)


def aggregate(rows: Iterable[IncidentMetrics]) -> list[Aggregate]:
    """One aggregate over everything, then one per type and one per severity (most severe first)."""
    rows = list(rows)
    result = [_aggregate("all", "all", rows)]
    for type_name in sorted({r.type for r in rows}):
        result.append(_aggregate("type", type_name, [r for r in rows if r.type == type_name]))
    for severity in Severity:
        selected = [r for r in rows if r.severity == severity]
        if selected:
            result.append(_aggregate("severity", severity.value, selected))
    return result


def format_duration(seconds: float | None) -> str:
    """12s, 4m 05s, 3h 07m, 2d 04h; an em dash for None."""
    if seconds is None:
        return "—"
    total = int(round(seconds))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def measure_cell(measure: Measure) -> str:
    """`4m 05s (met, target 4h 00m)` — one measure for a table cell."""
    value = format_duration(measure.seconds) if measure.seconds is not None else "not reached"
    return f"{value} ({measure.state}, target {format_duration(measure.target_seconds)})"


def metrics_rows(metrics: IncidentMetrics) -> list[dict[str, Any]]:
    """The measures of one incident as table rows (Prefect table artifact, CLI --json)."""
    return [
        {
            "metric": name,
            "from": m.started_at.isoformat(),
            "reached_at": m.reached_at.isoformat() if m.reached_at else None,
            "duration": format_duration(m.seconds),
            "seconds": m.seconds,
            "target": format_duration(m.target_seconds),
            "state": m.state,
        }
        for name, m in metrics.measures.items()
    ]


def aggregate_rows(aggregates: list[Aggregate]) -> list[dict[str, Any]]:
    """Aggregates as table rows: group, incidents, MTTA/MTTC/MTTR/MTTN and deadlines met."""
    rows = []
    for a in aggregates:
        row: dict[str, Any] = {"group": a.group, "key": a.key, "incidents": a.incidents}
        for metric in METRICS:
            row[MEAN_NAMES[metric]] = format_duration(a.mean_seconds[metric])
        for metric in METRICS:
            row[f"{metric} met"] = f"{a.met[metric]}/{a.decided[metric]}" if a.decided[metric] else "—"
        rows.append(row)
    return rows


def aggregate_markdown(aggregates: list[Aggregate]) -> str:
    """Aggregates as a markdown table."""
    rows = aggregate_rows(aggregates)
    if not rows:
        return "_No incidents._\n"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(str(row[h]) for h in header) + " |")
    return "\n".join(lines) + "\n"
