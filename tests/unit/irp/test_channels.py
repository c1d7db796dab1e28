"""Channels: the allowlist, SMTP URL parsing, masked recipients, retries with backoff."""

from __future__ import annotations

import socket

import pytest
from pydantic import SecretStr

from irp.errors import ConfigurationError
from irp.notifications.channels import Message, deliver, is_allowed, mask, parse_smtp_url
from irp.settings import Settings

ALLOW = ["confluent-digital.com", "dpo@acme.example", "slack://", "json://127.0.0.1:8099/"]


class TestAllowlist:
    @pytest.mark.parametrize("recipient", [
        "security@confluent-digital.com", "x@eu.confluent-digital.com", "DPO@Acme.Example",
        "slack://T000/B000/XXXX", "json://127.0.0.1:8099/hook",
    ])
    def test_allowed(self, recipient: str) -> None:
        assert is_allowed(recipient, ALLOW)

    @pytest.mark.parametrize("recipient", [
        "other@acme.example",                     # the domain is not listed, one address is
        "x@confluent-digital.com.evil.example",   # a suffix trick
        "x@evilconfluent-digital.com",
        "a@confluent-digital.com, b@evil.example",  # two addresses in one string
        "a@confluent-digital.com\r\nBcc: b@evil.example",
        "json://127.0.0.1:8098/hook", "msteams://x/y/z", "mailto://x@evil.example", "not an address", "",
    ])
    def test_refused(self, recipient: str) -> None:
        assert not is_allowed(recipient, ALLOW)


class TestSmtpUrl:
    def test_starttls_with_credentials(self) -> None:
        config = parse_smtp_url("smtp+starttls://irp%40cd:p%3Ass@mail.example:2525")
        assert (config.security, config.host, config.port, config.username, config.password) == \
            ("starttls", "mail.example", 2525, "irp@cd", "p:ss")
        assert "p:ss" not in config.display

    def test_default_ports(self) -> None:
        assert parse_smtp_url("smtps://mail.example").port == 465
        assert parse_smtp_url("smtp+starttls://mail.example").port == 587

    @pytest.mark.parametrize(("url", "message"), [
        ("smtp://mail.example:25", "loopback host only"),
        ("smtp://u:p@127.0.0.1:25", "password over smtp://"),
        ("http://mail.example", "unsupported scheme"),
        ("smtp+starttls://:587", "no host"),
    ])
    def test_refused(self, url: str, message: str) -> None:
        with pytest.raises(ConfigurationError, match=message):
            parse_smtp_url(url)


def test_chat_urls_are_shown_without_their_tokens() -> None:
    assert mask("slack://TOKENA1234/TOKENB5678/TOKENC9012") == "slack://…"
    assert mask("json://user:secret@127.0.0.1:8099/hook?x=1") == "json://127.0.0.1:8099/hook"
    assert mask("dpo@acme.example") == "dpo@acme.example"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TestDeliver:
    def settings(self, **changes) -> Settings:
        return Settings(**({"notify_allowlist": ALLOW, "notify_attempts": 3, "notify_retry_base_seconds": 0.5,
                            "notify_retry_max_seconds": 0.75, "notify_timeout_seconds": 2} | changes))

    def test_no_channel_configured_is_not_sent_not_failed(self) -> None:
        [result] = deliver(Message("s", "t"), ["security@confluent-digital.com"], self.settings())
        assert (result.status, result.channel) == ("not_sent", "none")
        assert "no channel configured" in result.detail

    def test_an_address_outside_the_allowlist_is_refused_before_any_connection(self) -> None:
        waits: list[float] = []
        settings = self.settings(smtp_url=SecretStr(f"smtp://127.0.0.1:{_closed_port()}"))
        [result] = deliver(Message("s", "t"), ["ceo@evil.example"], settings, sleep=waits.append)
        assert result.status == "refused" and result.attempts == 0 and waits == []

    def test_a_server_down_is_retried_with_backoff_then_failed(self) -> None:
        waits: list[float] = []
        settings = self.settings(smtp_url=SecretStr(f"smtp+starttls://irp:S3cretPassw0rd@127.0.0.1:{_closed_port()}"))
        [result] = deliver(Message("s", "t"), ["security@confluent-digital.com"], settings, sleep=waits.append)
        assert result.status == "failed" and result.attempts == 3
        assert waits == [0.5, 0.75]  # doubling, capped by notify_retry_max_seconds
        assert "S3cretPassw0rd" not in result.model_dump_json()
        assert "ConnectionRefusedError" in result.detail

    def test_a_crlf_subject_never_reaches_a_header(self) -> None:
        settings = self.settings(smtp_url=SecretStr(f"smtp://127.0.0.1:{_closed_port()}"))
        [result] = deliver(Message("a\r\nBcc: x@evil.example", "t"), ["security@confluent-digital.com"], settings,
                           sleep=lambda _: None)
        assert result.status == "failed" and result.attempts == 0
        assert "invalid message" in result.detail
