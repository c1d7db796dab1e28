"""platform.describe_user, platform.describe_token and platform.export_audit_log against the admin API of
docs/platform-api.md, served on loopback: the facts archived, the Client recorded as looked up
(confirmed only when the id was not alert data), the audit log paged and archived with its query."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
from service_fixtures import ADMIN_TOKEN, AdminApi, admin_api, make_ctx, make_incident  # noqa: F401 (fixture)

from irp.actions.platform import (
    AuditLogArgs,
    DescribeTokenArgs,
    DescribeUserArgs,
    describe_token,
    describe_user,
    export_audit_log,
)
from irp.errors import PermanentError
from irp.evidence import LocalEvidenceStore


@pytest.fixture
def api(admin_api: AdminApi) -> AdminApi:  # noqa: F811 (the fixture, by a shorter name)
    return admin_api


def archived(root, ctx, index=-1) -> dict:
    with LocalEvidenceStore(root).open(ctx.incident.id, ctx.evidence[index].name) as handle:
        return json.loads(handle.read())


class TestDescribeUser:
    def test_alert_chosen_user_names_its_client_unconfirmed(self, api, evidence_root):
        ctx = make_ctx(evidence_root, step="describe_user")
        ctx.from_run_data = frozenset({"user_id"})
        outcome = describe_user(DescribeUserArgs(user_id="u-42"), ctx)
        assert outcome.details["client_id"] == "acme" and outcome.details["role"] == "agent"
        assert outcome.details["last_login_at"] == "2026-12-05T09:12:00Z" and not outcome.changed
        assert archived(evidence_root, ctx)["client_id"] == "acme"
        assert ADMIN_TOKEN not in json.dumps(archived(evidence_root, ctx, 0))  # the HTTP exchange, redacted
        [origin] = ctx.incident.client_origins
        assert (origin.client, origin.source, origin.confirmed) == ("acme", "enrichment", False)
        assert ctx.incident.affected_clients == ["acme"]
        assert any(e.kind == "finding" and "confirm-clients" in e.message for e in ctx.timeline)

    def test_a_user_the_playbook_names_confirms_its_client(self, api, evidence_root):
        ctx = make_ctx(evidence_root, step="describe_user")
        describe_user(DescribeUserArgs(user_id="u-42"), ctx)
        assert ctx.incident.client_confirmed("acme")
        assert ctx.updates["client_origins"][0].source == "enrichment"

    def test_an_unknown_user_fails_and_names_no_client(self, api, evidence_root):
        ctx = make_ctx(evidence_root)
        with pytest.raises(PermanentError, match="HTTP 404"):
            describe_user(DescribeUserArgs(user_id="ghost"), ctx)
        assert ctx.incident.affected_clients == [] and api.writes == []

    def test_dry_run_reads_but_records_no_client(self, api, evidence_root):
        ctx = make_ctx(evidence_root, dry_run=True)
        outcome = describe_user(DescribeUserArgs(user_id="u-42"), ctx)
        assert outcome.dry_run and outcome.details["client_id"] == "acme" and ctx.incident.affected_clients == []


def test_describe_token_never_returns_the_value_and_names_the_client(api, evidence_root):
    ctx = make_ctx(evidence_root, step="describe_token")
    ctx.from_run_data = frozenset({"token_id"})
    outcome = describe_token(DescribeTokenArgs(token_id="tok_1"), ctx)
    assert outcome.details["client_id"] == "acme" and outcome.details["status"] == "active"
    assert "ccr_live_aaaaaaaaaaaaaaaa" not in json.dumps(archived(evidence_root, ctx)) + json.dumps(outcome.details)
    assert [(o.client, o.source, o.confirmed) for o in ctx.incident.client_origins] == [("acme", "enrichment", False)]


class TestExportAuditLog:
    def entries(self, api):
        api.audit_log = [
            {"at": f"2026-12-05T0{h}:00:00Z", "client_id": "acme", "user_id": user, "action": action}
            for h, user, action in ((1, "u-42", "login"), (2, "u-43", "login"), (3, "u-42", "export.create"),
                                    (4, "u-42", "token.create"), (5, "u-42", "logout"))]

    def test_pages_through_the_window_and_archives_with_the_query(self, api, evidence_root):
        self.entries(api)
        ctx = make_ctx(evidence_root, step="platform_audit")
        args = AuditLogArgs(user_id="u-42", start=datetime(2026, 12, 5, 2, 30, tzinfo=UTC),
                            end=datetime(2026, 12, 5, 9, tzinfo=UTC))
        outcome = export_audit_log(args, ctx)
        assert outcome.details["count"] == 3 and not outcome.details["truncated"]
        assert outcome.details["actions"] == ["export.create", "logout", "token.create"]
        document = archived(evidence_root, ctx)
        assert document["query"] == {"user_id": "u-42", "since": "2026-12-05T02:30:00+00:00",
                                     "until": "2026-12-05T09:00:00+00:00"}
        assert [e["action"] for e in document["entries"]] == ["export.create", "token.create", "logout"]
        assert [r["query"].get("cursor") for r in api.requests] == [None, "2"] and api.writes == []

    def test_truncates_at_max_entries(self, api, evidence_root):
        self.entries(api)
        ctx = make_ctx(evidence_root, incident=make_incident())
        outcome = export_audit_log(AuditLogArgs(client_id="acme", max_entries=3, lookback_hours=2000), ctx)
        assert outcome.details["count"] == 3 and outcome.details["truncated"]
        assert "(truncated)" in outcome.message

    def test_needs_the_audit_scope(self, api, evidence_root):
        api.scopes.remove("audit:read")
        with pytest.raises(PermanentError, match="HTTP 403"):
            export_audit_log(AuditLogArgs(client_id="acme"), make_ctx(evidence_root))

    def test_the_whole_platform_is_not_an_incidents_evidence(self):
        with pytest.raises(ValidationError, match="give client_id, user_id or both"):
            AuditLogArgs()
