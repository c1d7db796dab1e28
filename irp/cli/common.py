"""What every command group shares: the evidence store, user errors as one line on stderr, JSON output."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer

from irp.errors import IrpError

if TYPE_CHECKING:
    from irp.evidence import EvidenceStore

__all__ = ["echo_err", "echo_json", "fail", "open_evidence_store", "user_errors", "warn_skipped"]


def open_evidence_store() -> EvidenceStore:
    """The evidence store of IRP_EVIDENCE_URL."""
    from irp.evidence import open_store
    from irp.settings import get_settings

    return open_store(get_settings().evidence_url)


def echo_err(message: str) -> None:
    typer.echo(message, err=True)


def fail(message: str) -> typer.Exit:
    """Print `error: message` on stderr; return the exit (code 1) for the caller to raise."""
    echo_err(f"error: {message}")
    return typer.Exit(1)


@contextmanager
def user_errors() -> Iterator[None]:
    """An IrpError is one line on stderr and exit code 1."""
    try:
        yield
    except IrpError as exc:
        raise fail(str(exc)) from None


def warn_skipped(lines: Iterable[str]) -> None:
    """Name on stderr each record that could not be read (the command goes on without it)."""
    for line in lines:
        echo_err(f"warning: skipped {line}")


def echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))
