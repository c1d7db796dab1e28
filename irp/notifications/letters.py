"""Letters: a message template rendered to a subject, a text body and an HTML alternative (§7, §14).

Templates are `<name>.<language>.md.j2` in playbooks/templates/, rendered by jinja2's sandbox; the
optional email.html.j2 wraps the text into an autoescaped HTML alternative.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from jinja2 import TemplateNotFound
from jinja2.exceptions import TemplateError
from jinja2.sandbox import SandboxedEnvironment

from irp.errors import ActionError
from irp.templating import file_environment, render_subject_body

__all__ = ["CONTACTS", "HTML_LAYOUT", "Audience", "NotificationError", "Rendered", "render"]

Audience = Literal["client", "authority", "internal", "data_subjects"]
HTML_LAYOUT = "email.html.j2"
CONTACTS = {"security": "security@confluent-digital.com", "dpo": "dpo@confluent-digital.com"}


class NotificationError(ActionError):
    """Raised when a message cannot be rendered: missing template, template error."""


@dataclass(frozen=True)
class Rendered:
    """A rendered message."""

    subject: str
    text: str
    html: str | None


def _when(value: Any, language: str = "fr") -> str:
    """An ISO timestamp (or datetime) as a readable UTC time: 20/11/2026 09:14 UTC (fr)."""
    if value in (None, ""):
        return "—"
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return f"{moment:%d/%m/%Y %H:%M} UTC" if language == "fr" else f"{moment:%Y-%m-%d %H:%M} UTC"


@lru_cache(maxsize=8)
def letter_environment(folder: Path) -> SandboxedEnvironment:
    """One environment per folder: compiled templates are cached, and reloaded when a file changes."""
    env = file_environment(str(folder))
    env.filters["when"] = _when
    return env


def render(folder: Path, template: str, language: str, context: dict[str, Any]) -> Rendered:
    """Render `<template>.<language>.md.j2` to a subject, a text body and an HTML alternative (autoescaped)."""
    name = f"{template}.{language}.md.j2"
    env = letter_environment(folder)
    try:
        subject, text = render_subject_body(env.get_template(name), context)  # bounded; subject on one line
    except TemplateNotFound:
        raise NotificationError(f"no template {name} in {folder}") from None
    except TemplateError as exc:
        raise NotificationError(f"template {name}: {exc}") from None
    if not subject:
        raise NotificationError(f"template {name} sets no subject ({{% set subject = ... %}})")
    html = None
    if (folder / HTML_LAYOUT).is_file():
        try:
            _, html = render_subject_body(env.get_template(HTML_LAYOUT),
                                          {"subject": subject, "body": text, "language": language})
        except TemplateError as exc:
            raise NotificationError(f"template {HTML_LAYOUT}: {exc}") from None
    return Rendered(subject, text, html)
