"""Scripted human decisions (`irp run --decisions FILE`): a whole lifecycle unattended, on a simulated clock.

A decisions file lists what people decide and when, as offsets from the incident's awareness:

    decisions:
      - {at: 10m, by: alice, approve: deactivate_key, note: "key of a departed contractor"}
      - {at: 40m, by: bob, close: revoke_sessions, note: "sessions revoked, ticket SEC-42"}
      - {at: 2h, by: bob, advance: restore, note: "service checked by the on-call engineer"}
      - at: 3d
        by: carol
        review:
          causes: "An export token was left in a public repository."
          corrective: [{title: "Scan repositories for tokens", owner: dev-lead, due: 30d}]

Each entry holds one of approve, reject (a step id), close (a measure's action id or step id, or
`all` for every open measure of the stage that waits), advance (a stage), review, false_positive.
Unknown keys are errors. Tests, demos and exercises use it; decisions are recorded at their
simulated time, so the metrics count from them.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from irp.models import Stage

__all__ = ["Script", "ScriptedDecision", "load_script", "parse_offset"]

_OFFSET = re.compile(r"^\+?\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m(?:in)?)?\s*(?:(\d+)\s*s)?$")


def parse_offset(text: str | int | float) -> timedelta:
    """'90s', '40m', '2h', '3d', '1h30m' (or a number of seconds) as a timedelta."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return timedelta(seconds=text)
    match = _OFFSET.match(str(text).strip().lower())
    if not match or not any(match.groups()):
        raise ValueError(f"{text!r} is not an offset; use e.g. 90s, 40m, 2h, 3d or 1h30m")
    d, h, m, s = (int(g or 0) for g in match.groups())
    return timedelta(days=d, hours=h, minutes=m, seconds=s)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScriptedCorrective(_Strict):
    title: str = Field(..., min_length=1)
    owner: str = Field(..., min_length=1)
    due: str | None = Field(None, description="An offset from the review (30d) or a date (2027-01-15).")

    def due_at(self, review_at: datetime) -> datetime | None:
        if not self.due:
            return None
        try:
            return review_at + parse_offset(self.due)
        except ValueError:
            return datetime.fromisoformat(self.due).replace(tzinfo=review_at.tzinfo)


class ScriptedReview(_Strict):
    causes: str = Field(..., min_length=1)
    worked: str = ""
    did_not_work: str = ""
    corrective: list[ScriptedCorrective] = Field(default_factory=list)


_KINDS = ("approve", "reject", "close", "advance", "review", "false_positive")


class ScriptedDecision(_Strict):
    """One decision of a decisions file."""

    at: timedelta = Field(..., description="When, after the incident's awareness: 10m, 2h, 3d.")
    by: str = Field(..., min_length=1, max_length=200)
    note: str = ""
    approve: str | None = None
    reject: str | None = None
    close: str | None = None
    advance: Stage | None = None
    review: ScriptedReview | None = None
    false_positive: bool = False

    @field_validator("at", mode="before")
    @classmethod
    def _offset(cls, value: Any) -> Any:
        if isinstance(value, timedelta) or (isinstance(value, str) and value.strip().upper().startswith("P")):
            return value  # ISO 8601 (PT40M), as JSON carries it: pydantic parses it
        return parse_offset(value)

    @model_validator(mode="after")
    def _one(self) -> ScriptedDecision:
        given = [k for k in _KINDS if getattr(self, k) not in (None, False)]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(_KINDS)} (got {', '.join(given) or 'none'})")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in _KINDS if getattr(self, k) not in (None, False))


class Script(_Strict):
    """A decisions file."""

    decisions: list[ScriptedDecision] = Field(default_factory=list)


def load_script(path: Path) -> Script:
    """Read a decisions file (YAML or JSON); errors name the file, the entry and what is valid."""
    from irp.errors import PlaybookError
    from irp.playbook.loader import load_yaml
    from irp.playbook.problems import schema_problems

    plain, positions, _text, _data = load_yaml(path)  # PlaybookError: FILE:LINE:COL
    try:
        return Script.model_validate(plain)
    except ValidationError as exc:
        raise PlaybookError(schema_problems(exc, Script, str(path), positions)) from None
