"""Incident history from the evidence store alone (policy §10): no Prefect database needed.

Records (incident.json), manifests and the custody/audit chain live in the store; this module
reads them for `irp incidents`, `irp actions list` and `irp report monthly`, builds an incident's
full timeline, and writes the self-contained export bundle.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import hashlib
import io
import json
import tarfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from irp import audit
from irp.errors import EvidenceError, IrpError
from irp.evidence.base import EvidenceStore, local_actor
from irp.evidence.custody import check_chain
from irp.lifecycle import waiting_text
from irp.models import Incident, IncidentStatus, IncidentType, Severity
from irp.reports.charts import timeline_svg
from irp.reports.kpis import METRICS, IncidentMetrics, format_duration, measure_incident
from irp.reports.review import ReviewNotes, report_html, report_markdown

__all__ = [
    "BundleResult",
    "TimelineRow",
    "export_bundle",
    "filter_incidents",
    "find_incident",
    "full_timeline",
    "incident_row",
    "load_incidents",
    "parse_since",
    "rows_csv",
]


def load_incidents(store: EvidenceStore) -> tuple[list[Incident], list[str]]:
    """Every incident record in the store, and one line per folder whose record could not be read."""
    incidents, skipped = [], []
    for incident_id in store.incident_ids():
        try:
            incidents.append(store.load_incident(incident_id))
        except EvidenceError as exc:
            skipped.append(f"{incident_id}: {exc}")
        except ValidationError as exc:
            skipped.append(f"{incident_id}: the incident record does not validate "
                           f"({exc.error_count()} problem(s)); run irp audit verify {incident_id}")
    return incidents, skipped


def find_incident(store: EvidenceStore, incident_id: str) -> Incident:
    """One incident's record; an unknown id names the store and the closest known ids."""
    try:
        return store.load_incident(incident_id)
    except EvidenceError:
        known = store.incident_ids()
        if incident_id in known:
            raise
        close = difflib.get_close_matches(incident_id, known, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `irp incidents list` shows the known ids"
        raise IrpError(f"no incident {incident_id} in {store.url}{hint}") from None
    except ValidationError as exc:
        raise IrpError(f"the record of {incident_id} in {store.url} does not validate "
                       f"({exc.error_count()} problem(s)); run irp audit verify {incident_id}") from None


def parse_since(text: str) -> datetime:
    """A date (YYYY-MM-DD) or an ISO 8601 time, as an aware UTC datetime."""
    try:
        if len(text.strip()) == 10:
            day = date.fromisoformat(text.strip())
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise IrpError(f"--since {text!r}: not a date; use YYYY-MM-DD or an ISO 8601 time "
                       "such as 2026-11-20T09:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def filter_incidents(
    incidents: list[Incident],
    *,
    type: IncidentType | None = None,
    severity: Severity | None = None,
    status: IncidentStatus | None = None,
    since: datetime | None = None,
) -> list[Incident]:
    """The incidents matching every filter given, newest detection first."""
    selected = [
        i for i in incidents
        if (type is None or i.type == type)
        and (severity is None or i.severity == severity)
        and (status is None or i.status == status)
        and (since is None or i.detected_at >= since)
    ]
    return sorted(selected, key=lambda i: (i.detected_at, i.id), reverse=True)


def incident_row(incident: Incident, metrics: IncidentMetrics | None = None) -> dict[str, Any]:
    """One incident as a flat row (list --json and --csv)."""
    metrics = metrics or measure_incident(incident)
    row: dict[str, Any] = {
        "id": incident.id,
        "type": incident.type.value,
        "severity": incident.severity.value,
        "status": incident.status.value,
        "title": incident.title,
        "waiting_for": waiting_text(incident) if incident.waiting else "",
        "detected_at": incident.detected_at.isoformat(),
        "aware_at": incident.aware_at.isoformat(),
        "escalated": incident.escalated,
        "playbook": f"{incident.playbook.name}@{incident.playbook.version}" if incident.playbook else "",
        "flow_run_ids": " ".join(incident.flow_run_ids),
        "open_actions": sum(1 for a in incident.actions if a.status != "closed"),
    }
    for metric in METRICS:
        m = metrics.measures[metric]
        row[f"{metric}_seconds"] = None if m.seconds is None else round(m.seconds, 3)
        row[f"{metric}_deadline"] = m.state
    return row


def rows_csv(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """Rows as CSV text with a header line."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns or (list(rows[0]) if rows else []), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()


class TimelineRow(BaseModel):
    """One dated line of `irp incidents show`."""

    at: datetime
    kind: str
    what: str
    by: str = ""
    stage: str = ""


def full_timeline(incident: Incident, evidence: list[Any], audit_entries: list[Any]) -> list[TimelineRow]:
    """Stages, steps, approvals, notifications (the record's timeline), evidence items and audit entries."""
    rows = [TimelineRow(at=e.at, kind=e.kind, what=e.message, by=e.actor,
                        stage=e.stage.value if e.stage else "") for e in incident.timeline]
    for s in incident.stages:
        label = f"{s.stage.value} ({s.phase})" if s.phase else s.stage.value
        if not any(e.kind == "stage" and e.stage == s.stage for e in incident.timeline):
            rows.append(TimelineRow(at=s.ended_at, kind="stage", what=f"stage {label} {s.status.value}",
                                    stage=s.stage.value))
    for item in evidence:
        who = item.collected_by.step and f"{item.collected_by.stage}.{item.collected_by.step}"
        rows.append(TimelineRow(at=item.collected_at, kind="evidence",
                                what=f"{item.name} ({item.size} bytes, sha256 {item.sha256[:16]}…)",
                                by=who or item.source_system, stage=item.collected_by.stage))
    for entry in audit_entries:
        act = entry.details.get("act", "")
        extra = {k: v for k, v in entry.details.items() if k not in ("act", "flow_run_ids")}
        rows.append(TimelineRow(at=entry.at, kind="audit", what=f"{act}: {json.dumps(extra, ensure_ascii=False)}",
                                by=entry.actor))
    return sorted(rows, key=lambda r: r.at)


class BundleResult(BaseModel):
    """What `irp incidents export` wrote."""

    path: Path
    files: list[str]
    size: int
    sha256: str


def _add(tar: tarfile.TarFile, name: str, data: bytes, sums: dict[str, str]) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o444
    tar.addfile(info, io.BytesIO(data))
    sums[name] = hashlib.sha256(data).hexdigest()


_README = """Export of incident {id} ({type}, {severity}), {at} UTC, from {store}.

incident.json      the incident record (status, stages, actions, playbook version, flow runs)
timeline.json      every dated fact: stages, steps, approvals, notifications, evidence, audit entries
timeline.svg       the response timeline as a chart
metrics.json       time to acknowledge, contain, restore and notify against the severity's targets
report.html/.md    the post-incident review ({report_origin})
manifest.jsonl     the evidence manifest: each archived item with its SHA-256
custody.jsonl      the custody and audit log, byte for byte as stored: each line holds the SHA-256
                   of the line before (`prev`) and its own (`hash`, over its canonical JSON without
                   `hash`); chain check at export: {chain}
SHA256SUMS         the SHA-256 of every file above (sha256sum -c SHA256SUMS)

The evidence objects themselves: irp evidence export {id} --tar FILE.
"""


def export_bundle(store: EvidenceStore, incident_id: str, path: Path, *, actor: str | None = None) -> BundleResult:
    """Write a tar.gz holding the report, timeline, metrics, evidence manifest and custody/audit log.

    The export is itself an audit entry (`exported`, with the bundle's SHA-256).
    """
    incident = find_incident(store, incident_id)
    evidence = store.manifest(incident_id)
    names = {item.name for item in evidence}
    sums: dict[str, str] = {}
    files: dict[str, bytes] = {}
    reports = {}
    for suffix in ("report.html", "report.md"):  # the report with the review's outcome, else the draft
        name = next((n for n in (f"review/final-{suffix}", f"review/{suffix}") if n in names), None)
        if name:
            with store.open(incident_id, name, actor=actor) as handle:
                reports[f"review/{suffix}"] = handle.read()
    raws = store._custody_raw(incident_id)  # byte for byte (after the reads above), to check offline
    _, chain_problems = check_chain(incident_id, raws)
    entries = [e for e in store.custody(incident_id) if e.event == "audit"]
    if reports:
        origin = "as archived by the review stage"
    else:
        origin = "generated at export: no review was archived"
        reports = {"review/report.html": report_html(incident, ReviewNotes(), evidence).encode(),
                   "review/report.md": report_markdown(incident, ReviewNotes(), evidence).encode()}
    rows = full_timeline(incident, evidence, entries)
    files["incident.json"] = incident.model_dump_json(indent=2).encode()
    files["timeline.json"] = json.dumps([r.model_dump(mode="json") for r in rows], indent=2,
                                        ensure_ascii=False).encode()
    files["timeline.svg"] = timeline_svg(incident).encode() if incident.stages else b""
    files["metrics.json"] = measure_incident(incident).model_dump_json(indent=2).encode()
    for name, data in reports.items():
        files[name.removeprefix("review/")] = data
    files["manifest.jsonl"] = "".join(item.model_dump_json() + "\n" for item in evidence).encode()
    files["custody.jsonl"] = b"".join((raw.text or b"") + b"\n" for raw in raws)
    chain = "intact" if not chain_problems else f"BROKEN: {chain_problems[0]}"
    files["README.txt"] = _README.format(
        id=incident.id, type=incident.type.value, severity=incident.severity.value, store=store.url,
        at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"), report_origin=origin, chain=chain).encode()
    if not incident.stages:
        files.pop("timeline.svg")
    path = path.expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(path, "w:gz") as tar:
            for name, data in files.items():
                _add(tar, f"{incident.id}/{name}", data, sums)
            lines = "".join(f"{digest}  {name.split('/', 1)[1]}\n" for name, digest in sums.items())
            _add(tar, f"{incident.id}/SHA256SUMS", lines.encode(), sums)
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
        raise IrpError(f"cannot write the bundle {path}: {exc.strerror or exc}") from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    size = path.stat().st_size
    audit.record(store, incident_id, "exported", actor=actor or local_actor(),
                 details={"bundle": str(path.resolve()), "sha256": digest, "size": size,
                          "files": sorted(files), "chain_intact": not chain_problems})
    return BundleResult(path=path, files=sorted([*files, "SHA256SUMS"]), size=size, sha256=digest)


def describe_measures(metrics: IncidentMetrics) -> list[str]:
    """One line per measure: `contain   4m 05s  met (target 4h 00m)`."""
    return [f"{name:<12} {format_duration(m.seconds):>9}  {m.state:<8} (target {format_duration(m.target_seconds)})"
            for name, m in metrics.measures.items()]
