"""Credentials kept out of evidence, logs and messages: one redaction for every archive.

A key names a credential when, lower-cased and with separators removed, it ends with one of
CREDENTIAL_SUFFIXES (`SecretAccessKey`, `aws_session_token`, `X-Api-Key`, `Set-Cookie`,
`client_secret`, `private_key`...) or is `auth`; identifiers of credentials (`AccessKeyId`,
`token_id`, `secret_name`) and flags (`password_reset_required`) are kept. `redact` replaces the
text and number values of such keys at any depth, `key=value` and `"key": "value"` pairs inside
text (query strings, form bodies, JSON or env files read as text), and every known secret value
anywhere.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["REDACTED", "is_credential_key", "redact", "redact_text"]

REDACTED = "***redacted***"

CREDENTIAL_SUFFIXES = (
    "secret", "password", "passwd", "passphrase", "token", "apikey", "accesskey", "secretkey", "privatekey",
    "sessionkey", "signingkey", "authorization", "cookie", "credential", "credentials", "signature",
    "connectionstring", "secretstring", "secretbinary", "secretvalue",
)
_NOT_WORD = re.compile(r"[^a-z0-9]")
# A key followed by `=` or `:` (the key possibly quoted, or quoted with \" inside an encoded JSON string).
_KEY = re.compile(r"""(?P<key>[A-Za-z_][\w.-]*)(?:\\?["'])?[ \t]*[:=][ \t]*""")
# Its value: quoted, or bare up to a separator (several words: `Authorization: Bearer abc`).
_VALUE = re.compile(r"""\\?"(?:[^"\\\n]|\\[^"])*\\?"|'[^'\n]*'|[^\s\x00&,;"'}\]]+(?:[ \t]+[^\s\x00&,;"'}\]]+)*""")
_QUOTE = re.compile(r"""\\?["']""")


def is_credential_key(key: str) -> bool:
    """Whether a key, header or parameter name names a credential (not an id or a flag of one)."""
    word = _NOT_WORD.sub("", key.lower())
    return word == "auth" or word.endswith(CREDENTIAL_SUFFIXES)


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` with known secrets and the values of credential-named pairs replaced by ***redacted***."""
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, REDACTED)
    pieces, pos = [], 0
    while (key := _KEY.search(text, pos)) is not None:
        value = _VALUE.match(text, key.end()) if is_credential_key(key["key"]) else None
        if value is None:
            pieces.append(text[pos:key.end()])
            pos = key.end()
            continue
        opening = _QUOTE.match(value[0])
        quote = opening[0] if opening else ""
        pieces += [text[pos:key.end()], quote, REDACTED, quote]
        pos = value.end()
    return "".join([*pieces, text[pos:]])


def redact(value: Any, secrets: tuple[str, ...] = ()) -> Any:
    """`value` (JSON-like, any depth) with credentials replaced by ***redacted***; flags and ids kept."""
    if isinstance(value, dict):
        return {key: _redact_item(item, secrets) if is_credential_key(str(key)) else redact(item, secrets)
                for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact(item, secrets) for item in value]
    if isinstance(value, str):
        return redact_text(value, secrets)
    return value


def _redact_item(value: Any, secrets: tuple[str, ...]) -> Any:
    """The value of a credential-named key: text and numbers hidden, booleans and empty values kept."""
    if isinstance(value, bool) or value is None or value == "":
        return value
    if isinstance(value, str | int | float):
        return REDACTED
    if isinstance(value, list | tuple):
        return [_redact_item(item, secrets) for item in value]
    return redact(value, secrets)
