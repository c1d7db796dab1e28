"""What the custody chain vouches for beside the objects: timeline events and incident record versions.

Every record a decision or a report is computed from is written with a custody entry carrying the
digest of its canonical JSON (custody.digest, RFC 8785):

    event_appended      sha256: the event as stored (a line of events.jsonl, or events/<key>.json on S3);
                        details: kind, at, and on S3 the event's key
    record_saved        sha256: incident.json as saved; details: status, severity
    archived            details.manifest: the full manifest entry (checked by custody.cross_check)

`check_events` and `check_record` recompute them and name what was added, removed, edited, reordered
or duplicated. `vouched` is the read side: events the chain does not vouch for are left out when an
incident is read (so a line forged into events.jsonl cannot turn a deadline into "met"), on incidents
whose chain began with version-2 entries; an older incident's events are all read (verify names the
unchained ones).
"""

from __future__ import annotations

import difflib
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from irp.evidence.custody import VERSION, digest
from irp.evidence.models import CustodyEntry, IntegrityProblem

__all__ = ["StoredRecord", "check_events", "check_record", "content_digest", "vouched"]

log = logging.getLogger(__name__)


@dataclass
class StoredRecord:
    """An event as stored: where (`label`), its S3 key (None for a line of events.jsonl) and its bytes."""

    label: str
    key: str | None
    text: bytes


def content_digest(text: bytes) -> str | None:
    """The digest the chain holds for a stored JSON record; None when it is not JSON."""
    try:
        return digest(json.loads(text))
    except ValueError:
        return None


def chain_vouches(entries: Sequence[CustodyEntry | dict[str, Any]]) -> bool:
    """Whether the incident's chain began with entries that record every event (version 2)."""
    if not entries:
        return True
    first = entries[0]
    version = first.get("v", 1) if isinstance(first, dict) else first.v
    return isinstance(version, int) and version >= VERSION


def _field(entry: CustodyEntry | dict[str, Any], name: str) -> Any:
    return entry.get(name) if isinstance(entry, dict) else getattr(entry, name)


def vouched(incident_id: str, stored: list[StoredRecord],
            entries: Sequence[CustodyEntry | dict[str, Any]]) -> list[StoredRecord]:
    """The stored events the chain vouches for (same digest, and same key on S3); the others are logged and left out."""
    if not chain_vouches(entries):
        return stored
    recorded = [e for e in entries if _field(e, "event") == "event_appended"]
    by_key = {(_field(e, "details") or {}).get("key"): _field(e, "sha256") for e in recorded}
    counts = Counter(_field(e, "sha256") for e in recorded)
    kept = []
    for record in stored:
        found = content_digest(record.text)
        if record.key is not None:
            ok = found is not None and by_key.get(record.key) == found
        else:
            ok = counts[found] > 0
            counts[found] -= 1
        if ok:
            kept.append(record)
        else:
            log.warning("incident %s: %s is not in the custody chain (added or edited out of band): ignored; "
                        "run irp evidence verify %s", incident_id, record.label, incident_id)
    return kept


def _what(entry: CustodyEntry) -> str:
    return f"custody entry {entry.seq}: {entry.details.get('kind', 'event')} at {entry.details.get('at', '?')}"


def check_events(stored: list[StoredRecord], entries: list[CustodyEntry],
                 vouching: bool = True) -> list[IntegrityProblem]:
    """Each stored event against its `event_appended` entry: added, removed, edited, reordered, duplicated.

    S3 events are matched by key; lines of events.jsonl by position (a diff of the two sequences).
    `vouching`: False for an incident whose chain began before events were recorded (unchained events
    are then expected and not reported).
    """
    recorded = [e for e in entries if e.event == "event_appended"]
    if any(r.key is not None for r in stored) or any(e.details.get("key") for e in recorded):
        return _check_keyed(stored, recorded, vouching)
    return _check_lines(stored, recorded, vouching)


