"""HTML reports: the post-incident review (§11) and the monthly summary, self-contained pages.

Rendered with jinja2's SandboxedEnvironment, autoescaped and StrictUndefined: incident data is
data, never markup. Charts are SVG drawn by matplotlib (irp/charts.py; it escapes the labels) and are
the only values marked safe.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, date, datetime
from typing import Any

from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from irp.charts import line_chart_svg, stacked_bars_svg
from irp.errors import IrpError
from irp.metrics import (
    MEAN_NAMES,
    METRICS,
    IncidentMetrics,
    aggregate,
    format_duration,
    measure_incident,
)
from irp.models import Incident, IncidentType, Severity

__all__ = ["MonthlyReport", "monthly_report", "parse_month", "render_monthly_html", "render_review_html"]

_ENV = SandboxedEnvironment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_ENV.filters["duration"] = format_duration
_ENV.filters["utc"] = lambda value: f"{value:%Y-%m-%d %H:%M:%S}" if value else "—"

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:980px;margin:2em auto;padding:0
1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;width:100%}th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;
vertical-align:top;font-size:.92em}th{background:#f5f5f5}.met{color:#2e7d32}.missed{color:#c62828;font-weight:bold}
.pending,.na{color:#777}code{font-size:.9em}.muted{color:#666}figure{margin:1em 0;overflow-x:auto}
"""

_REVIEW = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Post-incident review — {{ incident.id }}</title><style>{{ css }}</style></head>
<body>
<h1>Post-incident review — {{ incident.id }}</h1>
<p><strong>{{ incident.title }}</strong></p>
<table>
<tr><th>Type</th><td>{{ incident.type.label }} (<code>{{ incident.type.value }}</code>)</td></tr>
<tr><th>Severity</th><td>{{ incident.severity.value }} — {{ incident.severity_reason or
incident.severity.description }}</td></tr>
<tr><th>Status</th><td>{{ incident.status.value }}</td></tr>
<tr><th>Detected</th><td>{{ incident.detected_at | utc }} UTC</td></tr>
<tr><th>Aware</th><td>{{ incident.aware_at | utc }} UTC</td></tr>
<tr><th>Clients</th><td>{{ incident.affected_clients | join(', ') or 'none known' }}</td></tr>
<tr><th>Systems</th><td>{{ incident.affected_systems | join(', ') or 'none known' }}</td></tr>
<tr><th>Personal data</th><td>{% if incident.personal_data.involved %}yes: {{
incident.personal_data.categories | join(', ') or 'categories unknown' }}{% else %}no{% endif %}</td></tr>
<tr><th>Escalated</th><td>{{ 'yes' if incident.escalated else 'no' }}</td></tr>
{% if incident.playbook %}
<tr><th>Playbook</th><td>{{ incident.playbook.name }} v{{ incident.playbook.version }} (policy {{
incident.playbook.policy_version }}, sha256 <code>{{ incident.playbook.sha256 }}</code>)</td></tr>
{% endif %}
</table>

<h2>Summary</h2>
<p>{{ incident.summary or 'No summary recorded.' }}</p>

<h2>Timeline</h2>
<figure>{{ chart }}</figure>
<table><tr><th>Time (UTC)</th><th>Kind</th><th>Event</th><th>By</th></tr>
{% for e in incident.timeline %}
<tr><td>{{ e.at | utc }}</td><td>{{ e.kind }}</td><td>{{ e.message }}</td><td>{{ e.actor }}</td></tr>
{% endfor %}
</table>

<h2>Response metrics</h2>
<table><tr><th>Measure</th><th>From</th><th>Reached</th><th>Duration</th><th>Target</th><th>Deadline</th></tr>
{% for name, m in metrics.measures.items() %}
<tr><td>{{ name }}</td><td>{{ m.started_at | utc }}</td><td>{{ m.reached_at | utc }}</td>
<td>{{ m.seconds | duration }}</td><td>{{ m.target_seconds | duration }}</td>
<td class="{{ 'na' if m.state == 'n/a' else m.state }}">{{ m.state }}</td></tr>
{% endfor %}
</table>

