"""The chain-of-custody log (RFC 3227 §2.4): one hash-chained entry per event on an incident's evidence.

Each entry holds the SHA-256 of the entry before it (`prev`) and its own (`hash`, over its canonical
JSON without `hash`). Editing an entry breaks its hash; removing, inserting or reordering entries
breaks the sequence and the links. `check_chain` names each broken entry.

Canonical JSON is RFC 8785 (JCS, the `rfc8785` package) for entries written with `"v": 2`; entries
without `v` (written before) keep verifying with the former form (sorted-key `json.dumps`).

The chain head of an incident is the last custody entry's `seq` and `hash`: what a checkpoint outside
the store (anchor) records, and what `verify` reports, so the two can be compared.

The same chain carries the audit log (irp/audit.py): `audit` entries record incident state changes
and operator acts (declaration, approval, export, action closure) in the incident's custody log.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import rfc8785
from pydantic import ValidationError

from irp.evidence.models import EVENTS, CustodyEntry, EvidenceItem, IntegrityProblem, RawEntry
from irp.models import utcnow

GENESIS = "0" * 64
VERSION = 2  # entries written now: RFC 8785 canonical JSON


def canonical(value: Any, version: int = VERSION) -> bytes:
    """The bytes hashed for a JSON value: RFC 8785 (version 2), sorted-key json.dumps (version 1, older entries)."""
    if version >= 2:
        return rfc8785.dumps(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(value: Any, version: int = VERSION) -> str:
    """SHA-256 of a JSON value's canonical form: how the chain vouches for a record kept beside it."""
    return hashlib.sha256(canonical(value, version)).hexdigest()


def entry_hash(record: dict[str, Any]) -> str:
    version = record.get("v", 1)
    return digest({k: v for k, v in record.items() if k != "hash"}, version if isinstance(version, int) else 1)


def seal(
    incident_id: str,
    seq: int,
    prev: str,
    event: str,
    *,
    actor: str,
    object: str | None = None,
    sha256: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A new entry as a JSON-ready dict, its hash computed over exactly what will be stored."""
    if event not in EVENTS:
        raise ValueError(f"unknown custody event {event!r}; valid: {', '.join(EVENTS)}")
    record = {
        "v": VERSION,
        "seq": seq,
        "at": utcnow().isoformat(),
        "event": event,
        "incident_id": incident_id,
        "actor": actor,
        "object": object,
        "sha256": sha256,
        "details": details or {},
        "prev": prev,
    }
    record = json.loads(json.dumps(record, default=str))
    record["hash"] = entry_hash(record)
    return record


def encode(record: dict[str, Any]) -> bytes:
    """One stored line: compact JSON, keys sorted."""
    return json.dumps(record, sort_keys=True, ensure_ascii=False).encode()


def head_of(text: bytes | None) -> tuple[int, str] | None:
    """(seq, hash) of a stored entry, to chain the next one to; None when it does not parse."""
    try:
        record = json.loads(text or b"")
        return int(record["seq"]), str(record["hash"])
    except (ValueError, KeyError, TypeError):
        return None


def parse_entries(raws: list[RawEntry]) -> list[CustodyEntry]:
    entries = []
    for raw in raws:
        try:
            entries.append(CustodyEntry.model_validate_json(raw.text or b""))
        except ValidationError:
            continue
    return entries


def check_chain(incident_id: str, raws: list[RawEntry]) -> tuple[list[CustodyEntry], list[IntegrityProblem]]:
    """The intact entries, and one problem per entry that is altered, missing or out of place."""
    problems: list[IntegrityProblem] = []
    intact: list[CustodyEntry] = []
    prev_hash: str | None = GENESIS
    prev_label = ""
    expected = 1
    for raw in raws:
        reasons = [raw.note] if raw.note else []
        if raw.text is None:
            problems.append(IntegrityProblem(kind="broken", subject=raw.label,
                                             detail="; ".join(reasons) or "entry missing"))
            prev_hash, prev_label = None, raw.label
            expected += 1
            continue
        try:
            record = json.loads(raw.text)
            entry = CustodyEntry.model_validate(record)
        except (ValueError, ValidationError):
            problems.append(IntegrityProblem(kind="broken", subject=raw.label,
                                             detail="; ".join([*reasons, "not a valid custody entry"])))
            prev_hash, prev_label = None, raw.label
            expected += 1
            continue
        sound = True
        if entry_hash(record) != entry.hash:
            reasons.append(f"entry {entry.seq} altered: its content does not match its hash")
            sound = False
        if entry.seq != expected:
            reasons.append(f"sequence {entry.seq} where {expected} was expected "
                           "(an entry was removed, inserted or reordered)")
            sound = False
        if entry.incident_id != incident_id:
            reasons.append(f"belongs to incident {entry.incident_id}")
            sound = False
        if prev_hash is not None and entry.prev != prev_hash:
            before = f"the entry before it ({prev_label})" if prev_label else "the start of the log"
            reasons.append(f"entry {entry.seq} does not chain to {before}: "
                           "that entry was altered, or entries were removed or reordered")
            sound = False
        if reasons:
            problems.append(IntegrityProblem(kind="broken", subject=raw.label, detail="; ".join(reasons)))
        if sound:
            intact.append(entry)
        prev_hash = entry.hash
        prev_label = raw.label
        expected = entry.seq + 1
    return intact, problems


def cross_check(items: list[EvidenceItem], entries: list[CustodyEntry]) -> list[IntegrityProblem]:
    """Every manifest item has an `archived` entry with the same SHA-256 and, when the entry holds it
    (`details.manifest`), the same metadata field by field; and the other way round.

    `retention_until` may also be the one a later `retention_extended` entry set.
    """
    archived: dict[str, CustodyEntry] = {}
    extended: dict[str, str] = {}
    for entry in entries:
        if entry.event == "archived" and entry.object:
            archived[entry.object] = entry
        elif entry.event == "retention_extended":
            extended.update(entry.details.get("objects") or {})
    problems = []
    names = set()
    for item in items:
        names.add(item.name)
        entry = archived.get(item.name)
        if entry is None:
            problems.append(IntegrityProblem(kind="broken", subject=f"custody of {item.name}",
                                             detail="no 'archived' entry for this manifest item"))
            continue
        if entry.sha256 != item.sha256:
            problems.append(IntegrityProblem(kind="altered", subject=item.name,
                                             detail=f"manifest sha256 {item.sha256} differs from the custody log's "
                                           f"{entry.sha256} (entry {entry.seq})"))
        recorded = entry.details.get("manifest")
        if isinstance(recorded, dict):
            listed = item.model_dump(mode="json")
            edits = [f"{field} {listed.get(field)!r} where entry {entry.seq} recorded {recorded.get(field)!r}"
                     for field in sorted(set(listed) | set(recorded))
                     if field != "sha256" and listed.get(field) != recorded.get(field)
                     and not (field == "retention_until" and listed.get(field) == extended.get(item.name))]
            if edits:
                problems.append(IntegrityProblem(kind="altered", subject=f"manifest entry of {item.name}",
                                                 detail="metadata edited: " + "; ".join(edits)))
    for name in sorted(set(archived) - names):
        problems.append(IntegrityProblem(kind="missing", subject=name,
                                         detail=f"archived per custody entry {archived[name].seq} but not in the manifest"))
    return problems
