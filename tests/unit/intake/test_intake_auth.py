"""Authentication methods: tokens, Standard Webhooks (rotation, replay window), PagerDuty, SNS rules."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook

from irp.errors import ConfigurationError
from irp.intake.auth import PENDING, Authenticator
from irp.intake.payloads import SnsMessage
from irp.intake.sns import SnsVerifier, string_to_sign
from irp.settings import Settings

OLD = "whsec_" + base64.b64encode(b"old-secret-0123456789abcdef").decode()
NEW = "whsec_" + base64.b64encode(b"new-secret-0123456789abcdef").decode()
BODY = b'{"title": "x"}'


def _auth(local: bool = False, **values) -> Authenticator:
    return Authenticator(Settings(**values), local=local)


def _signed(secrets: list[str], msg_id: str = "msg_1", body: bytes = BODY, at: datetime | None = None) -> dict:
    at = at or datetime.now(UTC)
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": " ".join(Webhook(s).sign(msg_id, at, body.decode()) for s in secrets)}


class TestToken:
    def test_bearer_and_basic(self) -> None:
        auth = _auth(webhook_token="s3cret")
        basic = base64.b64encode(b"alertmanager:s3cret").decode()
        assert auth.check("alertmanager", {"authorization": "Bearer s3cret"}, BODY).method == "token"
        assert auth.check("alertmanager", {"authorization": f"Basic {basic}"}, BODY).method == "token"

    @pytest.mark.parametrize("header", ["", "Bearer", "Bearer s3cre", "Bearer s3cret2", "Token s3cret",
                                        "Basic !!!", "Basic " + base64.b64encode(b"s3cret").decode()])
    def test_refused(self, header: str) -> None:
        assert _auth(webhook_token="s3cret").check("generic", {"authorization": header}, BODY) is None

    def test_rotation_accepts_each_listed_token(self) -> None:
        auth = _auth(webhook_token="old-token,new-token")
        for token in ("old-token", "new-token"):
            assert auth.check("grafana", {"authorization": f"Bearer {token}"}, BODY)


class TestStandardWebhooks:
    def test_signed_request_passes_with_its_id_as_delivery_key(self) -> None:
        result = _auth(webhook_secret=NEW).check("generic", _signed([NEW]), BODY)
        assert result.method == "hmac" and result.delivery_key == "webhook-id:msg_1"

    def test_rotation_sender_side_several_signatures(self) -> None:
        assert _auth(webhook_secret=NEW).check("generic", _signed([OLD, NEW]), BODY)

    def test_rotation_receiver_side_several_secrets(self) -> None:
        auth = _auth(webhook_secret=f"{OLD} {NEW}")
        assert auth.check("generic", _signed([OLD]), BODY)
        assert auth.check("generic", _signed([NEW]), BODY)

    def test_retired_secret_refused(self) -> None:
        assert _auth(webhook_secret=NEW).check("generic", _signed([OLD]), BODY) is None

    def test_tampered_body_refused(self) -> None:
        assert _auth(webhook_secret=NEW).check("generic", _signed([NEW]), b'{"title": "y"}') is None

    @pytest.mark.parametrize("minutes", [-6, 6])
    def test_timestamp_outside_five_minutes_refused(self, minutes: int) -> None:
        at = datetime.now(UTC) + timedelta(minutes=minutes)
        assert _auth(webhook_secret=NEW).check("generic", _signed([NEW], at=at), BODY) is None

    @pytest.mark.parametrize("headers", [
        {"webhook-id": "a", "webhook-timestamp": "1", "webhook-signature": "v1"},
        {"webhook-id": "a", "webhook-timestamp": "nan", "webhook-signature": "v1,!!"},
        {"webhook-id": "a", "webhook-timestamp": "1e400", "webhook-signature": "v1,a,b"},
        {"webhook-id": "", "webhook-timestamp": "", "webhook-signature": ""},
    ])
    def test_malformed_headers_refused_without_error(self, headers: dict) -> None:
        assert _auth(webhook_secret=NEW).check("generic", headers, BODY) is None

    def test_undecodable_body_refused_without_error(self) -> None:
        assert _auth(webhook_secret=NEW).check("generic", _signed([NEW]), b"\xff\xfe") is None

    def test_bad_secret_is_a_configuration_error(self) -> None:
        with pytest.raises(ConfigurationError, match="IRP_WEBHOOK_SECRET"):
            _auth(webhook_secret="whsec_***")


class TestPagerDuty:
    def _sig(self, secret: str, body: bytes = BODY) -> str:
        return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()

    def test_signature_and_rotation(self) -> None:
        auth = _auth(pagerduty_secret="pd-new")
        header = f"{self._sig('pd-old')},{self._sig('pd-new')}"
        assert auth.check("pagerduty", {"x-pagerduty-signature": header}, BODY).method == "pagerduty"
        assert auth.check("pagerduty", {"x-pagerduty-signature": self._sig("pd-old")}, BODY) is None
        assert auth.check("pagerduty", {"x-pagerduty-signature": self._sig("pd-new", b"{}")}, BODY) is None


class TestConfiguration:
    def test_per_source_methods(self) -> None:
        auth = _auth(webhook_token="t", webhook_secret=NEW, webhook_auth={"generic": "hmac"})
        assert auth.check("generic", {"authorization": "Bearer t"}, BODY) is None
        assert auth.check("generic", _signed([NEW]), BODY)
        assert auth.check("alertmanager", {"authorization": "Bearer t"}, BODY)

    @pytest.mark.parametrize(("value", "message"), [
        ({"nagios": "token"}, "unknown source 'nagios'"),
        ({"generic": "token,password"}, "unknown method password"),
    ])
    def test_bad_methods(self, value: dict, message: str) -> None:
        with pytest.raises(ConfigurationError, match=message):
            _auth(webhook_auth=value)

    def test_local_opens_only_sources_without_credentials(self) -> None:
        auth = _auth(local=True, webhook_token="t")
        assert auth.check("alertmanager", {}, BODY) is None
        assert auth.check("pagerduty", {}, BODY) is None  # token is one of pagerduty's methods
        assert _auth(local=True).check("alertmanager", {}, BODY).method == "local"
        assert not _auth().any_configured
        assert _auth().check("alertmanager", {}, BODY) is None


class TestSns:
    def test_string_to_sign_notification(self) -> None:
        message = SnsMessage(Type="Notification", MessageId="m", TopicArn="t", Subject="s", Message="hello\nworld",
                             Timestamp="2026-11-20T10:01:12.400Z", SignatureVersion="2", Signature="x",
                             SigningCertURL="https://sns.eu-west-3.amazonaws.com/c.pem")
        assert string_to_sign(message) == (
            b"Message\nhello\nworld\nMessageId\nm\nSubject\ns\nTimestamp\n2026-11-20T10:01:12.400Z\n"
            b"TopicArn\nt\nType\nNotification\n")
        without_subject = message.model_copy(update={"Subject": None})
        assert b"Subject" not in string_to_sign(without_subject)

    def test_string_to_sign_confirmation(self) -> None:
        message = SnsMessage(Type="SubscriptionConfirmation", MessageId="m", TopicArn="t", Message="c",
                             Timestamp="ts", SignatureVersion="1", Signature="x", Token="tok",
                             SigningCertURL="https://sns.eu-west-3.amazonaws.com/c.pem",
                             SubscribeURL="https://sns.eu-west-3.amazonaws.com/?Action=ConfirmSubscription")
        assert string_to_sign(message) == (
            b"Message\nc\nMessageId\nm\nSubscribeURL\nhttps://sns.eu-west-3.amazonaws.com/?Action=ConfirmSubscription"
            b"\nTimestamp\nts\nToken\ntok\nTopicArn\nt\nType\nSubscriptionConfirmation\n")

    @pytest.mark.parametrize(("url", "ok"), [
        ("https://sns.eu-west-3.amazonaws.com/SimpleNotificationService-x.pem", True),
        ("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-x.pem", True),
        ("http://sns.eu-west-3.amazonaws.com/x.pem", False),
        ("https://sns.eu-west-3.amazonaws.com.evil.example/x.pem", False),
        ("https://evil.example/sns.eu-west-3.amazonaws.com/x.pem", False),
        ("https://user@sns.eu-west-3.amazonaws.com/x.pem", False),
        ("https://sns.eu-west-3.amazonaws.com:8443/x.pem", False),
        (None, False),
    ])
    def test_certificate_hosts(self, url: str | None, ok: bool) -> None:
        verifier = SnsVerifier({"t"}, Settings().sns_host_pattern)
        assert verifier.allowed_url(url) is ok


class TestBeforeBody:
    """What the headers alone decide: a bearer token before any body byte, a signature only with the body."""

    def test_token_decides_before_the_body(self) -> None:
        auth = _auth(webhook_token="s3cret", webhook_secret=NEW)
        assert auth.before_body("generic", {"authorization": "Bearer s3cret"}).method == "token"
        assert auth.before_body("generic", {"authorization": "Bearer wrong"}) is None

    def test_signature_headers_need_the_body(self) -> None:
        auth = _auth(webhook_token="s3cret", webhook_secret=NEW, pagerduty_secret="pd",
                     sns_topic_arns="arn:aws:sns:eu-west-3:123456789012:t")
        assert auth.before_body("generic", _signed([NEW])) is PENDING
        assert auth.before_body("generic", {"webhook-signature": "v1,x"}) is None  # no webhook-id
        assert auth.before_body("pagerduty", {"x-pagerduty-signature": "v1=00"}) is PENDING
        assert auth.before_body("sns", {}) is PENDING
        assert auth.before_body("grafana", {"x-pagerduty-signature": "v1=00"}) is None  # not one of its methods

    def test_signature_without_its_secret_refused_at_once(self) -> None:
        assert _auth(webhook_token="s3cret").before_body("generic", _signed([NEW])) is None

    def test_local_open_source(self) -> None:
        assert _auth(local=True).before_body("generic", {}).method == "local"
        assert _auth(local=True, webhook_token="t").before_body("generic", {}) is None