<h2>Root cause</h2>
<p>{{ root_cause }}</p>

<h2>What worked</h2>
{% if worked %}<ul>{% for line in worked %}<li>{{ line }}</li>{% endfor %}</ul>
{% else %}<p class="muted">Nothing recorded.</p>{% endif %}

<h2>What did not</h2>
{% if did_not %}<ul>{% for line in did_not %}<li>{{ line }}</li>{% endfor %}</ul>
{% else %}<p class="muted">Nothing recorded.</p>{% endif %}

<h2>Corrective actions</h2>
{% if corrective %}
<table><tr><th>Id</th><th>Action</th><th>Owner</th><th>Due (UTC)</th><th>Status</th></tr>
{% for a in corrective %}
<tr><td>{{ a.id }}</td><td>{{ a.title }}{% if a.details %}
<br><span class="muted">{{ a.details }}</span>{% endif %}</td>
<td>{{ a.owner }}</td><td>{{ a.due_at | utc }}</td>
<td>{{ a.status }}{% if a.closed_at %} {{ a.closed_at | utc }} by {{ a.closed_by }}: {{ a.resolution }}{%
endif %}</td></tr>
{% endfor %}
</table>
{% else %}<p class="muted">None assigned.</p>{% endif %}

<h2>Response measures</h2>
{% if measures %}
<table><tr><th>Id</th><th>Stage</th><th>Measure</th><th>Owner</th><th>Due (UTC)</th><th>Status</th></tr>
{% for a in measures %}
<tr><td>{{ a.id }}</td><td>{{ a.stage.value }}</td><td>{{ a.title }}</td><td>{{ a.owner }}</td>
<td>{{ a.due_at | utc }}</td><td>{{ a.status }}</td></tr>
{% endfor %}
</table>
{% else %}<p class="muted">None assigned.</p>{% endif %}

<h2>Stages</h2>
<table><tr><th>Stage</th><th>Status</th><th>Started</th><th>Ended</th><th>Duration</th></tr>
{% for s in incident.stages %}
<tr><td>{{ s.stage.value }}{% if s.phase %} ({{ s.phase }}){% endif %}</td><td>{{ s.status.value }}</td>
<td>{{ s.started_at | utc }}</td><td>{{ s.ended_at | utc }}</td>
<td>{{ (s.ended_at - s.started_at).total_seconds() | duration }}</td></tr>
{% endfor %}
</table>