def _check_keyed(stored: list[StoredRecord], recorded: list[CustodyEntry], vouching: bool) -> list[IntegrityProblem]:
    by_key: dict[str, CustodyEntry] = {}
    for entry in recorded:
        by_key.setdefault(entry.details.get("key") or "", entry)
    problems = []
    seen = set()
    digests = {r.key: content_digest(r.text) for r in stored}
    for record in stored:
        entry = by_key.get(record.key or "")
        found = digests[record.key]
        if entry is None:
            if not vouching:
                continue
            copy = next((r.label for r in stored if r.key in by_key and r.key != record.key
                         and found is not None and digests[r.key] == found), None)
            detail = f"duplicated: a copy of {copy}" if copy else "added out of band: not in the custody chain"
            problems.append(IntegrityProblem(kind="unexpected", subject=record.label, detail=detail))
            continue
        seen.add(record.key)
        if found != entry.sha256:
            problems.append(IntegrityProblem(kind="altered", subject=record.label,
                                             detail=f"edited: differs from what {_what(entry)} recorded"))
    for key, entry in by_key.items():
        if key not in seen:
            problems.append(IntegrityProblem(kind="missing", subject=f"events/{key}.json",
                                             detail=f"removed: recorded by {_what(entry)}"))
    return problems


def _check_lines(stored: list[StoredRecord], recorded: list[CustodyEntry], vouching: bool) -> list[IntegrityProblem]:
    actual = [content_digest(r.text) for r in stored]
    wanted = [e.sha256 for e in recorded]
    if not vouching:  # lines older than the first recorded event precede them: compare the tail only
        start = max(len(stored) - len(wanted), 0)
        stored, actual = stored[start:], actual[start:]
    have, want = Counter(actual), Counter(wanted)
    problems: list[IntegrityProblem] = []
    edited: set[int] = set()
    unmatched: list[int] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=wanted, b=actual, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        for k, j in enumerate(range(j1, j2)):
            i = i1 + k if tag == "replace" and i1 + k < i2 else None
            found, label = actual[j], stored[j].label
            if found is not None and found in want:
                if have[found] > want[found]:
                    first = stored[actual.index(found)].label
                    problems.append(IntegrityProblem(kind="unexpected", subject=label,
                                                     detail=f"duplicated: repeats {first}"))
                else:
                    problems.append(IntegrityProblem(kind="altered", subject=label,
                                                     detail="reordered: out of the order the custody chain recorded"))
            elif i is not None and wanted[i] not in have:
                edited.add(i)
                problems.append(IntegrityProblem(kind="altered", subject=label,
                                                 detail=f"edited: differs from what {_what(recorded[i])} recorded"))
            else:
                problems.append(IntegrityProblem(kind="unexpected", subject=label,
                                                 detail="added out of band: not in the custody chain"))
        unmatched.extend(i for i in range(i1, i2) if i not in edited)
    missing = Counter({h: n - have[h] for h, n in want.items() if n > have[h]})
    for i in unmatched:
        if missing[wanted[i]] > 0:
            missing[wanted[i]] -= 1
            problems.append(IntegrityProblem(kind="missing", subject=f"events.jsonl line {i + 1}",
                                             detail=f"removed: the event recorded by {_what(recorded[i])} is gone"))
    return problems


def check_record(text: bytes | None, entries: list[CustodyEntry], vouching: bool = True) -> list[IntegrityProblem]:
    """incident.json against the last `record_saved` entry (the version irp saved last)."""
    saved = [e for e in entries if e.event == "record_saved"]
    if text is None:
        if saved:
            return [IntegrityProblem(kind="missing", subject="incident.json",
                                     detail=f"deleted: custody entry {saved[-1].seq} recorded its last version")]
        return []
    if not saved:
        if not vouching:
            return []
        return [IntegrityProblem(kind="unexpected", subject="incident.json",
                                 detail="no version of it is in the custody chain: written out of band")]
    last = saved[-1]
    if content_digest(text) != last.sha256:
        return [IntegrityProblem(kind="altered", subject="incident.json",
                                 detail=f"differs from the last version irp saved (custody entry {last.seq}, "
                                        f"{last.at:%Y-%m-%d %H:%M:%S} UTC): edited outside irp")]
    return []
