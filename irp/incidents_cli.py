"""`irp incidents …`: incidents as the evidence store records them, independent of Prefect's database."""

from __future__ import annotations

import typer

incidents_app = typer.Typer(no_args_is_help=True, help="List, show, export incidents; their deadlines.")
