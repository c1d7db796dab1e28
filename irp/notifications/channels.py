"""Delivery channels: email over SMTP, and Slack, Teams and webhooks through apprise.

A recipient is a string from configuration: an email address goes out by SMTP (IRP_SMTP_URL), a
URL (slack://, msteams://, json://, jsons://…) through apprise. Each recipient gets its own message
(§12: one Client never sees another's address). Nothing goes to a recipient outside
IRP_NOTIFY_ALLOWLIST. A failure that may pass (connection refused, timeout, 4xx SMTP reply, chat
endpoint down) is retried with exponential backoff; what still fails is returned as a `failed`
Delivery for the caller to escalate. Secrets (SMTP password, chat tokens) never appear in results.
"""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from ipaddress import ip_address
from urllib.parse import unquote, urlsplit

from irp.errors import ConfigurationError
from irp.models import Delivery
from irp.redaction import redact_text
from irp.settings import Settings

__all__ = ["Message", "SmtpConfig", "deliver", "is_allowed", "is_email", "mask", "parse_smtp_url"]

_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_SMTP_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}


@dataclass(frozen=True)
class Message:
    """A rendered message: one-line subject, text body, optional HTML alternative."""

    subject: str
    text: str
    html: str | None = None
    reference: str = ""


@dataclass(frozen=True)
class SmtpConfig:
    """IRP_SMTP_URL, parsed."""

    security: str  # starttls, ssl or none
    host: str
    port: int
    username: str
    password: str

    @property
    def display(self) -> str:
        """The server without credentials, for records."""
        return f"{self.host}:{self.port} ({self.security})"


def parse_smtp_url(url: str) -> SmtpConfig:
    """Parse smtp+starttls://user:pass@host:587, smtps://… or smtp://host:25 (plain: loopback only)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _SMTP_PORTS:
        raise ConfigurationError(f"IRP_SMTP_URL: unsupported scheme {scheme!r}; valid: smtp+starttls, smtps, smtp")
    try:
        host, port = parts.hostname or "", parts.port or _SMTP_PORTS[scheme]
    except ValueError:
        raise ConfigurationError("IRP_SMTP_URL: the port is not a number") from None
    if not host:
        raise ConfigurationError("IRP_SMTP_URL: no host, e.g. smtp+starttls://user:pass@mail.example:587")
    security = {"smtp": "none", "smtp+starttls": "starttls", "smtps": "ssl"}[scheme]
    if security == "none" and not _loopback(host):
        raise ConfigurationError(f"IRP_SMTP_URL: smtp:// sends incident details in clear; allowed to a loopback "
                                 f"host only, not {host!r}: use smtp+starttls:// or smtps://")
    username, password = unquote(parts.username or ""), unquote(parts.password or "")
    if password and security == "none":
        raise ConfigurationError("IRP_SMTP_URL: a password over smtp:// would travel in clear; use smtp+starttls://")
    return SmtpConfig(security, host, port, username, password)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def is_email(recipient: str) -> bool:
    return bool(_EMAIL.match(recipient))


def mask(recipient: str) -> str:
    """A recipient as records show it: addresses as they are, URLs as scheme://host/… (tokens hidden)."""
    if not _URL.match(recipient):
        return recipient
    parts = urlsplit(recipient)
    try:
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        host, port = "", ""
    if parts.scheme.lower() in ("json", "jsons", "form", "forms", "xml", "xmls") and host:
        return f"{parts.scheme}://{host}{port}{parts.path}"
    return f"{parts.scheme}://…"


def is_allowed(recipient: str, allowlist: list[str]) -> bool:
    """Whether `recipient` is on the allowlist: an exact address, its domain or a parent domain, a URL prefix."""
    text = recipient.strip()
    if _URL.match(text):
        return any(_URL.match(entry) and text.lower().startswith(entry.lower()) for entry in allowlist)
    if not is_email(text):
        return False
    address = text.lower()
    domain = address.rsplit("@", 1)[1]
    for entry in (e.strip().lower() for e in allowlist):
        if not entry or _URL.match(entry):
            continue
        if "@" in entry:
            if address == entry:
                return True
            continue
        entry = entry.lstrip("@.")
        if domain == entry or domain.endswith("." + entry):
            return True
    return False


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    return " ".join(redact_text(text, secrets).split())[:500]


class _Retry(Exception):
    """A failure worth another attempt."""


class _Fail(Exception):
    """A failure no retry can fix."""


def _attempts(send: Callable[[], None], settings: Settings, sleep: Callable[[float], None]) -> tuple[bool, int, str]:
    """Run `send` until it succeeds, fails permanently or the attempts run out: (ok, attempts, last error)."""
    error = ""
    for attempt in range(1, settings.notify_attempts + 1):
        try:
            send()
            return True, attempt, ""
        except _Fail as exc:
            return False, attempt, str(exc)
        except _Retry as exc:
            error = str(exc)
        if attempt < settings.notify_attempts:
            sleep(min(settings.notify_retry_max_seconds, settings.notify_retry_base_seconds * 2 ** (attempt - 1)))
    return False, settings.notify_attempts, error


