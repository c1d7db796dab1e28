"""AWS SNS message signatures (SignatureVersion 1: SHA1, 2: SHA256) and subscription confirmation.

A message is authentic when its topic is one of IRP_SNS_TOPIC_ARNS, its SigningCertURL is https on
a host matching IRP_SNS_HOST_PATTERN, and the RSA signature of its canonical string verifies with
that certificate's key. Certificates are fetched once and cached.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections import OrderedDict
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from irp.intake.payloads import SnsMessage

__all__ = ["CertificateUnavailable", "SnsVerifier", "string_to_sign"]

_NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_CONFIRMATION_KEYS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
_MAX_CERT_BYTES = 64 * 1024


class CertificateUnavailable(Exception):
    """Raised when the signing certificate cannot be fetched now (network): the sender should retry."""


def string_to_sign(message: SnsMessage) -> bytes:
    """The canonical string SNS signs: selected "Key\\nValue\\n" pairs in byte order of the keys."""
    keys = _NOTIFICATION_KEYS if message.Type == "Notification" else _CONFIRMATION_KEYS
    parts = []
    for key in keys:
        value = getattr(message, key)
        if value is None:
            continue
        parts.append(f"{key}\n{value}\n")
    return "".join(parts).encode("utf-8")


class SnsVerifier:
    """Checks SNS messages against allowed topics and certificate hosts."""

    def __init__(self, topics: set[str], host_pattern: str, ca_bundle: Path | None = None) -> None:
        self.topics = topics
        self.host_pattern = re.compile(host_pattern)
        self.verify_tls: str | bool = str(ca_bundle) if ca_bundle else True
        self._keys: OrderedDict[str, rsa.RSAPublicKey] = OrderedDict()
        self._lock = asyncio.Lock()

    def allowed_url(self, url: str | None) -> bool:
        """https on an allowed host (host[:port] as written), no credentials in the URL."""
        if not url:
            return False
        try:
            parts = urlsplit(url)
        except ValueError:
            return False
        return parts.scheme == "https" and "@" not in parts.netloc and bool(self.host_pattern.match(parts.netloc))

    async def verify(self, message: SnsMessage) -> bool:
        """True when the message is authentic; CertificateUnavailable when that cannot be told now."""
        if message.TopicArn not in self.topics or not self.allowed_url(message.SigningCertURL):
            return False
        if message.Type == "SubscriptionConfirmation" and not self.allowed_url(message.SubscribeURL):
            return False
        try:
            signature = base64.b64decode(message.Signature, validate=True)
        except (binascii.Error, ValueError):
            return False
        key = await self._key(message.SigningCertURL)
        if key is None:
            return False
        algorithm = hashes.SHA1() if message.SignatureVersion == "1" else hashes.SHA256()  # noqa: S303 - SNS v1
        try:
            key.verify(signature, string_to_sign(message), padding.PKCS1v15(), algorithm)
        except (InvalidSignature, ValueError):
            return False
        return True

    async def _key(self, url: str) -> rsa.RSAPublicKey | None:
        async with self._lock:
            if url in self._keys:
                self._keys.move_to_end(url)
                return self._keys[url]
            try:
                async with httpx.AsyncClient(verify=self.verify_tls, timeout=5.0, follow_redirects=False) as client:
                    response = await client.get(url)
            except httpx.HTTPError as exc:
                raise CertificateUnavailable(f"cannot fetch {url}: {exc}") from None
            if response.status_code != 200 or len(response.content) > _MAX_CERT_BYTES:
                return None
            try:
                key = x509.load_pem_x509_certificate(response.content).public_key()
            except ValueError:
                return None
            if not isinstance(key, rsa.RSAPublicKey):
                return None
            self._keys[url] = key
            while len(self._keys) > 16:
                self._keys.popitem(last=False)
            return key
