"""Bundles: an incident's tar export with its checkpoints and timestamp tokens, checked offline by a third party.

`irp evidence export INC --tar FILE` writes the objects, manifest.jsonl and custody.jsonl (base.py) and,
from anchors.py, `anchors/checkpoints.jsonl` (every checkpoint listing the incident, a fresh one first)
and `anchors/tsa-certificates.pem` (IRP_TSA_CERTIFICATES). `verify_bundle` needs nothing but the file:
objects ↔ manifest ↔ custody chain ↔ checkpoint heads ↔ timestamp tokens, and for each object the
earliest trusted time at which it provably existed: the genTime of the first timestamped checkpoint
whose head covers the object's `archived` custody entry.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from irp.errors import EvidenceError
from irp.evidence.anchors import CERTIFICATES, CHECKPOINTS, Checkpoint, compare_heads
from irp.evidence.custody import check_chain, cross_check, parse_entries
from irp.evidence.models import EvidenceItem, IntegrityProblem, RawEntry

__all__ = ["BundleObject", "BundleReport", "verify_bundle"]



class BundleObject(BaseModel):
    """One object of a bundle, as checked."""

    name: str
    sha256: str = Field(..., description="Computed from the bundle's bytes.")
    collected_at: datetime
    archived_seq: int | None = Field(None, description="Its `archived` custody entry.")
    trusted_at: datetime | None = Field(None, description="Earliest TSA genTime proving it existed.")


class BundleReport(BaseModel):
    """`irp evidence verify --bundle`: what was checked, and every problem named."""

    incident_id: str
    objects: list[BundleObject] = Field(default_factory=list)
    custody_entries: int = 0
    checkpoints: int = 0
    timestamped: int = Field(0, description="Checkpoints whose TSA token verified.")
    certificates: str = Field("", description="Where the TSA certificates trusted came from.")
    problems: list[IntegrityProblem] = Field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems


def _read(path: Path) -> tuple[str, dict[str, bytes], dict[str, tuple[str, int]], list[str]]:
    """The incident id, the small members (manifest, custody, anchors), each object's SHA-256 and size, and the
    names of any other member (not read)."""
    small: dict[str, bytes] = {}
    others: list[str] = []
    objects: dict[str, tuple[str, int]] = {}
    top: set[str] = set()
    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                folder, _, rest = member.name.partition("/")
                top.add(folder)
                handle = tar.extractfile(member)
                assert handle is not None
                if rest.startswith("objects/"):
                    sha = hashlib.sha256()
                    while chunk := handle.read(1024 * 1024):
                        sha.update(chunk)
                    objects[rest.removeprefix("objects/")] = (sha.hexdigest(), member.size)
                elif rest in ("manifest.jsonl", "custody.jsonl", CHECKPOINTS, CERTIFICATES):
                    small[rest] = handle.read()
                else:
                    others.append(rest)
    except FileNotFoundError:
        raise EvidenceError(f"no bundle at {path}") from None
    except IsADirectoryError:
        raise EvidenceError(f"{path} is a folder; give the tar written by irp evidence export --tar") from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise EvidenceError(f"{path} is not a readable tar ({exc}); a bundle is the tar written by "
                            "irp evidence export --tar") from None
    if len(top) != 1:
        raise EvidenceError(f"{path}: expected one incident folder in the tar, found {len(top)} "
                            f"({', '.join(sorted(top)) or 'none'})")
    return top.pop(), small, objects, others


def _manifest(data: bytes, problems: list[IntegrityProblem]) -> list[EvidenceItem]:
    items = []
    for n, line in enumerate(data.splitlines(), 1):
        try:
            items.append(EvidenceItem.model_validate_json(line))
        except ValidationError:
            problems.append(IntegrityProblem(kind="broken", subject=f"manifest.jsonl line {n}",
                                             detail="not a valid manifest entry"))
    return items


def _checkpoints(data: bytes, problems: list[IntegrityProblem]) -> list[Checkpoint]:
    found = []
    for n, line in enumerate(data.splitlines(), 1):
        subject = f"{CHECKPOINTS} line {n}"
        try:
            checkpoint = Checkpoint.model_validate({**json.loads(line), "label": subject})
        except (ValueError, ValidationError):
            problems.append(IntegrityProblem(kind="broken", subject=subject, detail="not a valid checkpoint"))
            continue
        if hashlib.sha256(checkpoint.body()).hexdigest() != checkpoint.hash:
            problems.append(IntegrityProblem(kind="altered", subject=subject, detail=(
                f"checkpoint {checkpoint.number} altered: its content does not match its hash")))
            continue
        found.append(checkpoint)
    return found


def verify_bundle(path: Path, certificates: Path | None = None) -> BundleReport:
    """Check a bundle offline; `certificates`: the TSA roots to trust (default: the bundle's own copy)."""
    from irp.evidence.timestamps import TimestampError, load_certificates, verify_timestamp

    incident_id, small, objects, others = _read(Path(path))
    report = BundleReport(incident_id=incident_id)
    problems = report.problems
    for required in ("manifest.jsonl", "custody.jsonl"):
        if required not in small:
            problems.append(IntegrityProblem(kind="missing", subject=required, detail="not in the bundle"))
    items = _manifest(small.get("manifest.jsonl", b""), problems)
    raws = [RawEntry(label=f"custody.jsonl line {n}", text=line)
            for n, line in enumerate(small.get("custody.jsonl", b"").splitlines(), 1)]
    report.custody_entries = len(raws)
    problems.extend(check_chain(incident_id, raws)[1])
    entries = parse_entries(raws)
    problems.extend(cross_check(items, entries))
    archived = {e.object: e.seq for e in entries if e.event == "archived" and e.object}
    for item in items:
        sha, size = objects.pop(item.name, (None, 0))
        if sha is None:
            problems.append(IntegrityProblem(kind="missing", subject=item.name, detail="in the manifest, not in the bundle"))
            continue
        if sha != item.sha256 or size != item.size:
            problems.append(IntegrityProblem(kind="altered", subject=item.name, detail=(
                f"content differs from the manifest: sha256 {sha} ({size} bytes), manifest {item.sha256} "
                f"({item.size} bytes)")))
        report.objects.append(BundleObject(name=item.name, sha256=sha, collected_at=item.collected_at,
                                           archived_seq=archived.get(item.name)))
    for name in [*(f"objects/{n}" for n in sorted(objects)), *others]:
        problems.append(IntegrityProblem(kind="unexpected", subject=name, detail="in the bundle, not in the manifest"))

    checkpoints = _checkpoints(small.get(CHECKPOINTS, b""), problems)
    report.checkpoints = len(checkpoints)
    roots = None
    if certificates is not None:
        roots, report.certificates = load_certificates(certificates), str(certificates)
    elif CERTIFICATES in small:
        from cryptography import x509

        try:
            roots = x509.load_pem_x509_certificates(small[CERTIFICATES])
            report.certificates = f"the bundle's {CERTIFICATES}"
        except ValueError:
            problems.append(IntegrityProblem(kind="broken", subject=CERTIFICATES, detail="not a PEM file of certificates"))
    trusted: list[tuple[datetime, int]] = []  # (genTime, anchored seq) of each sound timestamped checkpoint
    for checkpoint in checkpoints:
        found = compare_heads(incident_id, entries, checkpoint)
        problems.extend(found)
        token = checkpoint.token()
        if token is None or found:
            continue
        if roots is None:
            problems.append(IntegrityProblem(kind="broken", subject=checkpoint.label, detail=(
                "timestamped, but no TSA certificates to check it with (give --tsa-certificates)")))
            continue
        try:
            trusted.append((verify_timestamp(token, checkpoint.body(), roots), checkpoint.heads[incident_id].seq))
        except TimestampError as exc:
            problems.append(IntegrityProblem(kind="broken", subject=checkpoint.label, detail=str(exc)))
    report.timestamped = len(trusted)
    for obj in report.objects:
        times = [at for at, seq in trusted if obj.archived_seq is not None and seq >= obj.archived_seq]
        obj.trusted_at = min(times, default=None)
    return report
