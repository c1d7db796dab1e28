"""The S3 store's settings, checked once (encryption, Object Lock retention, presigned URLs, uploads), and the
protection arguments every write-once object is created with."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from irp.errors import ConfigurationError
from irp.models import Severity

MIB = 1024 * 1024


@dataclass(frozen=True)
class S3Options:
    """IRP_EVIDENCE_* as the S3 store uses them (modes normalised, sizes in bytes)."""

    retention_mode: str  # GOVERNANCE, COMPLIANCE or off
    retention_days: dict[str, int]
    sse: str  # AES256, aws:kms or off
    kms_key_id: str
    presign_expiry: int
    part_size: int
    concurrency: int

    def protection(self, retention: tuple[str, datetime] | None) -> dict[str, Any]:
        """PutObject / CreateMultipartUpload arguments: encryption, and Object Lock when `retention` is given."""
        args: dict[str, Any] = {}
        if self.sse != "off":
            args["ServerSideEncryption"] = self.sse
            if self.kms_key_id:
                args["SSEKMSKeyId"] = self.kms_key_id
        if retention:
            args["ObjectLockMode"], args["ObjectLockRetainUntilDate"] = retention
        return args


def _one_of(name: str, value: str, valid: tuple[str, ...]) -> str:
    """`value` spelled as in `valid` (case-insensitive); ConfigurationError listing `valid` otherwise."""
    for choice in valid:
        if value.lower() == choice.lower():
            return choice
    raise ConfigurationError(f"{name}={value!r}: valid: {', '.join(valid)}")


def s3_options(settings: Any) -> S3Options:
    """The S3 store's options from `settings`; ConfigurationError naming the variable and what is valid."""
    mode = _one_of("IRP_EVIDENCE_RETENTION_MODE", settings.evidence_retention_mode, ("GOVERNANCE", "COMPLIANCE", "off"))
    days = dict(settings.evidence_retention_days)
    bad = [k for k in days if k not in {s.value for s in Severity}]
    if bad or any(not isinstance(v, int) or v < 1 for v in days.values()):
        raise ConfigurationError(f"IRP_EVIDENCE_RETENTION_DAYS={days}: use severities "
                                 f"({', '.join(s.value for s in Severity)}) and whole days of 1 or more")
    sse = _one_of("IRP_EVIDENCE_SSE", settings.evidence_sse, ("AES256", "aws:kms", "off"))
    if settings.evidence_kms_key_id and sse != "aws:kms":
        raise ConfigurationError("IRP_EVIDENCE_KMS_KEY_ID is set but IRP_EVIDENCE_SSE is not aws:kms")
    if not 1 <= settings.evidence_presign_expiry_seconds <= 7 * 24 * 3600:
        raise ConfigurationError("IRP_EVIDENCE_PRESIGN_EXPIRY_SECONDS must be between 1 and 604800 (7 days)")
    if not 5 <= settings.evidence_part_size_mb <= 5 * 1024:
        raise ConfigurationError("IRP_EVIDENCE_PART_SIZE_MB must be between 5 and 5120")
    if not 1 <= settings.evidence_upload_concurrency <= 32:
        raise ConfigurationError("IRP_EVIDENCE_UPLOAD_CONCURRENCY must be between 1 and 32")
    return S3Options(retention_mode=mode, retention_days=days, sse=sse, kms_key_id=settings.evidence_kms_key_id,
                     presign_expiry=settings.evidence_presign_expiry_seconds,
                     part_size=settings.evidence_part_size_mb * MIB,
                     concurrency=settings.evidence_upload_concurrency)
