"""One redaction for every archive: credential-named keys at any depth, pairs in text, known secrets."""

from __future__ import annotations

import json

import pytest

from irp.redaction import REDACTED, is_credential_key, redact, redact_text


@pytest.mark.parametrize("key", [
    "SecretAccessKey", "aws_secret_access_key", "SessionToken", "Token", "access_token", "x-amz-security-token",
    "private_key", "PrivateKey", "api_key", "apikey", "X-Api-Key", "Authorization", "Proxy-Authorization",
    "Cookie", "Set-Cookie", "credentials", "client_secret", "password", "db_passwd", "passphrase",
    "X-Amz-Signature", "AccountKey-ConnectionString", "SecretString", "auth", "AccessKey",
])
def test_credential_keys(key):
    assert is_credential_key(key)


@pytest.mark.parametrize("key", [
    "AccessKeyId", "access_key_id", "token_id", "tokens", "TokenType", "secret_id", "SecretName", "SecretARN",
    "password_reset_required", "PasswordLastUsed", "Expiration", "idempotency_key", "Key", "author", "user",
])
def test_ids_flags_and_names_are_kept(key):
    assert not is_credential_key(key)


def test_structures_at_any_depth():
    value = {"Credentials": {"AccessKeyId": "ASIA1", "SecretAccessKey": "k", "SessionToken": "t",
                             "Expiration": "2026-11-28T10:00:00Z"},
             "users": [{"id": "u1", "password": "p", "password_reset_required": True, "api_key": None}],
             "Set-Cookie": ["a=1", "b=2"], "pin": {"token": 1234}}
    assert redact(value) == {
        "Credentials": {"AccessKeyId": "ASIA1", "SecretAccessKey": REDACTED, "SessionToken": REDACTED,
                        "Expiration": "2026-11-28T10:00:00Z"},
        "users": [{"id": "u1", "password": REDACTED, "password_reset_required": True, "api_key": None}],
        "Set-Cookie": [REDACTED, REDACTED], "pin": {"token": REDACTED}}


@pytest.mark.parametrize(("text", "expected"), [
    ("https://h.example/p?api_key=abc&region=eu&X-Amz-Signature=s1", f"https://h.example/p?api_key={REDACTED}&region=eu&X-Amz-Signature={REDACTED}"),
    ("Authorization: Bearer abc.def\nX-Trace: 1", f"Authorization: {REDACTED}\nX-Trace: 1"),
    ('{"AccessKeyId": "ASIA1", "SecretAccessKey": "k/+="}', f'{{"AccessKeyId": "ASIA1", "SecretAccessKey": "{REDACTED}"}}'),
    ("IRP_WEBHOOK_TOKEN=t0k3n\x00PATH=/usr/bin", f"IRP_WEBHOOK_TOKEN={REDACTED}\x00PATH=/usr/bin"),
    ("client_secret='x y'; user=bob", f"client_secret='{REDACTED}'; user=bob"),
    ("token_id: tok_1, passwordResetRequired: true", "token_id: tok_1, passwordResetRequired: true"),
])
def test_pairs_in_text(text, expected):
    assert redact_text(text) == expected


def test_json_encoded_inside_a_string_is_covered():
    event = json.dumps({"responseElements": {"credentials": {"accessKeyId": "ASIA9", "sessionToken": "FQoG-tok"}}})
    assert "FQoG-tok" not in json.dumps(redact({"CloudTrailEvent": event}))
    assert "ASIA9" in redact(event)


def test_known_secrets_anywhere():
    assert redact({"note": ["the value s3cr3t-v4lue leaked"]}, ("s3cr3t-v4lue",)) == {"note": [f"the value {REDACTED} leaked"]}
