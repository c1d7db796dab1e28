"""`irp evidence`: list, verify, export, anchor and flush an incident's evidence (policy §10, §12).

Every command works on the store of IRP_EVIDENCE_URL (file:// or s3://), except `verify --bundle`, which
checks an exported tar offline. verify, export and the reads are recorded in the incident's custody log.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from irp.cli.common import echo_err, open_evidence_store

if TYPE_CHECKING:
    from irp.evidence import EvidenceStore

__all__ = ["evidence_app"]

evidence_app = typer.Typer(no_args_is_help=True, help="List, verify, export and flush archived evidence.")

Incident = Annotated[str, typer.Argument(metavar="INCIDENT", help="Incident id, e.g. INC-20261129-7F3A9C.")]


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _note_spooled(store: EvidenceStore, incident: str) -> None:
    waiting = store.waiting(incident)
    if waiting:
        echo_err(f"note: {waiting} writes of {incident} still wait in the local spool (irp evidence flush)")


@evidence_app.command("list")
def list_(
    incident: Annotated[str | None, typer.Argument(metavar="[INCIDENT]", help="Incident id; none: every incident.")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON manifest entry per line.")] = False,
) -> None:
    """Print the manifest of INCIDENT (name, size, SHA-256, who collected it, when), or every incident id."""
    store = open_evidence_store()
    if incident is None:
        for incident_id in store.incident_ids():
            typer.echo(incident_id)
        return
    items = store.manifest(incident)
    _note_spooled(store, incident)
    if as_json:
        for item in items:
            typer.echo(item.model_dump_json())
        return
    if not items:
        echo_err(f"no evidence for {incident} in {store.url}")
        raise typer.Exit(1)
    typer.echo(f"{incident}: {len(items)} items in {store.location(incident)}")
    for item in items:
        by = item.collected_by
        who = f"{by.stage}.{by.step}" if by.step else item.source_system or "irp"
        kept = f"  kept until {item.retention_until:%Y-%m-%d}" if item.retention_until else ""
        typer.echo(f"  {item.name:<40} {_size(item.size):>10}  sha256 {item.sha256}  "
                   f"{item.collected_at:%Y-%m-%dT%H:%M:%SZ}  {who}{kept}")


@evidence_app.command()
def custody(incident: Incident) -> None:
    """Print the custody log of INCIDENT: who collected, archived, read, exported and verified what."""
    for entry in open_evidence_store().custody(incident):
        subject = f" {entry.object}" if entry.object else ""
        typer.echo(f"{entry.seq:>5}  {entry.at:%Y-%m-%dT%H:%M:%SZ}  {entry.event:<9}{subject}  by {entry.actor}")


@evidence_app.command()
def verify(
    incident: Annotated[str | None, typer.Argument(
        metavar="[INCIDENT]", help="Incident id, e.g. INC-20261129-7F3A9C (not with --bundle).")] = None,
    bundle: Annotated[Path | None, typer.Option(
        "--bundle", metavar="FILE", help="Check a tar from `irp evidence export --tar` offline (no store needed).")] = None,
    tsa_certificates: Annotated[Path | None, typer.Option(
        "--tsa-certificates", metavar="PEM", help="With --bundle: the TSA roots to trust (default: the bundle's copy).",
    )] = None,
) -> None:
    """Re-hash every object of INCIDENT, check its custody chain and its anchored head: exit 0 intact, 1 with each
    problem named. With --bundle FILE: the same offline, plus each object's earliest trusted time."""
    if (incident is None) == (bundle is None):
        echo_err("give an INCIDENT or --bundle FILE (one of them)")
        raise typer.Exit(2)
    if bundle is not None:
        _verify_bundle(bundle, tsa_certificates)
        return
    assert incident is not None
    store = open_evidence_store()
    from irp.evidence.anchors import anchor_problems

    if incident not in store.incident_ids():
        gone = anchor_problems(store, [incident]).get(incident)
        if gone:  # deleted from the store after it was anchored
            for problem in gone:
                typer.echo(str(problem))
            typer.echo(f"{incident}: NOT intact: {len(gone)} problems ({store.url})", err=True)
            raise typer.Exit(1)
    report = store.verify(incident)
    _note_spooled(store, incident)
    if report.intact:
        typer.echo(f"{incident}: intact: {report.objects} objects match the manifest, "
                   f"{report.custody_entries} custody entries chain correctly ({report.store})")
        typer.echo(f"chain head: entry {report.head_seq} {report.head_hash}")
        return
    for problem in report.problems:
        typer.echo(str(problem))
    typer.echo(f"chain head: entry {report.head_seq} {report.head_hash}", err=True)
    typer.echo(f"{incident}: NOT intact: {len(report.problems)} problems "
               f"({report.objects} objects, {report.custody_entries} custody entries, {report.store})", err=True)
    raise typer.Exit(1)


