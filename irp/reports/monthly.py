"""The monthly summary (policy §11): the month's incidents, their response metrics and a six-month trend."""

from __future__ import annotations

import calendar
import re
from datetime import UTC, date, datetime

from markupsafe import Markup

from irp.errors import IrpError
from irp.models import Incident, IncidentType, Severity
from irp.reports.charts import line_chart_svg, stacked_bars_svg
from irp.reports.html import render_page
from irp.reports.kpis import (
    MEAN_NAMES,
    METRICS,
    IncidentMetrics,
    aggregate,
    measure_incident,
)

__all__ = ["MonthlyReport", "monthly_report", "parse_month", "render_monthly_html"]

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def parse_month(text: str | None, today: date | None = None) -> date:
    """The first day of YYYY-MM (default: the current month)."""
    if not text:
        today = today or datetime.now(UTC).date()
        return today.replace(day=1)
    match = _MONTH.match(text.strip())
    if not match or not 1 <= int(match[2]) <= 12:
        raise IrpError(f"--month {text!r}: not a month; use YYYY-MM, e.g. 2026-11")
    return date(int(match[1]), int(match[2]), 1)


def _shift(month: date, months: int) -> date:
    index = month.year * 12 + month.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _in_month(incident: Incident, month: date) -> bool:
    at = incident.detected_at.astimezone(UTC)
    return (at.year, at.month) == (month.year, month.month)


class MonthlyReport:
    """What the monthly summary shows; computed once, rendered as HTML (and counted by tests)."""

    def __init__(self, month: date, incidents: list[Incident], *, trend_months: int = 6,
                 now: datetime | None = None) -> None:
        self.month = month
        self.now = now
        self.incidents = sorted((i for i in incidents if _in_month(i, month)), key=lambda i: i.detected_at)
        self.metrics: list[IncidentMetrics] = [measure_incident(i, now=now) for i in self.incidents]
        self.aggregates = aggregate(self.metrics)
        self.by_type = {t: {s.value: 0 for s in Severity} for t in IncidentType}
        for incident in self.incidents:
            self.by_type[incident.type][incident.severity.value] += 1
        self.trend_labels: list[str] = []
        self.trend: dict[str, list[float | None]] = {MEAN_NAMES[m]: [] for m in ("acknowledge", "contain", "restore")}
        self.trend_counts: list[int] = []
        for back in range(trend_months - 1, -1, -1):
            month_start = _shift(month, -back)
            selected = [measure_incident(i, now=now) for i in incidents if _in_month(i, month_start)]
            overall = aggregate(selected)[0]
            self.trend_labels.append(f"{month_start:%Y-%m}")
            self.trend_counts.append(len(selected))
            for metric in ("acknowledge", "contain", "restore"):
                seconds = overall.mean_seconds[metric]
                self.trend[MEAN_NAMES[metric]].append(None if seconds is None else seconds / 3600)

    @property
    def title(self) -> str:
        return f"Incident summary — {calendar.month_name[self.month.month]} {self.month.year}"

    def charts(self) -> dict[str, str]:
        colours = {"critical": "#c62828", "major": "#ef6c00", "minor": "#fbc02d"}
        by_type = [(t.value, {s: float(n) for s, n in counts.items()})
                   for t, counts in self.by_type.items() if sum(counts.values())]
        overall = self.aggregates[0]
        met_rows = [(m, {"met": float(overall.met[m]), "missed": float(overall.decided[m] - overall.met[m])})
                    for m in METRICS]
        return {
            "by_type": stacked_bars_svg("Incidents by type and severity", by_type, ["critical", "major", "minor"],
                                        colours=colours),
            "trend": line_chart_svg(f"Mean times over {len(self.trend_labels)} months (hours)",
                                    self.trend_labels, self.trend),
            "deadlines": stacked_bars_svg("Deadlines met (incidents of the month)", met_rows, ["met", "missed"],
                                          colours={"met": "#2e7d32", "missed": "#c62828"}),
        }


def monthly_report(incidents: list[Incident], month: date, *, now: datetime | None = None) -> MonthlyReport:
    """The month's figures: incidents detected that month, their metrics, a six-month trend."""
    return MonthlyReport(month, incidents, now=now)


def render_monthly_html(report: MonthlyReport, *, store: str, generated_at: datetime) -> str:
    charts = {name: Markup(svg) for name, svg in report.charts().items()}
    return render_page(
        "monthly.html.j2", report=report, charts=charts, store=store, generated_at=generated_at,
        severities=[s.value for s in Severity], metrics=METRICS, mean_names=MEAN_NAMES)
