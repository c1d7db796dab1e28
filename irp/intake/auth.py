"""Who may post alerts: bearer tokens, Standard Webhooks signatures, PagerDuty signatures, SNS signatures,
and the API-key header of an EventBridge connection.

Each source accepts a set of methods (IRP_WEBHOOK_AUTH overrides the defaults); a request passes
when one of them passes. Every comparison is constant-time. A failure never says which part was
wrong: the caller answers 401 "unauthenticated" whatever the reason.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import Literal

from pydantic import SecretStr
from standardwebhooks import Webhook

from irp.errors import ConfigurationError
from irp.settings import Settings
from irp.text import split_list

__all__ = ["PENDING", "AuthResult", "Authenticator", "DEFAULT_METHODS", "METHODS", "Method"]

Method = Literal["token", "hmac", "pagerduty", "sns", "apikey"]
METHODS: tuple[str, ...] = ("token", "hmac", "pagerduty", "sns", "apikey")
DEFAULT_METHODS: dict[str, tuple[str, ...]] = {
    "alertmanager": ("token", "hmac"),
    "grafana": ("token", "hmac"),
    "generic": ("token", "hmac"),
    "report": ("token", "hmac"),
    "pagerduty": ("pagerduty", "token"),
    "sns": ("sns",),
    "eventbridge": ("apikey", "token"),  # an EventBridge connection: API key header, or basic auth/bearer (token)
}
_MAX_ID = 256
log = logging.getLogger("irp.intake")


@dataclass(frozen=True)
class AuthResult:
    """A passed check; `delivery_key` identifies the delivery for replay detection, when the method has one."""

    method: str
    delivery_key: str | None = None


PENDING = AuthResult("pending")  # before_body: only the body can tell (a signature over it)


def _revealed(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


class Authenticator:
    """The methods of each source and the credentials to check them with."""

    def __init__(self, settings: Settings, local: bool = False) -> None:
        self.local = local
        self._tokens = [_digest(t) for t in split_list(_revealed(settings.webhook_token))]
        self._webhooks = []
        for secret in split_list(_revealed(settings.webhook_secret), " ,"):
            try:
                self._webhooks.append(Webhook(secret))
            except Exception as exc:  # the library raises bare errors on bad base64
                raise ConfigurationError(
                    f"IRP_WEBHOOK_SECRET: a secret is not a Standard Webhooks secret (whsec_ + base64): {exc}"
                ) from None
        self._pagerduty = [s.encode() for s in split_list(_revealed(settings.pagerduty_secret))]
        self.sns_topics = set(split_list(settings.sns_topic_arns))
        self._api_key_header = settings.eventbridge_api_key_header.lower()
        self._api_keys = [_digest(k) for k in split_list(_revealed(settings.eventbridge_api_key))]
        self.methods: dict[str, tuple[str, ...]] = dict(DEFAULT_METHODS)
        for source, value in settings.webhook_auth.items():
            if source not in DEFAULT_METHODS:
                raise ConfigurationError(
                    f"IRP_WEBHOOK_AUTH: unknown source {source!r}; valid: {', '.join(DEFAULT_METHODS)}")
            methods = tuple(split_list(value))
            bad = [m for m in methods if m not in METHODS]
            if bad or not methods:
                raise ConfigurationError(
                    f"IRP_WEBHOOK_AUTH: {source}: unknown method {', '.join(bad) or '(none)'}; "
                    f"valid: {', '.join(METHODS)}")
            self.methods[source] = methods

    def configured(self, method: str) -> bool:
        return bool({"token": self._tokens, "hmac": self._webhooks, "pagerduty": self._pagerduty,
                     "sns": self.sns_topics, "apikey": self._api_keys}[method])

    @property
    def any_configured(self) -> bool:
        return any(self.configured(m) for m in METHODS)

    def open_source(self, source: str) -> bool:
        """True when the source needs no credential: local use with none configured for it."""
        return self.local and not any(self.configured(m) for m in self.methods[source])

    def unusable_sources(self) -> list[str]:
        """Sources none of whose methods has a credential (they answer 401 unless local)."""
        return [s for s, methods in self.methods.items() if not any(self.configured(m) for m in methods)]

    def before_body(self, source: str, headers) -> AuthResult | None:
        """What the headers alone decide, before the body is read: a passed check (local, token), PENDING when a
        method that signs the body may still pass (its secret is configured and its header sent; SNS: its topics
        are configured), None when nothing can pass (401 without reading the body)."""
        if self.open_source(source):
            return AuthResult("local")
        methods = self.methods[source]
        if "token" in methods and self._token_ok(headers):
            return AuthResult("token")
        if "apikey" in methods and self._api_key_ok(headers):
            return AuthResult("apikey")
        if ("hmac" in methods and self._webhooks and headers.get("webhook-id") and headers.get("webhook-signature")
                or "pagerduty" in methods and self._pagerduty and headers.get("x-pagerduty-signature")
                or "sns" in methods and self.sns_topics):
            return PENDING
        return None

    def check(self, source: str, headers, body: bytes) -> AuthResult | None:
        """The first method of `source` that passes on these headers and body (SNS is checked on the body later)."""
        if self.open_source(source):
            return AuthResult("local")
        for method in self.methods[source]:
            if method == "token" and self._token_ok(headers):
                return AuthResult("token")
            if method == "apikey" and self._api_key_ok(headers):
                return AuthResult("apikey")
            if method == "hmac":
                result = self._hmac(headers, body)
                if result:
                    return result
            if method == "pagerduty" and self._pagerduty_ok(headers, body):
                return AuthResult("pagerduty")
        return None

    def wants_sns(self, source: str) -> bool:
        return "sns" in self.methods[source] and not self.open_source(source)

    def check_token(self, headers) -> bool:
        """True when the Authorization header carries a configured token (bearer, or basic's password)."""
        return self._token_ok(headers)

    def _token_ok(self, headers) -> bool:
        if not self._tokens:
            return False
        header = headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() == "basic":  # SNS and Grafana can only send basic auth: the password is the token
            try:
                value = base64.b64decode(value, validate=True).decode("utf-8").partition(":")[2]
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return False
        elif scheme.lower() != "bearer":
            return False
        presented = _digest(value)
        ok = False
        for token in self._tokens:
            ok |= hmac.compare_digest(presented, token)
        return ok

    def _api_key_ok(self, headers) -> bool:
        if not self._api_keys:
            return False
        presented = _digest(headers.get(self._api_key_header, ""))
        ok = False
        for key in self._api_keys:
            ok |= hmac.compare_digest(presented, key)
        return ok

    def _hmac(self, headers, body: bytes) -> AuthResult | None:
        if not self._webhooks:
            return None
        msg_id = headers.get("webhook-id", "")
        if not msg_id or len(msg_id) > _MAX_ID:
            return None
        wanted = {k: headers.get(k, "") for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
        for webhook in self._webhooks:
            try:
                webhook.verify(body, wanted, json_parse=False)
            except Exception:  # WebhookVerificationError, and bad base64/undecodable bodies raise others
                continue
            return AuthResult("hmac", delivery_key=f"webhook-id:{msg_id}")
        return None

    def _pagerduty_ok(self, headers, body: bytes) -> bool:
        if not self._pagerduty:
            return False
        presented = [s.strip()[3:] for s in headers.get("x-pagerduty-signature", "").split(",")
                     if s.strip().startswith("v1=")]
        ok = False
        for secret in self._pagerduty:
            expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
            for signature in presented[:10]:
                ok |= hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogateescape"))
        return ok
