"""The `irp` command line: the Typer app, its command groups (one module each) and `main()`.

Errors are one clear line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from irp.cli.actions import actions_app
from irp.cli.audit import audit_app
from irp.cli.common import echo_err
from irp.cli.evidence import evidence_app
from irp.cli.exercise import exercise
from irp.cli.incidents import incidents_app
from irp.cli.notifications import notifications_app
from irp.cli.playbooks import playbooks_app
from irp.cli.report import report_app
from irp.cli.runtime import adopt_stack, demo, run, stack, webhook, worker
from irp.errors import IrpError

__all__ = ["app", "main"]

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Incident response for CallCenterRate: playbooks as code, run by Prefect.")
app.add_typer(playbooks_app, name="playbooks")
app.add_typer(actions_app, name="actions")
app.add_typer(evidence_app, name="evidence")
app.add_typer(incidents_app, name="incidents")
app.add_typer(notifications_app, name="notifications")
app.add_typer(audit_app, name="audit")
app.add_typer(report_app, name="report")
for command in (webhook, run, stack, worker, demo, exercise):  # top-level commands (irp/cli/runtime.py)
    app.command()(command)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"irp {version('irp')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    """Incident response for CallCenterRate: playbooks as code, run by Prefect."""


def main() -> None:
    """Console-script entry point."""
    try:
        if sys.argv[1:2] not in (["stack"], ["worker"], ["webhook"]):
            adopt_stack()
        app()
    except IrpError as exc:
        echo_err(f"irp: error: {exc}")
        sys.exit(1)
    except KeyboardInterrupt:
        echo_err("irp: interrupted")
        sys.exit(130)
    except Exception as exc:  # the last guard: no traceback reaches a user
        if os.environ.get("IRP_DEBUG"):
            raise
        echo_err(f"irp: internal error: {type(exc).__name__}: {exc} (IRP_DEBUG=1 shows the traceback)")
        sys.exit(2)
