"""platform.disable_user and platform.enable_user against the admin API of docs/platform-api.md, served on loopback.

The token's Prefect Secret block is replaced by its value here (tests/e2e/test_platform_actions.py reads a
real block); everything else is real: HTTP, the contract's headers, evidence, redaction.
"""

from __future__ import annotations

import pytest
from service_fixtures import AdminApi, admin_api, make_ctx  # noqa: F401 (fixture)

from irp.actions.platform import UserStatusArgs, disable_user, enable_user
from irp.actions.registry import get_registry
from irp.errors import PermanentError


@pytest.fixture
def api(admin_api: AdminApi) -> AdminApi:  # noqa: F811 (the fixture, by a shorter name)
    return admin_api


def test_disables_one_user_once_and_undo_enables_it(api, evidence_root):
    api.users["u-43"] = {**api.users["u-42"], "id": "u-43"}
    first = disable_user(UserStatusArgs(user_id="u-42", reason="credential stuffing"), make_ctx(evidence_root))
    assert first.changed and api.users["u-42"]["status"] == "disabled" and api.users["u-42"]["active_sessions"] == 0
    assert api.users["u-43"]["status"] == "active" and api.clients["acme"]["status"] == "active"
    write = next(r for r in api.requests if r["method"] == "POST")
    assert write["body"] == {"reason": "credential stuffing", "incident_id": "INC-TEST-0001"}
    assert write["headers"]["idempotency-key"]
    second = disable_user(UserStatusArgs(user_id="u-42"), make_ctx(evidence_root))
    assert not second.changed and second.undo == first.undo and api.writes == [("POST", "users/u-42/disable")]
    spec = get_registry()[first.undo.action]
    assert spec.fn is enable_user
    enabled = spec.fn(spec.args_model.model_validate(first.undo.args), make_ctx(evidence_root, step="undo_it"))
    assert enabled.changed and enabled.undo is None and api.users["u-42"]["status"] == "active"


def test_dry_run_checks_the_scope_and_writes_nothing(api, evidence_root):
    outcome = disable_user(UserStatusArgs(user_id="u-42"), make_ctx(evidence_root, dry_run=True))
    assert outcome.details["would_change"] and api.writes == []
    assert outcome.checks == ["GET /users/u-42: target found", "token of irp-automation has scope users:disable"]
    api.scopes.remove("users:disable")
    with pytest.raises(PermanentError, match="lacks scope 'users:disable'"):
        disable_user(UserStatusArgs(user_id="u-42"), make_ctx(evidence_root, dry_run=True))


def test_an_unknown_user_is_refused_and_nothing_written(api, evidence_root):
    with pytest.raises(PermanentError, match="HTTP 404"):
        disable_user(UserStatusArgs(user_id="ghost"), make_ctx(evidence_root))
    assert api.writes == []


def test_an_api_that_ignores_the_write_is_reported(api, evidence_root):
    original = api._route  # the write answers 200 with the user unchanged: the action verifies, never trusts

    def ignore_disable(method, parts, data):
        return original("GET", parts[:2], data) if parts[-1] == "disable" else original(method, parts, data)

    api._route = ignore_disable
    with pytest.raises(PermanentError, match="answered OK but user/u-42 is not changed"):
        disable_user(UserStatusArgs(user_id="u-42"), make_ctx(evidence_root))
