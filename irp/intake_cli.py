"""`irp webhook`: serve the alert intake (docs/intake.md)."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

__all__ = ["webhook"]


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
    config = uvicorn.Config(create_app(service), host=host, port=port, log_level="warning",
                            access_log=False, timeout_graceful_shutdown=10)
    uvicorn.Server(config).run()


def _openapi() -> None:
    """Print the OpenAPI document (python -m irp.intake_cli > docs/openapi.json)."""
    import json

    from irp.intake.app import openapi_spec

    print(json.dumps(openapi_spec(), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    _openapi()
