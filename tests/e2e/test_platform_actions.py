"""platform.* actions against the admin API of docs/platform-api.md, served on loopback, with the token
in a real Prefect Secret block; and http.request authenticated from a Secret block."""

from __future__ import annotations

import json

import pytest
from service_fixtures import ADMIN_TOKEN, AdminApi, AsgiServer, Fault, events, make_ctx, save_secret

from irp.actions.http import HttpRequestArgs, request
from irp.actions.platform import (
    AccountArgs,
    MaintenanceArgs,
    PasswordResetArgs,
    RevokeTokensArgs,
    UserArgs,
    logout_user,
    reset_password,
    revoke_api_tokens,
    set_maintenance,
    suspend_account,
)
from irp.actions.registry import get_registry
from irp.errors import NotConfiguredError, PermanentError, TransientError
from irp.settings import get_settings

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch):
    """The admin API on loopback, its URL and token configured the way production configures them."""
    admin = AdminApi()
    save_secret("irp-test-admin-token", ADMIN_TOKEN)
    with AsgiServer(admin.app) as server:
        monkeypatch.setenv("IRP_PLATFORM_API_URL", f"{server.url}/admin/v1")
        monkeypatch.setenv("IRP_PLATFORM_TOKEN_BLOCK", "irp-test-admin-token")
        monkeypatch.setenv("IRP_ACTION_RETRY_BASE_SECONDS", "0.01")
        monkeypatch.setenv("IRP_ACTION_RETRY_MAX_SECONDS", "0.05")
        get_settings.cache_clear()
        yield admin


def run_undo(outcome, evidence_root):
    spec = get_registry()[outcome.undo.action]
    return spec.fn(spec.args_model.model_validate(outcome.undo.args),
                   make_ctx(evidence_root, step="undo_it", action=outcome.undo.action))


def evidence_text(ctx) -> str:
    texts = []
    for item in ctx.evidence:
        with ctx.store.open(ctx.incident.id, item.name) as handle:
            texts.append(handle.read().decode())
    return "\n".join(texts)


class TestSuspendAccount:
    def test_suspends_once_and_undo_reactivates(self, api, evidence_root):
        ctx = make_ctx(evidence_root)
        first = suspend_account(AccountArgs(client_id="acme", reason="data leak"), ctx)
        assert first.changed and api.clients["acme"]["status"] == "suspended"
        assert api.clients["acme"]["suspended_reason"] == "data leak"
        second = suspend_account(AccountArgs(client_id="acme"), make_ctx(evidence_root))
        assert not second.changed and "already done (by an earlier attempt" in second.message
        assert api.writes == [("POST", "clients/acme/suspend")]
        assert second.undo == first.undo
        run_undo(first, evidence_root)
        assert api.clients["acme"]["status"] == "active"

    def test_requests_carry_the_contract_headers_and_evidence_hides_the_token(self, api, evidence_root):
        ctx = make_ctx(evidence_root)
        suspend_account(AccountArgs(client_id="acme"), ctx)
        write = next(r for r in api.requests if r["method"] == "POST")
        assert write["headers"]["x-irp-incident"] == "INC-TEST-0001" and write["headers"]["idempotency-key"]
        assert write["body"] == {"reason": "security incident", "incident_id": "INC-TEST-0001"}
        text = evidence_text(ctx)
        assert ADMIN_TOKEN not in text and "***redacted***" in text
        http = [i.name for i in ctx.evidence if "/http/" in i.name]
        assert [n.rsplit("/", 1)[1] for n in http] == ["01-GET-admin-v1-clients-acme.json",
                                                       "02-POST-admin-v1-clients-acme-suspend.json",
                                                       "03-GET-admin-v1-clients-acme.json"]

    def test_dry_run_checks_scope_and_writes_nothing(self, api, evidence_root):
        outcome = suspend_account(AccountArgs(client_id="acme"), make_ctx(evidence_root, dry_run=True))
        assert outcome.details["would_change"] and api.writes == []
        assert outcome.checks == ["GET /clients/acme: target found",
                                  "token of irp-automation has scope clients:suspend"]
        api.scopes.remove("clients:suspend")
        with pytest.raises(PermanentError, match="lacks scope 'clients:suspend'"):
            suspend_account(AccountArgs(client_id="acme"), make_ctx(evidence_root, dry_run=True))

    def test_unknown_client_is_refused_at_once(self, api, evidence_root):
        with pytest.raises(PermanentError, match="HTTP 404 Not Found: not_found"):
            suspend_account(AccountArgs(client_id="ghost"), make_ctx(evidence_root))
        assert len(api.requests) == 1 and events(evidence_root)[0]["data"]["code"] == "404"


