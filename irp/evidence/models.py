"""The evidence store's value types: manifest lines, custody entries, verify findings, export results."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from irp.models import utcnow

EVENTS = ("collected", "archived", "accessed", "exported", "verified", "audit", "event_appended", "record_saved",
          "retention_extended")
CustodyEvent = Literal["collected", "archived", "accessed", "exported", "verified", "audit", "event_appended",
                       "record_saved", "retention_extended"]


class CustodyEntry(BaseModel):
    """One event in an incident's chain of custody."""

    model_config = ConfigDict(extra="forbid")

    v: int = Field(1, description="How `hash` is computed: 2 = RFC 8785 canonical JSON; 1 (absent) = the former form.")
    seq: int = Field(..., description="1 for the first entry, then +1.")
    at: datetime = Field(..., description="When the entry was written (UTC).")
    event: CustodyEvent
    incident_id: str
    actor: str = Field(..., description="Who: a flow run's step, or user@host.")
    object: str | None = Field(None, description="The evidence item concerned, if one.")
    sha256: str | None = Field(None, description="Its SHA-256 (or the export's) at the time.")
    details: dict[str, Any] = Field(default_factory=dict)
    prev: str = Field(..., description="`hash` of the entry before (64 zeros for the first).")
    hash: str = Field(..., description="SHA-256 of this entry's canonical JSON without `hash`.")


class CollectedBy(BaseModel):
    """Which step of which run collected an item."""

    model_config = ConfigDict(extra="forbid")

    stage: str = ""
    step: str = ""
    action: str = ""
    flow_run_id: str = ""


class EvidenceItem(BaseModel):
    """One manifest line: an archived item and its integrity data."""

    model_config = ConfigDict(extra="forbid")

    name: str
    size: int
    sha256: str
    content_type: str
    collected_by: CollectedBy = Field(default_factory=CollectedBy)
    collected_at: datetime = Field(default_factory=utcnow)
    source_time: str | None = Field(None, description="The source's own timestamp, as it was given.")
    source_system: str = ""
    retention_until: datetime | None = None
    retention_mode: str | None = Field(None, description="GOVERNANCE or COMPLIANCE when the store enforces it.")
    version_id: str | None = Field(None, description="The object version archived (versioned buckets).")


class IntegrityProblem(BaseModel):
    """One finding of `verify`: what is wrong with which object or custody entry."""

    kind: Literal["altered", "missing", "unexpected", "broken", "unprotected", "exposed"]
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.subject}: {self.detail}"


class VerifyReport(BaseModel):
    """The result of re-hashing every object and checking the custody chain."""

    incident_id: str
    store: str
    objects: int
    custody_entries: int
    problems: list[IntegrityProblem] = Field(default_factory=list)
    head_seq: int | None = Field(None, description="The chain head: the last custody entry's seq (custody.py).")
    head_hash: str | None = Field(None, description="The chain head: the last custody entry's hash.")

    @property
    def intact(self) -> bool:
        return not self.problems


class ExportedUrl(BaseModel):
    """A presigned download link for one archived object."""

    name: str
    sha256: str
    url: str
    expires_at: datetime


class TarExport(BaseModel):
    """A tar of an incident's evidence, manifest and custody log."""

    path: Path
    objects: int
    size: int
    sha256: str


class FlushReport(BaseModel):
    """What `flush` uploaded from the local spool and what is still waiting."""

    uploaded: int = 0
    remaining: int = 0
    failed: list[str] = Field(default_factory=list, description="Operations set aside: what and why.")


@dataclass
class StoredObject:
    """What the backend holds under an object name (for verify)."""

    size: int | None
    version_id: str | None = None
    deleted: bool = False
    note: str = ""


@dataclass
class RawEntry:
    """A custody entry as stored: where (`label`), its bytes (None if gone) and what the store noticed."""

    label: str
    text: bytes | None
    note: str = ""


