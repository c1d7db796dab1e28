"""Reading an incident's prefix back for `verify`: every version of the manifest, custody log and objects.

Out-of-band changes show in the bucket's versions: a delete marker, or more than one version of a
write-once key. Each becomes an IntegrityProblem naming what was done.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from pydantic import ValidationError

from irp.errors import EvidenceError
from irp.evidence.base import hash_stream
from irp.evidence.models import EvidenceItem, IntegrityProblem, RawEntry, StoredObject
from irp.evidence.s3.bucket import Bucket, KeyNotFound, StoreUnavailable

log = logging.getLogger(__name__)

_PUBLIC_GROUPS = ("http://acs.amazonaws.com/groups/global/AllUsers",
                  "http://acs.amazonaws.com/groups/global/AuthenticatedUsers")


class Inspector:
    """What `verify` reads from one bucket; `sse`: the encryption every object should have ("off": none)."""

    def __init__(self, bucket: Bucket, url: str, sse: str) -> None:
        self.bucket = bucket
        self.url = url
        self._sse = sse
        self._acl_readable = True

    def custody(self, base: str) -> list[RawEntry]:
        """The custody log under `base` (an incident's prefix), every entry's current version, in order."""
        prefix = base + "custody/"
        raws = []
        for key, state in sorted(self.bucket.states(prefix).items()):
            label = key[len(base):]
            if state.deleted or state.current is None:
                kept = f"; {len(state.versions)} earlier version(s) still retained" if state.versions else ""
                raws.append(RawEntry(label=label, text=None, note=f"deleted out of band{kept}"))
                continue
            note = f"overwritten out of band ({len(state.versions)} versions)" if len(state.versions) > 1 else ""
            raws.append(RawEntry(label=label, text=self.bucket.get_bytes(key, state.current.get("VersionId")),
                                 note=note))
        return raws

    def manifest(self, base: str) -> tuple[list[EvidenceItem], list[IntegrityProblem]]:
        """The manifest entries under `base` read afresh, and what is wrong with the manifest itself."""
        items, problems = [], []
        for key, state in sorted(self.bucket.states(base).items()):
            relative = key[len(base):]
            top = relative.split("/", 1)[0]
            if relative == "incident.json" or top in ("objects", "custody", "events"):
                continue
            if top != "manifest" or not relative.endswith(".json"):
                if not state.deleted:
                    problems.append(IntegrityProblem(kind="unexpected", subject=relative,
                                                     detail="not part of the evidence layout"))
                continue
            name = relative[len("manifest/"):-len(".json")]
            if state.deleted or state.current is None:
                problems.append(IntegrityProblem(kind="missing", subject=f"manifest entry of {name}",
                                                 detail="deleted out of band"))
                continue
            try:
                item = EvidenceItem.model_validate_json(self.bucket.get_bytes(key, state.current.get("VersionId")))
            except ValidationError:
                problems.append(IntegrityProblem(kind="altered", subject=f"manifest entry of {name}",
                                                 detail="not a valid manifest entry"))
                continue
            if item.name != name:
                problems.append(IntegrityProblem(kind="altered", subject=f"manifest entry of {name}",
                                                 detail=f"names {item.name!r}"))
                continue
            if len(state.versions) > 1:
                problems.append(IntegrityProblem(kind="altered", subject=f"manifest entry of {name}",
                                                 detail=f"overwritten out of band ({len(state.versions)} versions)"))
            items.append(item)
        items.sort(key=lambda item: (item.collected_at, item.name))
        return items, problems

    def objects(self, prefix: str) -> dict[str, StoredObject]:
        """Every object under `prefix` by name: size and version, or how it was deleted or overwritten."""
        found = {}
        for key, state in self.bucket.states(prefix).items():
            name = key[len(prefix):]
            if state.deleted or state.current is None:
                kept = (f"; version {state.versions[0]['VersionId']} is still retained"
                        if state.versions else "")
                found[name] = StoredObject(size=None, deleted=True,
                                           note=f"deleted out of band (a delete marker hides it){kept}")
                continue
            note = f"overwritten out of band ({len(state.versions)} versions)" if len(state.versions) > 1 else ""
            found[name] = StoredObject(size=state.current.get("Size"), version_id=state.current.get("VersionId"),
                                       note=note)
        return found

    def rehash(self, key: str, item: EvidenceItem, stored: StoredObject) -> tuple[str, int, list[IntegrityProblem]]:
        """SHA-256 and size of the object's version, and its protection problems (retention, SSE, public ACL)."""
        version = {"VersionId": stored.version_id} if stored.version_id and stored.version_id != "null" else {}
        response = self.bucket.call("get_object", Key=key, **version)
        with self.bucket.errors("GetObject", self.bucket.where(key)):
            sha, size = hash_stream(response["Body"])
        problems = []
        until = response.get("ObjectLockRetainUntilDate")
        if item.retention_until and (until is None or until < item.retention_until - timedelta(seconds=1)):
            problems.append(IntegrityProblem(kind="unprotected", subject=item.name,
                                             detail=f"Object Lock retention {until or 'none'}, archived until "
                                           f"{item.retention_until.isoformat()}"))
        if self._sse != "off" and not response.get("ServerSideEncryption"):
            problems.append(IntegrityProblem(kind="unprotected", subject=item.name, detail="not encrypted at rest"))
        grants = []
        if self._acl_readable:
            try:
                grants = self.bucket.call("get_object_acl", Key=key, **version).get("Grants", [])
            except (EvidenceError, KeyNotFound):
                pass  # ACLs disabled on the bucket: nothing can be public through them
            except StoreUnavailable as exc:  # moto answers 500 for multipart objects: stop asking
                log.warning("%s: GetObjectAcl failed (%s); public ACLs not checked", self.url, exc)
                self._acl_readable = False
        for grant in grants:
            uri = grant.get("Grantee", {}).get("URI", "")
            if uri in _PUBLIC_GROUPS:
                group = uri.rsplit("/", 1)[-1]
                problems.append(IntegrityProblem(kind="exposed", subject=item.name,
                                                 detail=f"public ACL grant: {grant.get('Permission')} to {group}"))
        return sha, size, problems