def _email(message: Message, recipient: str, sender: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = recipient  # one recipient per message (§12)
    mail["Subject"] = message.subject  # raises on CR/LF: a header can never be injected
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[-1])
    if message.reference:
        mail["X-IRP-Reference"] = message.reference
    mail.set_content(message.text)
    if message.html:
        mail.add_alternative(message.html, subtype="html")
    return mail


def _send_smtp(config: SmtpConfig, settings: Settings, mail: EmailMessage, recipient: str) -> None:
    context = ssl.create_default_context(cafile=str(settings.smtp_ca_bundle) if settings.smtp_ca_bundle else None)
    timeout = settings.notify_timeout_seconds
    try:
        if config.security == "ssl":
            client: smtplib.SMTP = smtplib.SMTP_SSL(config.host, config.port, timeout=timeout, context=context)
        else:
            client = smtplib.SMTP(config.host, config.port, timeout=timeout)
        with client:
            if config.security == "starttls":
                client.ehlo()
                if not client.has_extn("starttls"):
                    raise _Fail(f"{config.display}: the server does not offer STARTTLS; refusing to send in clear")
                client.starttls(context=context)
                client.ehlo()
            if config.username:
                client.login(config.username, config.password)
            client.send_message(mail, to_addrs=[recipient])
    except (_Fail, _Retry):
        raise
    except smtplib.SMTPAuthenticationError as exc:
        raise _Fail(f"{config.display}: authentication refused ({exc.smtp_code})") from None
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = next(iter(exc.recipients.values()), (0, b""))
        error = f"{config.display}: recipient refused ({code} {_text(text)})"
        raise (_Retry(error) if 400 <= code < 500 else _Fail(error)) from None
    except smtplib.SMTPResponseException as exc:
        error = f"{config.display}: {exc.smtp_code} {_text(exc.smtp_error)}"
        raise (_Retry(error) if 400 <= exc.smtp_code < 500 else _Fail(error)) from None
    except ssl.SSLCertVerificationError as exc:
        raise _Fail(f"{config.display}: certificate not trusted ({exc.verify_message}); "
                    "see IRP_SMTP_CA_BUNDLE") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise _Retry(f"{config.display}: {type(exc).__name__}: {exc}") from None


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _send_apprise(url: str, message: Message, settings: Settings) -> None:
    import apprise

    target = apprise.Apprise()
    timeout = f"{settings.notify_timeout_seconds:g}"
    full = url if "rto=" in url else f"{url}{'&' if '?' in url else '?'}rto={timeout}&cto={timeout}"
    if not target.add(full):
        raise _Fail("not a valid apprise URL (see https://github.com/caronc/apprise/wiki)")
    with apprise.LogCapture(level=logging.WARNING) as logs:
        ok = target.notify(title=message.subject, body=message.text, body_format=apprise.NotifyFormat.MARKDOWN)
    if not ok:
        lines = [line.split(" - ", 2)[-1] for line in logs.getvalue().splitlines() if line.strip()]
        raise _Retry("; ".join(lines[-2:]) or "the endpoint did not accept the message")


def deliver(
    message: Message,
    recipients: list[str],
    settings: Settings,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Delivery]:
    """Send `message` to each recipient allowed and reachable; one Delivery per recipient, never raises."""
    smtp: SmtpConfig | None = None
    smtp_error = ""
    if settings.smtp_url is not None and settings.smtp_url.get_secret_value():
        try:
            smtp = parse_smtp_url(settings.smtp_url.get_secret_value())
        except ConfigurationError as exc:
            smtp_error = str(exc)
    secrets = tuple(s for s in (smtp.password if smtp else "",) if s)
    results: list[Delivery] = []
    unique: dict[str, str] = {}
    for r in recipients:
        unique.setdefault(r.strip().lower(), r.strip())  # one message per recipient, whatever the case
    for recipient in (r for r in unique.values() if r):
        shown = mask(recipient)
        if not is_allowed(recipient, settings.notify_allowlist):
            results.append(Delivery(channel="none", recipient=shown, status="refused",
                                    detail="not on IRP_NOTIFY_ALLOWLIST: nothing sent"))
            continue
        if _URL.match(recipient):
            url_secrets = (*secrets, *(p for p in re.split(r"[/:@?&=]", recipient.split("://", 1)[1]) if len(p) >= 8))
            ok, attempts, error = _attempts(lambda r=recipient: _send_apprise(r, message, settings), settings, sleep)
            results.append(Delivery(channel="apprise", recipient=shown, status="sent" if ok else "failed",
                                    attempts=attempts, detail=_redact(error, url_secrets)))
            continue
        if smtp is None:
            detail = smtp_error or "not sent: no channel configured (IRP_SMTP_URL is not set)"
            results.append(Delivery(channel="none", recipient=shown, status="failed" if smtp_error else "not_sent",
                                    detail=detail))
            continue
        try:
            mail = _email(message, recipient, settings.smtp_from)
        except ValueError as exc:
            results.append(Delivery(channel="email", recipient=shown, status="failed",
                                    detail=f"invalid message: {exc}"))
            continue
        ok, attempts, error = _attempts(lambda m=mail, r=recipient: _send_smtp(smtp, settings, m, r), settings, sleep)
        results.append(Delivery(channel="email", recipient=shown, status="sent" if ok else "failed",
                                attempts=attempts, detail=_redact(error, secrets)))
    return results
