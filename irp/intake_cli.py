"""`irp webhook`: serve the alert intake (docs/intake.md)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from irp.errors import IrpError

__all__ = ["route", "webhook"]


def webhook(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8765,
    local: Annotated[bool, typer.Option(
        "--local", help="Local use: sources with no credential configured accept unauthenticated alerts "
                        "(only on a loopback address).")] = False,
) -> None:
    """Receive alerts (Alertmanager, Grafana, SNS, PagerDuty, generic, reports) and start incident runs."""
    import os
    import signal

    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    import uvicorn

    from irp.intake.app import create_app
    from irp.intake.server import server_config
    from irp.intake.service import IntakeService
    from irp.settings import get_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    service = IntakeService(settings, local=local)
    try:
        service.check_startup(host)
    except Exception:
        service.journal.close()
        raise
    typer.echo(f"irp webhook: http://{host}:{port}  routing {service.routing_file}  journal "
               f"{service.journal.location}{'  (local: sources without credentials are open)' if local else ''}")
    signal.signal(signal.SIGHUP, lambda signum, frame: service.request_routing_reload())
    uvicorn.Server(server_config(create_app(service), settings, host, port)).run()


def route(
    source: Annotated[str, typer.Argument(help="alertmanager, grafana, sns, pagerduty, generic or report.")],
    payload: Annotated[Path, typer.Argument(help="A request body as the source sends it (JSON); - reads stdin.")],
    routing: Annotated[Path | None, typer.Option(
        help="Routing file (default: IRP_ROUTING_FILE, else routing.yaml in the playbooks folder).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Show where a payload's alerts would go: route, incident type, severity hint, grouping key.

    Nothing is recorded and no signature is checked: this is for editing routing.yaml.
    """
    from pydantic import ValidationError

    from irp.errors import field_errors
    from irp.intake.app import SOURCES, alerts_in
    from irp.intake.normalise import PayloadError
    from irp.intake.routing import Router
    from irp.intake.service import routing_path
    from irp.settings import get_settings

    found = SOURCES.get(source)
    if found is None:
        raise IrpError(f"unknown source {source!r}; valid: {', '.join(SOURCES)}")
    routing = routing or routing_path(get_settings())
    router = Router.from_file(routing)  # PlaybookError: every problem as FILE:LINE:COL
    where = "stdin" if str(payload) == "-" else str(payload)
    try:
        body = sys.stdin.buffer.read() if where == "stdin" else payload.read_bytes()
    except OSError as exc:
        raise IrpError(f"{where}: cannot read: {exc.strerror}") from None
    try:
        alerts = alerts_in(found, body)
    except (ValidationError, PayloadError) as exc:
        pairs = field_errors(exc) if isinstance(exc, ValidationError) else exc.errors
        errors = "; ".join(f"{path or '(body)'}: {message}" for path, message in pairs)
        raise IrpError(f"{where}: not a {source} payload: {errors}") from None
    except (ValueError, RecursionError) as exc:
        raise IrpError(f"{where}: invalid JSON: {exc}") from None
    rows = []
    for alert, event in alerts:
        routed = router.route(alert)
        rows.append({"fingerprint": alert.fingerprint, "title": alert.title, "event": event,
                     "labels": alert.labels, "route": routed.route if routed else None,
                     "incident_type": routed.incident_type.value if routed else None,
                     "severity_hint": routed.severity.value if routed and routed.severity else None,
                     "clients": list(routed.clients) if routed else [],
                     "group_key": routed.group_key if routed else None})
    if as_json:
        typer.echo(json.dumps({"routing": str(routing), "sha256": router.sha256, "alerts": rows}, indent=2,
                              ensure_ascii=False))
        return
    typer.echo(f"{where}: {len(rows)} {source} alert{'s' if len(rows) != 1 else ''}, routing {routing}")
    if not rows:
        typer.echo("  no alert in it (an SNS subscription message is confirmed, not routed)")
    for row in rows:
        typer.echo(f"- {row['title']} ({row['event']}, fingerprint {row['fingerprint']})")
        if row["route"] is None:
            typer.echo("    unrouted: no route matches and there is no default; recorded and listed at "
                       "GET /alerts/unrouted")
            continue
        severity = f", severity {row['severity_hint']}" if row["severity_hint"] else ""
        clients = f", Clients {', '.join(row['clients'])} (stated by the route: trusted)" if row["clients"] else ""
        typer.echo(f"    route {row['route']} -> {row['incident_type']}{severity}{clients}")
        typer.echo(f"    group {row['group_key']}: repeats within the dedup window join one incident")


def _openapi() -> None:
    """Print the OpenAPI document (python -m irp.intake_cli > docs/openapi.json)."""
    import json

    from irp.intake.app import openapi_spec

    print(json.dumps(openapi_spec(), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    _openapi()