class TestRetries:
    def test_503_and_429_are_retried_with_the_same_idempotency_key(self, api, evidence_root):
        is_write = lambda method, path, headers, body: method == "POST"  # noqa: E731
        api.faults = [Fault(is_write, 503, b'{"error": "unavailable"}', content_type="application/json"),
                      Fault(is_write, 429, b'{"error": "slow down"}', content_type="application/json",
                            headers={"Retry-After": "0"})]
        outcome = suspend_account(AccountArgs(client_id="acme"), make_ctx(evidence_root))
        assert outcome.changed and api.clients["acme"]["status"] == "suspended"
        keys = {r["headers"]["idempotency-key"] for r in api.requests if r["method"] == "POST"}
        assert len([r for r in api.requests if r["method"] == "POST"]) == 3 and len(keys) == 1

    def test_a_wrong_token_is_refused_once_and_on_the_incident(self, api, evidence_root):
        save_secret("irp-test-admin-token", "wrong")
        with pytest.raises(PermanentError, match=r"access denied \(HTTP 401 Unauthorized: unauthorized\)"):
            logout_user(UserArgs(user_id="u-42"), make_ctx(evidence_root))
        assert len(api.requests) == 1
        [entry] = events(evidence_root)
        assert entry["kind"] == "third_party" and entry["data"]["provider"] == "CallCenterRate admin API"

    def test_api_down_fails_after_the_attempts(self, api, evidence_root, monkeypatch):
        api.faults = [Fault(lambda *a: True, 502, b"bad gateway", content_type="text/plain", times=10)]
        with pytest.raises(TransientError, match=r"GET /admin/v1/users/u-42 failed after 4 attempt\(s\)"):
            logout_user(UserArgs(user_id="u-42"), make_ctx(evidence_root))
        assert events(evidence_root)[0]["data"]["retryable"] is True


class TestUsersTokensMaintenance:
    def test_logout_and_password_reset_are_idempotent(self, api, evidence_root):
        out = logout_user(UserArgs(user_id="u-42"), make_ctx(evidence_root, step="logout"))
        assert out.changed and api.users["u-42"]["active_sessions"] == 0 and out.undo is None
        assert not logout_user(UserArgs(user_id="u-42"), make_ctx(evidence_root, step="logout")).changed
        reset = reset_password(PasswordResetArgs(user_id="u-42"), make_ctx(evidence_root, step="reset"))
        assert reset.changed and api.users["u-42"]["password_reset_required"]
        assert not reset_password(PasswordResetArgs(user_id="u-42"), make_ctx(evidence_root, step="reset")).changed
        assert [w for w in api.writes] == [("POST", "users/u-42/logout"), ("POST", "users/u-42/password-reset")]

    def test_revokes_only_active_tokens_and_never_archives_their_values(self, api, evidence_root):
        ctx = make_ctx(evidence_root)
        outcome = revoke_api_tokens(RevokeTokensArgs(client_id="acme"), ctx)
        assert outcome.details["revoked"] == ["tok_1"] and api.tokens["tok_1"]["status"] == "revoked"
        assert api.writes == [("POST", "api-tokens/tok_1/revoke")]
        text = evidence_text(ctx)
        assert "ccr_live_aaaaaaaaaaaaaaaa" not in text and "ccr_live_bbbbbbbbbbbbbbbb" not in text
        assert "ccr_live" not in json.dumps(outcome.model_dump(mode="json"))
        again = revoke_api_tokens(RevokeTokensArgs(client_id="acme"), make_ctx(evidence_root))
        assert not again.changed and len(api.writes) == 1

    def test_unknown_token_ids_are_listed(self, api, evidence_root):
        with pytest.raises(PermanentError, match="has no API token tok_9; its tokens: tok_1, tok_2"):
            revoke_api_tokens(RevokeTokensArgs(client_id="acme", token_ids="tok_1, tok_9"), make_ctx(evidence_root))
        assert api.writes == []

    def test_maintenance_on_and_undo_restores_the_state_before(self, api, evidence_root):
        api.maintenance[("features", "exports")] = {"enabled": False, "message": "was fine"}
        args = MaintenanceArgs(scope="feature", target="exports", message="paused for a security check")
        first = set_maintenance(args, make_ctx(evidence_root))
        assert api.maintenance[("features", "exports")] == {"enabled": True, "message": "paused for a security check"}
        assert not set_maintenance(args, make_ctx(evidence_root)).changed
        run_undo(first, evidence_root)
        assert api.maintenance[("features", "exports")] == {"enabled": False, "message": "was fine"}

    def test_maintenance_dry_run(self, api, evidence_root):
        outcome = set_maintenance(MaintenanceArgs(scope="tenant", target="acme"), make_ctx(evidence_root, dry_run=True))
        assert outcome.details["would_change"] and api.writes == []


class TestNotConfigured:
    def test_no_url(self, evidence_root, monkeypatch):
        monkeypatch.delenv("IRP_PLATFORM_API_URL", raising=False)
        get_settings.cache_clear()
        with pytest.raises(NotConfiguredError, match="IRP_PLATFORM_API_URL is unset"):
            suspend_account(AccountArgs(client_id="acme"), make_ctx(evidence_root))

    def test_no_secret_block(self, api, evidence_root, monkeypatch):
        monkeypatch.setenv("IRP_PLATFORM_TOKEN_BLOCK", "never-created")
        get_settings.cache_clear()
        with pytest.raises(NotConfiguredError, match="Secret block 'never-created' not found"):
            suspend_account(AccountArgs(client_id="acme"), make_ctx(evidence_root))
        assert api.requests == []


def test_http_request_authenticates_from_a_secret_block(api, evidence_root, monkeypatch):
    monkeypatch.setenv("IRP_HTTP_SECRET_HOSTS", '{"irp-test-admin-token": ["127.0.0.1"]}')
    get_settings.cache_clear()
    ctx = make_ctx(evidence_root)
    outcome = request(HttpRequestArgs(url=f"{get_settings().platform_api_url}/auth/whoami",
                                      auth_block="irp-test-admin-token"), ctx)
    assert outcome.details["status"] == 200 and outcome.details["body"]["subject"] == "irp-automation"
    assert api.requests[-1]["headers"]["authorization"] == f"Bearer {ADMIN_TOKEN}"
    assert ADMIN_TOKEN not in evidence_text(ctx)