def _verify_bundle(path: Path, certificates: Path | None) -> None:
    from irp.evidence.bundle import verify_bundle

    report = verify_bundle(path, certificates)
    for obj in report.objects:
        trusted = f"{obj.trusted_at:%Y-%m-%dT%H:%M:%SZ}" if obj.trusted_at else "no trusted time"
        typer.echo(f"  {obj.name:<40} sha256 {obj.sha256}  collected {obj.collected_at:%Y-%m-%dT%H:%M:%SZ}  "
                   f"existed by {trusted}")
    for problem in report.problems:
        typer.echo(str(problem))
    summary = (f"{report.incident_id} ({path}): {len(report.objects)} objects, {report.custody_entries} custody "
               f"entries, {report.checkpoints} checkpoints, {report.timestamped} with a verified timestamp"
               + (f" (TSA certificates: {report.certificates})" if report.certificates else ""))
    if report.intact:
        typer.echo(f"intact: {summary}")
        return
    typer.echo(f"NOT intact: {len(report.problems)} problems: {summary}", err=True)
    raise typer.Exit(1)


@evidence_app.command()
def anchor() -> None:
    """Write a checkpoint now: every incident's chain head to IRP_EVIDENCE_ANCHOR_URL, timestamped with IRP_TSA_URL."""
    from irp.evidence.anchors import check_anchor, write_checkpoint

    store = open_evidence_store()
    found = check_anchor(store)
    if found is None:
        echo_err(f"no anchor for {store.url}: set IRP_EVIDENCE_ANCHOR_URL (file:///path/anchors.jsonl or s3://bucket/prefix)")
        raise typer.Exit(1)
    checkpoint = write_checkpoint(store, always=True)
    assert checkpoint is not None
    stamped = "timestamped by the TSA" if checkpoint.timestamp else "no trusted timestamp (IRP_TSA_URL unset or unreachable)"
    typer.echo(f"checkpoint {checkpoint.number}: {len(checkpoint.heads)} incidents' chain heads, hash {checkpoint.hash}, "
               f"{stamped} ({found.url})")


@evidence_app.command()
def export(
    incident: Incident,
    tar: Annotated[Path | None, typer.Option(
        "--tar", metavar="FILE",
        help="Write a tar with the objects, manifest, custody log and checkpoints (check it with verify --bundle).")] = None,
    expires: Annotated[int | None, typer.Option(
        "--expires", metavar="SECONDS", help="Presigned URL lifetime (at most IRP_EVIDENCE_PRESIGN_EXPIRY_SECONDS).",
    )] = None,
) -> None:
    """Hand INCIDENT's evidence over: presigned URLs (S3), or --tar FILE; each export is a custody entry."""
    store = open_evidence_store()
    if tar is not None:
        result = store.export_tar(incident, tar)
        typer.echo(f"{result.path}: {result.objects} objects, manifest.jsonl, custody.jsonl, anchors "
                   f"({_size(result.size)}, sha256 {result.sha256})")
        return
    urls = store.export_urls(incident, expires_in=expires)
    typer.echo(f"{incident}: {len(urls)} presigned URLs, valid until {urls[0].expires_at:%Y-%m-%dT%H:%M:%SZ}"
               " (share only with authorised people, policy §12)", err=True)
    for exported in urls:
        typer.echo(json.dumps({"name": exported.name, "sha256": exported.sha256, "url": exported.url}))


@evidence_app.command()
def flush() -> None:
    """Upload the evidence spooled while the S3 store was unreachable."""
    store = open_evidence_store()
    report = store.flush()
    typer.echo(f"{report.uploaded} spooled writes uploaded to {store.url}; {report.remaining} waiting")
    for failure in report.failed:
        echo_err(f"set aside: {failure}")
    if report.failed or report.remaining:
        raise typer.Exit(1)
