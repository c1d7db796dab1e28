"""`evidence.collect`: archive a document or a local file as evidence, with its SHA-256 in the manifest.

Side effects: items in the evidence store, timeline entries. `evidence.collect
path:` reads only regular files below IRP_EVIDENCE_COLLECT_ROOTS, symlinks resolved, checking what
was opened (not only the name); never kernel or device files, nor credentials, whatever the roots.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import IO, Any

from pydantic import Field, model_validator

from irp.actions.registry import ActionArgs, ActionContext, action
from irp.errors import ActionError, NotConfiguredError, PermanentError
from irp.settings import get_settings

# Never collected, even below a root: kernel and device files, secrets mounted for services, credentials.
_DENIED_TREES = ("/proc", "/sys", "/dev", "/run/secrets", "/var/run/secrets", "/etc/ssh", "/etc/ssl/private")
_DENIED_FILES = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/security/opasswd")
_DENIED_NAMES = {".ssh", ".gnupg", ".aws", ".azure", ".kube", ".docker", ".netrc", ".pgpass", ".git-credentials"}


class CollectArgs(ActionArgs):
    name: str = Field(..., description="Evidence name, e.g. logs/auth.json (letters, digits, . _ - /).")
    content: Any = Field(None, description="Text, or a structure archived as JSON.")
    path: Path | None = Field(None, description="A local file below IRP_EVIDENCE_COLLECT_ROOTS to archive, streamed "
                                                "(e.g. a log bundle); an absolute path, never from alert data.")
    content_type: str | None = Field(None, description="MIME type; guessed from content when unset.")
    source_system: str = Field("", description="System the evidence comes from.")
    source_time: str | None = Field(None, description="The source's own timestamp, kept as given.")

    @model_validator(mode="after")
    def _one_source(self) -> CollectArgs:
        if (self.content is None) == (self.path is None):
            raise ValueError("give exactly one of content or path")
        return self


@action
def collect(args: CollectArgs, ctx: ActionContext) -> dict[str, Any]:
    """Archive a document or a local file as evidence, with its SHA-256 in the manifest."""
    options = {"source_system": args.source_system, "source_time": args.source_time}
    if args.path is not None:
        try:
            with open_collectable(args.path) as handle:
                item = ctx.archive(args.name, handle, content_type=args.content_type or "application/octet-stream",
                                   **options)
        except OSError as exc:
            raise ActionError(f"cannot read {args.path}: {exc.strerror}") from None
    elif isinstance(args.content, str):
        item = ctx.archive(args.name, args.content.encode(), content_type=args.content_type or "text/plain",
                           **options)
    else:
        data = json.dumps(args.content, indent=2, sort_keys=True, ensure_ascii=False, default=str).encode()
        item = ctx.archive(args.name, data, content_type=args.content_type or "application/json", **options)
    return {"name": item.name, "sha256": item.sha256, "size": item.size}


def open_collectable(path: Path) -> IO[bytes]:
    """`path` opened for reading; refused unless it is a regular file below a collection root, and allowed."""
    roots = [os.path.realpath(root) for root in get_settings().evidence_collect_roots]
    if not roots:
        raise NotConfiguredError("evidence.collect path: collecting local files is disabled: IRP_EVIDENCE_COLLECT_ROOTS "
                                 "names no folder; set it to the folders files may be collected from")
    if not path.is_absolute():
        raise PermanentError(f"evidence.collect: {path} is not an absolute path", code="PathNotAllowed")
    _check_collectable(path, os.path.realpath(path), roots)
    fd = os.open(os.path.realpath(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        _check_collectable(path, os.readlink(f"/proc/self/fd/{fd}"), roots)  # what was opened, not what was named
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise PermanentError(f"evidence.collect: {path} is not a regular file", code="PathNotAllowed")
        for name in _DENIED_FILES:  # a hard link to one of them
            if os.path.exists(name) and os.path.samestat(opened, os.stat(name)):
                raise PermanentError(f"evidence.collect: {path} is {name}: never collected", code="PathNotAllowed")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _check_collectable(path: Path, real: str, roots: list[str]) -> None:
    """PermanentError unless `real` (the resolved `path`) is below a root and not a denied file."""
    shown = str(path) if str(path) == real else f"{path} (resolved: {real})"
    if (any(real == tree or real.startswith(tree + "/") for tree in _DENIED_TREES) or real in _DENIED_FILES
            or _DENIED_NAMES & set(real.split("/"))):
        raise PermanentError(f"evidence.collect: {shown} is a kernel, device or credential file: never collected, "
                             "even below IRP_EVIDENCE_COLLECT_ROOTS", code="PathNotAllowed")
    if not any(real == root or real.startswith(root.rstrip("/") + "/") for root in roots):
        raise PermanentError(f"evidence.collect: {shown} is not below IRP_EVIDENCE_COLLECT_ROOTS "
                             f"({', '.join(roots)}): refused, nothing read", code="PathNotAllowed")
