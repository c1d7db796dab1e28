"""Charts of the review and monthly reports, drawn by matplotlib's SVG backend (no pyplot, no state).

Text stays text (`svg.fonttype: none`), escaped by matplotlib, so the SVG can be inlined in an
autoescaped HTML page as markup. Each drawn element carries an id (`stage-N`, `marker-N`,
`bar-N-M`, `point-N-M`) so tests and stylesheets can find it.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime

import matplotlib
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from irp.models import Incident, StepStatus
from irp.reports.kpis import format_duration

__all__ = ["line_chart_svg", "stacked_bars_svg", "timeline_svg"]

STYLE = {
    "svg.fonttype": "none",  # labels as <text>, searchable and selectable
    "svg.hashsalt": "irp",  # the same chart gives the same SVG
    "font.family": ["DejaVu Sans", "sans-serif"],
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e0e0e0",
    "axes.axisbelow": True,
}
STATUS_COLOURS = {StepStatus.completed: "#2e7d32", StepStatus.failed: "#c62828", StepStatus.skipped: "#9e9e9e"}
MARKERS = {  # timeline entry kind -> (row label, colour)
    "approval": ("approvals", "#6a1b9a"),
    "notification": ("notifications", "#1565c0"),
    "escalation": ("escalations", "#c62828"),
    "stop": ("escalations", "#c62828"),
}
PALETTE = ["#1565c0", "#ef6c00", "#2e7d32", "#6a1b9a", "#c62828", "#00838f"]
DPI = 100
UNITS = {"h": "hours", "min": "minutes", "s": "seconds", "d": "days"}


def _figure(width: int, height: float) -> Figure:
    with matplotlib.rc_context(STYLE):
        return Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")


def _svg(figure: Figure) -> str:
    """The figure as inline SVG: no XML prolog or DOCTYPE, no creation date."""
    buffer = io.StringIO()
    with matplotlib.rc_context(STYLE):
        FigureCanvasSVG(figure).print_svg(buffer, metadata={"Date": None, "Creator": "irp"})
    text = buffer.getvalue()
    return text[text.index("<svg"):].strip()


def _utc(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(tzinfo=None)


def timeline_svg(incident: Incident, *, width: int = 820) -> str:
    """The response as a Gantt chart: one bar per stage run, markers for approvals, notifications, escalations."""
    stages = incident.stages
    events = [(e.at, *MARKERS[e.kind], e.message) for e in incident.timeline if e.kind in MARKERS]
    times = [t for s in stages for t in (s.started_at, s.ended_at)] + [e[0] for e in events] + [incident.aware_at]
    start, end = min(times), max(times)
    span = max((end - start).total_seconds(), 1.0)
    detected_in_view = 0 <= (start - incident.detected_at).total_seconds() <= span * 0.5
    if detected_in_view:
        start = min(start, incident.detected_at)
    marker_rows = list(dict.fromkeys(label for _, label, _, _ in events))
    labels = [f"{s.stage.value} ({s.phase})" if s.phase else s.stage.value for s in stages] + marker_rows
    figure = _figure(width, 90 + 24 * max(len(labels), 1))
    with matplotlib.rc_context(STYLE):
        axes = figure.add_subplot()
        axes.set_title(f"{incident.id} — response timeline (UTC)", loc="left", fontweight="bold")
        for i, s in enumerate(stages):
            left = date2num(_utc(s.started_at))
            length = max(date2num(_utc(s.ended_at)) - left, span / 86400 / 400)  # an instant stays visible
            axes.barh(i, length, left=left, height=0.6, color=STATUS_COLOURS[s.status], gid=f"stage-{i}")
        for n, (at, row_label, colour, _message) in enumerate(events):
            row = len(stages) + marker_rows.index(row_label)
            axes.plot([date2num(_utc(at))], [row], "o", color=colour, markersize=7, gid=f"marker-{n}")
        axes.set_yticks(range(len(labels)), labels)
        axes.invert_yaxis()
        axes.grid(axis="y", visible=False)
        locator = AutoDateLocator(minticks=3, maxticks=8)
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(ConciseDateFormatter(locator, show_offset=True))
        if detected_in_view:
            axes.axvline(date2num(_utc(incident.detected_at)), color="#ef6c00", linestyle="--", linewidth=1)
            axes.annotate("detected", (date2num(_utc(incident.detected_at)), 0), xycoords=("data", "axes fraction"),
                          xytext=(3, 3), textcoords="offset points", color="#ef6c00")
            note = f"start {start:%Y-%m-%d %H:%M:%S} UTC"
        else:
            before = (start - incident.detected_at).total_seconds()
            note = (f"start {start:%Y-%m-%d %H:%M:%S} UTC; detected {format_duration(abs(before))} "
                    f"{'before' if before >= 0 else 'after'} that ({incident.detected_at:%Y-%m-%d %H:%M:%S})")
        figure.supxlabel(note, x=0.01, ha="left", fontsize=8, color="#555")
    return _svg(figure)


def _legend(axes, handles: list, names: list[str]) -> None:
    if handles:
        axes.legend(handles, names, loc="lower left", bbox_to_anchor=(0, 1.02), ncols=len(names), frameon=False,
                    handlelength=1, borderaxespad=0)


def stacked_bars_svg(title: str, rows: list[tuple[str, dict[str, float]]], segments: list[str],
                     *, colours: dict[str, str] | None = None, width: int = 820, suffix: str = "") -> str:
    """Horizontal stacked bars: one row per label, one coloured segment per key of `segments`."""
    colours = colours or {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(segments)}
    figure = _figure(width, 100 + 24 * max(len(rows), 1))
    with matplotlib.rc_context(STYLE):
        axes = figure.add_subplot()
        axes.set_title(title, loc="left", fontweight="bold", pad=22)
        handles = []
        lefts = [0.0] * len(rows)
        for m, segment in enumerate(segments):
            values = [row.get(segment, 0) for _, row in rows]
            bars = axes.barh(range(len(rows)), values, left=lefts, height=0.6, color=colours[segment], label=segment)
            for n, bar in enumerate(bars):
                bar.set_gid(f"bar-{n}-{m}")
            handles.append(bars)
            lefts = [a + b for a, b in zip(lefts, values, strict=True)]
        for n, total in enumerate(lefts):
            axes.annotate(f"{total:g}{suffix}", (total, n), xytext=(4, 0), textcoords="offset points", va="center",
                          color="#555")
        axes.set_yticks(range(len(rows)), [label for label, _ in rows])
        axes.invert_yaxis()
        axes.grid(axis="y", visible=False)
        axes.set_xlim(0, max(lefts + [1]) * 1.12)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        if not rows:
            axes.text(0.5, 0.5, "no data", transform=axes.transAxes, ha="center", color="#555")
        _legend(axes, handles, segments)
    return _svg(figure)


def line_chart_svg(title: str, labels: list[str], series: dict[str, list[float | None]], *,
                   width: int = 820, height: int = 260, unit: str = "h") -> str:
    """A line per series over `labels` (e.g. months); None leaves a gap."""
    figure = _figure(width, height)
    with matplotlib.rc_context(STYLE):
        axes = figure.add_subplot()
        axes.set_title(title, loc="left", fontweight="bold", pad=22)
        handles = []
        for n, points in enumerate(series.values()):
            values = [float("nan") if v is None else v for v in points]
            (line,) = axes.plot(range(len(values)), values, "-o", color=PALETTE[n % len(PALETTE)], markersize=4,
                                linewidth=2, gid=f"series-{n}")
            handles.append(line)
        axes.set_xticks(range(len(labels)), labels)
        axes.set_ylabel(UNITS.get(unit, unit))
        axes.set_ylim(bottom=0)
        if not any(v is not None for points in series.values() for v in points):
            axes.text(0.5, 0.5, "no data", transform=axes.transAxes, ha="center", color="#555")
            axes.set_ylim(0, 1)
        _legend(axes, handles, list(series))
    return _svg(figure)
