"""The journal's records: an accepted delivery, the decision taken for each alert, outbox items, ids."""

from __future__ import annotations

import hashlib
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

from irp.errors import IrpError
from irp.intake.routing import Routed
from irp.models import Alert

_ids = random.Random()  # seeded from os.urandom once; ids need to be unique, not secret
os.register_at_fork(after_in_child=_ids.seed)  # a forked worker must not repeat its parent's ids
_UUID7_VARIANT = 0x8000 << 48  # RFC 9562 variant bits


def new_delivery_id() -> str:
    """A time-ordered (version 7) UUID: the journal's index on it grows at one end, as a random id's
    would not (a random id lands on a random index page, and each page a commit touches is written again)."""
    ms = time.time_ns() // 1_000_000
    h = f"{ms << 80 | 0x7 << 76 | _ids.getrandbits(12) << 64 | _UUID7_VARIANT | _ids.getrandbits(62):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class JournalError(IrpError):
    """Raised when the journal cannot record (disk full, file unwritable): nothing was acknowledged."""


@dataclass
class AlertDelivery:
    """One accepted request, with its alerts already routed."""

    source: str
    body: bytes
    alerts: list[tuple[Alert, Routed | None, str]]  # (alert, route or None, event: firing/resolved/update)
    delivery_key: str | None = None
    repeat: str = "reject"  # what a second delivery with the same key gets: "reject" (replay) or "same" (retry)
    confirm_url: str | None = None
    replays: tuple[str, str, str] | None = None  # (source, fingerprint, delivery id) of the unrouted alert it routes
    id: str = field(default_factory=new_delivery_id)
    received_at: float = field(default_factory=time.time)


@dataclass
class AlertDecision:
    """What the journal decided for one alert (the response's AlertOutcome)."""

    fingerprint: str
    status: str
    outcome: str
    deduplicated: bool
    incident_id: str | None = None
    incident_type: str | None = None
    route: str | None = None
    severity_hint: str | None = None
    flow_run_id: str | None = None


@dataclass
class AcceptResult:
    """A recorded delivery: its id and one decision per alert (none for a replay)."""

    delivery_id: str
    outcomes: list[AlertDecision]
    replay: bool = False
    repeat_delivery: bool = False


@dataclass
class OutboxItem:
    """One piece of work the journal queued for the outbox worker."""

    id: int
    kind: str  # run, event, confirm
    incident_id: str | None
    payload: dict[str, Any]
    state: str
    attempts: int
    batch_id: int | None
    created_at: float


def idempotency_key(group_key: str, incident_id: str) -> str:
    """The run's idempotency key: the alert's grouping key and the incident it opened."""
    digest = hashlib.sha256(group_key.encode()).hexdigest()[:24]
    return f"irp-intake:{incident_id}:{digest}"
