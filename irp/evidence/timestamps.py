"""RFC 3161 trusted timestamps: ask a time-stamping authority (TSA) to sign a digest, and check its token.

A token proves that the digest (a checkpoint's hash, anchors.py) existed at the token's genTime, to
anyone who trusts the TSA's root certificate: `rfc3161-client` builds the request and verifies the
signature, the certificate chain up to the given roots and the message imprint.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import httpx
from cryptography import x509
from rfc3161_client import HashAlgorithm, TimestampRequestBuilder, VerificationError, VerifierBuilder, decode_timestamp_response

from irp.errors import ConfigurationError, EvidenceError

__all__ = ["TimestampError", "load_certificates", "request_timestamp", "verify_timestamp"]


class TimestampError(EvidenceError):
    """Raised when a TSA does not answer with a token, or a token does not verify."""


def request_timestamp(url: str, message: bytes, *, timeout: float = 10.0) -> bytes:
    """The TSA's DER-encoded TimeStampResp over SHA-256(`message`), with its certificate and a nonce."""
    request = (TimestampRequestBuilder().data(message).hash_algorithm(HashAlgorithm.SHA256).nonce(nonce=True)
               .cert_request(cert_request=True).build())
    try:
        answer = httpx.post(url, content=request.as_bytes(), timeout=timeout,
                            headers={"Content-Type": "application/timestamp-query"})
    except httpx.HTTPError as exc:
        raise TimestampError(f"TSA {url} did not answer: {exc}") from None
    if answer.status_code != 200:
        raise TimestampError(f"TSA {url} answered HTTP {answer.status_code}")
    try:
        response = decode_timestamp_response(answer.content)
    except ValueError as exc:
        raise TimestampError(f"TSA {url} answered something that is not a timestamp response: {exc}") from None
    if response.status not in (0, 1):  # granted, granted with modifications
        raise TimestampError(f"TSA {url} refused: status {response.status} {' '.join(response.status_string)}")
    if response.tst_info.nonce != request.nonce:
        raise TimestampError(f"TSA {url} answered with another request's nonce")
    return answer.content


def load_certificates(path: Path) -> list[x509.Certificate]:
    """The certificates of a PEM file (IRP_TSA_CERTIFICATES, or the bundle's copy)."""
    try:
        certificates = x509.load_pem_x509_certificates(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigurationError(f"TSA certificates {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise ConfigurationError(f"TSA certificates {path}: not a PEM file of certificates") from None
    return certificates


def verify_timestamp(token: bytes, message: bytes, certificates: list[x509.Certificate]) -> datetime:
    """The genTime of a TSA response over SHA-256(`message`), once verified up to one of the self-signed
    `certificates` (the others count as intermediates)."""
    if not certificates:
        raise TimestampError("no TSA certificates to verify the timestamp with (IRP_TSA_CERTIFICATES)")
    builder = VerifierBuilder(roots=[c for c in certificates if c.issuer == c.subject],
                              intermediates=[c for c in certificates if c.issuer != c.subject])
    try:
        response = decode_timestamp_response(token)
        builder.build().verify_message(response, message)
    except (ValueError, VerificationError) as exc:
        kind = "does not verify" if isinstance(exc, VerificationError) else "is not a timestamp response"
        raise TimestampError(f"timestamp token {kind}: {exc}") from None
    return response.tst_info.gen_time
