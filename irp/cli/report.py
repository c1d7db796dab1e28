"""`irp report monthly`: the month's incidents by type and severity, MTTR trend, deadlines met, as HTML."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from irp.cli.common import open_evidence_store, user_errors, warn_skipped
from irp.errors import IrpError

__all__ = ["report_app"]

report_app = typer.Typer(no_args_is_help=True, help="Summaries of the incident history (HTML with charts).")


@report_app.callback()
def _group() -> None:
    """Summaries of the incident history, from the evidence store (not Prefect's database)."""


@report_app.command("monthly")
def monthly(
    month: Annotated[str | None, typer.Option(
        "--month", metavar="YYYY-MM", help="Month (default: this one, UTC).")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="HTML file (default: IRP_REPORTS_DIR/incidents-YYYY-MM.html).")] = None,
) -> None:
    """Write the monthly summary: incidents by type and severity, MTTR trend, deadlines met (SVG charts)."""
    from irp.history import load_incidents
    from irp.models import utcnow
    from irp.reports.kpis import format_duration
    from irp.reports.monthly import monthly_report, parse_month, render_monthly_html
    from irp.settings import get_settings

    with user_errors():
        first_day = parse_month(month)
        store = open_evidence_store()
        incidents, skipped = load_incidents(store)
        now = utcnow()
        report = monthly_report(incidents, first_day, now=now)
        html = render_monthly_html(report, store=store.url, generated_at=now)
        path = output or get_settings().reports_dir / f"incidents-{first_day:%Y-%m}.html"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(html, encoding="utf-8")
        except OSError as exc:
            raise IrpError(f"cannot write {path}: {exc.strerror or exc}") from None
    warn_skipped(skipped)
    overall = report.aggregates[0]
    typer.echo(f"{report.title}: {len(report.incidents)} incident(s), MTTR "
               f"{format_duration(overall.mean_seconds['restore'])}; written to {path}")
