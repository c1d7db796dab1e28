"""Reading alerts from files: the generic alert JSON accepted by `irp run --alert FILE`.

The format is the Alert model: {"title": ..., "description": ..., "source": "generic",
"fingerprint": ..., "labels": {...}, "observed_at": "2026-11-20T09:14:03Z", "status": "firing"}.
Only "title" is required; the document itself is kept verbatim as the alert's raw payload.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from irp.errors import AlertError, field_errors_text
from irp.models import Alert

MAX_ALERT_BYTES = 1024 * 1024


def parse_alert(data: bytes, where: str) -> Alert:
    """Parse and validate an alert document; AlertError names the place and the problem."""
    try:
        document = json.loads(data)
    except UnicodeDecodeError:
        raise AlertError(f"{where}: not UTF-8 text; an alert is a JSON document") from None
    except json.JSONDecodeError as exc:
        raise AlertError(f"{where}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    if not isinstance(document, dict):
        raise AlertError(f"{where}: expected a JSON object, got {type(document).__name__}")
    payload = dict(document)
    payload.setdefault("raw", document)
    try:
        return Alert.model_validate(payload)
    except ValidationError as exc:
        raise AlertError(f"{where}: invalid alert: {field_errors_text(exc, whole='(document)')}") from None


def read_alert(path: Path) -> Alert:
    """Read an alert file."""
    try:
        size = path.stat().st_size
        if size > MAX_ALERT_BYTES:
            raise AlertError(f"{path}: {size} bytes; an alert file may be at most {MAX_ALERT_BYTES} bytes")
        data = path.read_bytes()
    except FileNotFoundError:
        raise AlertError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise AlertError(f"{path}: is a directory, not an alert file") from None
    except OSError as exc:
        raise AlertError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_alert(data, str(path))
