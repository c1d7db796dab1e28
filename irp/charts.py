"""Charts as plain SVG text: an incident's timeline, stacked bars and a line chart; no plotting library.

Every label is escaped here, so the SVG can be inlined in an autoescaped HTML page as markup.
"""

from __future__ import annotations

from datetime import datetime
from html import escape

from irp.metrics import format_duration
from irp.models import Incident, StepStatus

__all__ = ["line_chart_svg", "stacked_bars_svg", "timeline_svg"]

FONT = "font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:12px"
STATUS_COLOURS = {StepStatus.completed: "#2e7d32", StepStatus.failed: "#c62828", StepStatus.skipped: "#9e9e9e"}
MARKERS = {  # timeline entry kind -> (row label, colour)
    "approval": ("approvals", "#6a1b9a"),
    "notification": ("notifications", "#1565c0"),
    "escalation": ("escalations", "#c62828"),
    "stop": ("escalations", "#c62828"),
}
PALETTE = ["#1565c0", "#ef6c00", "#2e7d32", "#6a1b9a", "#c62828", "#00838f"]


def _text(x: float, y: float, text: str, *, anchor: str = "start", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" {extra}>{escape(text)}</text>'


def _svg(width: int, height: int, title: str, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" style="{FONT}">'
            f"<title>{escape(title)}</title>" + "".join(body) + "</svg>")


def timeline_svg(incident: Incident, *, width: int = 820) -> str:
    """The response as a Gantt chart: one bar per stage run, markers for approvals, notifications, escalations."""
    left, right, top, row_h = 150, 50, 44, 24
    stages = incident.stages
    events = [(e.at, *MARKERS[e.kind], e.message) for e in incident.timeline if e.kind in MARKERS]
    times = [t for s in stages for t in (s.started_at, s.ended_at)] + [e[0] for e in events] + [incident.aware_at]
    start, end = min(times), max(times)
    span = max((end - start).total_seconds(), 1.0)
    detected_in_view = 0 <= (start - incident.detected_at).total_seconds() <= span * 0.5
    if detected_in_view:
        start = min(start, incident.detected_at)
        span = max((end - start).total_seconds(), 1.0)
    plot_w = width - left - right

    def x(at: datetime) -> float:
        return left + plot_w * (at - start).total_seconds() / span

    marker_rows = list(dict.fromkeys(label for _, label, _, _ in events))
    rows = len(stages) + len(marker_rows)
    height = top + rows * row_h + 46
    body = [_text(8, 18, f"{incident.id} — response timeline (UTC)", extra='font-weight="bold"')]
    for i in range(5):  # axis
        at_s = span * i / 4
        px = left + plot_w * i / 4
        body.append(f'<line x1="{px:.1f}" y1="{top - 6}" x2="{px:.1f}" y2="{top + rows * row_h}" '
                    'stroke="#e0e0e0"/>')
        body.append(_text(px, top + rows * row_h + 16, f"+{format_duration(at_s)}", anchor="middle",
                          extra='fill="#555"'))
    for i, s in enumerate(stages):
        y = top + i * row_h
        label = f"{s.stage.value} ({s.phase})" if s.phase else s.stage.value
        x0, x1 = x(s.started_at), x(s.ended_at)
        body.append(_text(8, y + 15, label))
        body.append(f'<rect x="{x0:.1f}" y="{y + 4}" width="{max(x1 - x0, 2):.1f}" height="{row_h - 8}" '
                    f'fill="{STATUS_COLOURS[s.status]}" rx="2"><title>{escape(label)}: {s.status.value}, '
                    f'{escape(format_duration((s.ended_at - s.started_at).total_seconds()))}</title></rect>')
    for j, row_label in enumerate(marker_rows):
        y = top + (len(stages) + j) * row_h
        body.append(_text(8, y + 15, row_label))
        for at, label, colour, message in events:
            if label == row_label:
                cx = x(at)
                body.append(f'<circle cx="{cx:.1f}" cy="{y + row_h / 2:.1f}" r="5" fill="{colour}">'
                            f"<title>{escape(f'{at:%H:%M:%S} {message}')}</title></circle>")
    note_y = top + rows * row_h + 34
    if detected_in_view:
        dx = x(incident.detected_at)
        body.append(f'<line x1="{dx:.1f}" y1="{top - 6}" x2="{dx:.1f}" y2="{top + rows * row_h}" '
                    'stroke="#ef6c00" stroke-dasharray="4 3"/>')
        body.append(_text(dx + 3, top - 8, "detected", extra='fill="#ef6c00"'))
        note = f"start {start:%Y-%m-%d %H:%M:%S} UTC"
    else:
        before = (start - incident.detected_at).total_seconds()
        note = (f"start {start:%Y-%m-%d %H:%M:%S} UTC; detected {format_duration(abs(before))} "
                f"{'before' if before >= 0 else 'after'} that ({incident.detected_at:%Y-%m-%d %H:%M:%S})")
    body.append(_text(8, note_y, note, extra='fill="#555"'))
    return _svg(width, height, f"Response timeline of {incident.id}", body)


def stacked_bars_svg(title: str, rows: list[tuple[str, dict[str, float]]], segments: list[str],
                     *, colours: dict[str, str] | None = None, width: int = 820, suffix: str = "") -> str:
    """Horizontal stacked bars: one row per label, one coloured segment per key of `segments`."""
    colours = colours or {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(segments)}
    left, right, top, row_h = 190, 70, 46, 22
    total_max = max([sum(values.values()) for _, values in rows] + [1])
    plot_w = width - left - right
    height = top + max(len(rows), 1) * row_h + 12
    body = [_text(8, 18, title, extra='font-weight="bold"')]
    lx = 8
    for segment in segments:  # legend
        body.append(f'<rect x="{lx}" y="26" width="10" height="10" fill="{colours[segment]}"/>')
        body.append(_text(lx + 14, 35, segment))
        lx += 24 + 7 * len(segment)
    if not rows:
        body.append(_text(left, top + 14, "no data", extra='fill="#555"'))
    for i, (label, values) in enumerate(rows):
        y = top + i * row_h
        body.append(_text(8, y + 15, label))
        x0 = float(left)
        for segment in segments:
            value = values.get(segment, 0)
            if value <= 0:
                continue
            w = plot_w * value / total_max
            body.append(f'<rect x="{x0:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" '
                        f'fill="{colours[segment]}"><title>{escape(f"{label}: {segment} {value:g}{suffix}")}'
                        "</title></rect>")
            x0 += w
        body.append(_text(x0 + 4, y + 15, f"{sum(values.values()):g}{suffix}", extra='fill="#555"'))
    return _svg(width, height, title, body)


def line_chart_svg(title: str, labels: list[str], series: dict[str, list[float | None]], *,
                   width: int = 820, height: int = 260, unit: str = "h") -> str:
    """A line per series over `labels` (e.g. months); None leaves a gap."""
    left, right, top, bottom = 60, 40, 46, 30
    values = [v for points in series.values() for v in points if v is not None]
    peak = max(values + [1e-9])
    plot_w, plot_h = width - left - right, height - top - bottom
    step = plot_w / max(len(labels) - 1, 1)
    body = [_text(8, 18, title, extra='font-weight="bold"')]
    lx = 8
    for i, name in enumerate(series):
        body.append(f'<rect x="{lx}" y="26" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>')
        body.append(_text(lx + 14, 35, name))
        lx += 24 + 7 * len(name)
    for i in range(5):
        v = peak * i / 4
        y = top + plot_h - plot_h * i / 4
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#e0e0e0"/>')
        body.append(_text(left - 6, y + 4, f"{v:.1f}{unit}", anchor="end", extra='fill="#555"'))
    for i, label in enumerate(labels):
        body.append(_text(left + i * step, height - 10, label, anchor="middle", extra='fill="#555"'))
    if not values:
        body.append(_text(left + 10, top + plot_h / 2, "no data", extra='fill="#555"'))
    for n, (name, points) in enumerate(series.items()):
        colour = PALETTE[n % len(PALETTE)]
        segment: list[str] = []
        for i, v in enumerate(points + [None]):
            if v is None:
                if len(segment) > 1:
                    points_text = " ".join(segment)
                    body.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points_text}"/>')
                segment = []
                continue
            px, py = left + i * step, top + plot_h - plot_h * v / peak
            segment.append(f"{px:.1f},{py:.1f}")
            body.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}">'
                        f"<title>{escape(f'{name} {labels[i]}: {v:.2f}{unit}')}</title></circle>")
    return _svg(width, height, title, body)
