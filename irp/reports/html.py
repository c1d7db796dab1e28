"""The reports as HTML pages: templates/ rendered by jinja2's SandboxedEnvironment, autoescaped, StrictUndefined.

Incident data is data, never markup. Charts are SVG drawn by matplotlib (charts.py; it escapes the
labels) and are, with the style sheet, the only values marked safe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from irp.reports.kpis import format_duration

_TEMPLATES = Path(__file__).parent / "templates"
_ENV = SandboxedEnvironment(loader=FileSystemLoader(_TEMPLATES), autoescape=True, undefined=StrictUndefined,
                            trim_blocks=True, lstrip_blocks=True)
_ENV.filters["duration"] = format_duration
_ENV.filters["utc"] = lambda value: f"{value:%Y-%m-%d %H:%M:%S}" if value else "—"


def render_page(template: str, **context: Any) -> str:
    """templates/`template` rendered with `context` and the reports' style sheet."""
    css = Markup((_TEMPLATES / "report.css").read_text(encoding="utf-8"))
    return _ENV.get_template(template).render(**context, css=css)
