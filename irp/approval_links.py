"""Signed decision links: one personal link per approver and approval gate, signed with IRP_APPROVAL_SECRET.

A link's token (itsdangerous, HMAC-SHA256) binds who may decide (the IRP_APPROVERS member), the flow
run, the gate (stage and step), the SHA-256 of the action name and its rendered arguments, and an
expiry. The intake (irp/intake/approvals.py) serves it and records each token's id as used (single
use); the run (irp/engine/approval.py) checks it again before counting the decision as verified.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from pydantic import BaseModel, ValidationError

from irp.errors import ConfigurationError, IrpError
from irp.settings import Settings

__all__ = ["LinkClaims", "LinkError", "action_sha256", "decision_url", "issue", "read", "require_secret"]

_SALT = "irp-approval-link-v1"
HOW_TO_SET = ("set IRP_APPROVAL_SECRET to a random secret of 32+ characters shared by the workers and the intake, "
              "e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'")


class LinkError(IrpError):
    """Raised when a decision link is forged, altered, expired or malformed; `reason` is for the audit log only."""

    def __init__(self, reason: str, claims: LinkClaims | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.claims = claims


class LinkClaims(BaseModel):
    """What a decision link says, once its signature is checked."""

    jti: str
    identity: str
    address: str = ""
    flow_run_id: str
    incident_id: str
    stage: str
    step: str
    gate: str
    action: str
    action_sha256: str
    exp: float


def action_sha256(action: str, args: Any) -> str:
    """SHA-256 of the action's name and its rendered arguments (canonical JSON): what an approver approves."""
    text = json.dumps({"action": action, "args": args}, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def require_secret(settings: Settings) -> str:
    """IRP_APPROVAL_SECRET, or ConfigurationError saying how to set it."""
    if settings.approval_secret is None or not settings.approval_secret.get_secret_value():
        raise ConfigurationError(f"IRP_APPROVAL_SECRET is not set: approvers cannot be sent signed links; {HOW_TO_SET}")
    return settings.approval_secret.get_secret_value()


def _serializer(settings: Settings) -> URLSafeSerializer:
    return URLSafeSerializer(require_secret(settings), salt=_SALT)


def issue(settings: Settings, **claims: Any) -> str:
    """A signed token for `claims` (LinkClaims' fields but jti, which is new for every token)."""
    body = LinkClaims(jti=secrets.token_urlsafe(16), **claims)
    return _serializer(settings).dumps(body.model_dump())


def read(settings: Settings, token: str, *, now: float | None = None) -> LinkClaims:
    """The claims of a genuine, unexpired token; LinkError otherwise (its claims set when only expired)."""
    if len(token) > 4096:
        raise LinkError("malformed: too long")
    try:
        payload = _serializer(settings).loads(token)
    except BadSignature:
        raise LinkError("forged or altered: bad signature") from None
    try:
        claims = LinkClaims.model_validate(payload)
    except ValidationError:
        raise LinkError("malformed claims") from None
    if (time.time() if now is None else now) >= claims.exp:
        raise LinkError("expired", claims)
    return claims


def decision_url(settings: Settings, token: str, decision: str) -> str:
    """The link an approver opens: the intake's page for the token, the decision preselected."""
    return f"{settings.approval_base_url.rstrip('/')}/approvals/{token}?decision={decision}"