<h2>Evidence</h2>
<table><tr><th>Item</th><th>SHA-256</th><th>Size</th><th>Collected (UTC)</th></tr>
{% for item in evidence %}
<tr><td>{{ item.name }}</td><td><code>{{ item.sha256 }}</code></td><td>{{ item.size }}</td>
<td>{{ item.collected_at | utc }}</td></tr>
{% endfor %}
</table>
<p class="muted">Generated {{ generated_at | utc }} UTC by irp. Every item above is archived with its SHA-256 in the
evidence manifest; <code>irp evidence verify {{ incident.id }}</code> re-hashes them.</p>
</body></html>
"""


def render_review_html(context: dict[str, Any], chart_svg: str) -> str:
    """The review page; `context` holds incident, metrics, root_cause, worked, did_not, corrective,
    measures, evidence, generated_at."""
    return _ENV.from_string(_REVIEW).render(**context, chart=Markup(chart_svg), css=Markup(_CSS))


# ---- the monthly summary ------------------------------------------------------------------------

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


_MONTHLY = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ report.title }}</title><style>{{ css }}</style></head>
<body>
<h1>{{ report.title }}</h1>
<p>{{ report.incidents | length }} incident(s) detected in {{ '%04d-%02d' % (report.month.year, report.month.month) }}
(UTC); store <code>{{ store }}</code>. Targets per severity: IRP_RESPONSE_TARGETS_MINUTES.</p>

<h2>By type and severity</h2>
<figure>{{ charts.by_type }}</figure>
<table><tr><th>Type</th>{% for s in severities %}<th>{{ s }}</th>{% endfor %}<th>Total</th></tr>
{% for t, counts in report.by_type.items() %}{% if counts.values() | sum %}
<tr><td>{{ t.label }} (<code>{{ t.value }}</code>)</td>{% for s in severities %}<td>{{ counts[s] }}</td>{% endfor %}
<td>{{ counts.values() | sum }}</td></tr>
{% endif %}{% endfor %}
</table>

<h2>Mean times</h2>
<table><tr><th>Group</th><th>Incidents</th>{% for m in metrics %}<th>{{ mean_names[m] }}</th>{% endfor %}</tr>
{% for a in report.aggregates %}
<tr><td>{{ a.group }}{% if a.group != 'all' %}: {{ a.key }}{% endif %}</td><td>{{ a.incidents }}</td>
{% for m in metrics %}<td>{{ a.mean_seconds[m] | duration }}</td>{% endfor %}</tr>
{% endfor %}
</table>

<h2>MTTR trend</h2>
<figure>{{ charts.trend }}</figure>
<table><tr><th>Month</th><th>Incidents</th>{% for name in report.trend %}<th>{{ name }} (h)</th>{% endfor %}</tr>
{% for label in report.trend_labels %}{% set i = loop.index0 %}
<tr><td>{{ label }}</td><td>{{ report.trend_counts[i] }}</td>
{% for name, points in report.trend.items() %}
<td>{{ '%.2f' % points[i] if points[i] is not none else '—' }}</td>{% endfor %}</tr>
{% endfor %}
</table>

<h2>Deadlines met</h2>
<figure>{{ charts.deadlines }}</figure>
<table><tr><th>Group</th>{% for m in metrics %}<th>{{ m }}</th>{% endfor %}</tr>
{% for a in report.aggregates %}
<tr><td>{{ a.group }}{% if a.group != 'all' %}: {{ a.key }}{% endif %}</td>
{% for m in metrics %}<td>{{ '%d/%d' % (a.met[m], a.decided[m]) if a.decided[m] else '—' }}</td>
{%- endfor %}</tr>
{% endfor %}
</table>

<h2>Incidents</h2>
<table><tr><th>Id</th><th>Detected (UTC)</th><th>Type</th><th>Severity</th><th>Status</th><th>Title</th>
{% for m in metrics %}<th>{{ m }}</th>{% endfor %}</tr>
{% for incident in report.incidents %}{% set im = report.metrics[loop.index0] %}
<tr><td>{{ incident.id }}</td><td>{{ incident.detected_at | utc }}</td><td>{{ incident.type.value }}</td>
<td>{{ incident.severity.value }}</td><td>{{ incident.status.value }}</td><td>{{ incident.title }}</td>
{% for m in metrics %}{% set x = im.measures[m] %}
<td class="{{ 'na' if x.state == 'n/a' else x.state }}">{{ x.seconds | duration }} {{ x.state }}</td>{% endfor %}</tr>
{% endfor %}
</table>
<p class="muted">Generated {{ generated_at | utc }} UTC by <code>irp report monthly</code> from the incident
records of the
evidence store (independent of Prefect's database).</p>
</body></html>
"""


def monthly_report(incidents: list[Incident], month: date, *, now: datetime | None = None) -> MonthlyReport:
    """The month's figures: incidents detected that month, their metrics, a six-month trend."""
    return MonthlyReport(month, incidents, now=now)


def render_monthly_html(report: MonthlyReport, *, store: str, generated_at: datetime) -> str:
    charts = {name: Markup(svg) for name, svg in report.charts().items()}
    return _ENV.from_string(_MONTHLY).render(
        report=report, charts=charts, css=Markup(_CSS), store=store, generated_at=generated_at,
        severities=[s.value for s in Severity], metrics=METRICS, mean_names=MEAN_NAMES)
