"""IAM actions against moto's server over HTTP: access keys, deny-all policies, session revocation."""

from __future__ import annotations

# ruff: noqa: F811  (pytest fixtures imported from service_fixtures are parameters here)
import json
from datetime import UTC, datetime, timedelta

import pytest
from service_fixtures import Fault, aws, boto, events, fault_proxy, iam_error, make_ctx, moto_server, query_action  # noqa: F401  (fixtures)

from irp.actions.aws.iam import (
    AccessKeyArgs,
    DenyPolicyArgs,
    InlinePolicyArgs,
    RevokeSessionsArgs,
    activate_access_key,
    attach_deny_policy,
    deactivate_access_key,
    restore_inline_policy,
    revoke_role_sessions,
)
from irp.actions.base import Outcome
from irp.errors import NotConfiguredError, PermanentError, TransientError

TRUST = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})


@pytest.fixture
def iam(aws: str):
    return boto("iam", aws)


@pytest.fixture
def alice_key(iam) -> str:
    iam.create_user(UserName="alice")
    return iam.create_access_key(UserName="alice")["AccessKey"]["AccessKeyId"]


def key_status(iam, user: str, key: str) -> str:
    keys = iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
    return next(k["Status"] for k in keys if k["AccessKeyId"] == key)


def undo(outcome: Outcome, store_root, registry_fn, *, step: str = "undo_it"):
    """Run the undo plan of `outcome` as `irp actions undo` would."""
    from irp.actions.registry import get_registry

    spec = get_registry()[outcome.undo.action]
    assert spec.fn is registry_fn
    return spec.fn(spec.args_model.model_validate(outcome.undo.args),
                   make_ctx(store_root, step=step, action=outcome.undo.action))


class TestDeactivateAccessKey:
    def test_deactivates_and_says_so_on_the_second_run(self, iam, alice_key, evidence_root):
        args = AccessKeyArgs(access_key_id=alice_key)
        first = deactivate_access_key(args, make_ctx(evidence_root))
        assert key_status(iam, "alice", alice_key) == "Inactive"
        assert first.changed and first.before["status"] == "Active" and first.after["status"] == "Inactive"
        assert first.before["user_name"] == "alice"  # looked up from the key

        second = deactivate_access_key(args, make_ctx(evidence_root))
        assert not second.changed
        assert "already inactive" in second.message and "earlier attempt" in second.message
        # the undo still restores the state before the incident, not the state the first attempt left
        assert second.undo == first.undo
        assert second.undo.args == {"access_key_id": alice_key, "user_name": "alice"}

    def test_before_and_after_are_archived(self, iam, alice_key, evidence_root):
        ctx = make_ctx(evidence_root)
        deactivate_access_key(AccessKeyArgs(access_key_id=alice_key, user_name="alice"), ctx)
        names = [item.name for item in ctx.evidence]
        prefix = f"actions/contain/contain_it/iam-user-alice-{alice_key}"
        assert names == [f"{prefix}/before.json", f"{prefix}/after.json"]
        with ctx.store.open(ctx.incident.id, f"{prefix}/before.json") as handle:
            assert json.load(handle)["state"]["status"] == "Active"
        with ctx.store.open(ctx.incident.id, f"{prefix}/after.json") as handle:
            assert json.load(handle)["state"]["status"] == "Inactive"

    def test_dry_run_changes_nothing(self, iam, alice_key, evidence_root):
        outcome = deactivate_access_key(AccessKeyArgs(access_key_id=alice_key), make_ctx(evidence_root, dry_run=True))
        assert outcome.dry_run and not outcome.changed and outcome.details["would_change"]
        assert outcome.message.startswith("dry run: would deactivate")
        assert key_status(iam, "alice", alice_key) == "Active"

    def test_undo_reactivates(self, iam, alice_key, evidence_root):
        outcome = deactivate_access_key(AccessKeyArgs(access_key_id=alice_key), make_ctx(evidence_root))
        back = undo(outcome, evidence_root, activate_access_key)
        assert back.changed and key_status(iam, "alice", alice_key) == "Active"

    def test_a_key_inactive_before_the_incident_has_nothing_to_undo(self, iam, alice_key, evidence_root):
        iam.update_access_key(UserName="alice", AccessKeyId=alice_key, Status="Inactive")
        outcome = deactivate_access_key(AccessKeyArgs(access_key_id=alice_key), make_ctx(evidence_root))
        assert not outcome.changed and outcome.undo is None
        assert "(already)" in outcome.message

    def test_unknown_key_is_refused_naming_the_keys_it_has(self, iam, alice_key, evidence_root):
        with pytest.raises(PermanentError, match="no access key AKIAZZZZZZZZZZZZZZZZ; its keys: " + alice_key):
            deactivate_access_key(AccessKeyArgs(access_key_id="AKIAZZZZZZZZZZZZZZZZ", user_name="alice"),
                                  make_ctx(evidence_root))

    def test_temporary_keys_are_rejected_by_the_model(self):
        with pytest.raises(ValueError, match="access_key_id"):
            AccessKeyArgs(access_key_id="ASIAABCDEFGHIJKLMNOP")


class TestRetries:
    def test_throttling_and_5xx_are_retried(self, iam, alice_key, fault_proxy, evidence_root):
        fault_proxy.faults = [
            Fault(query_action("UpdateAccessKey"), 400, iam_error("Throttling", "Rate exceeded")),
            Fault(query_action("UpdateAccessKey"), 503, iam_error("ServiceUnavailable")),
        ]
        ctx = make_ctx(evidence_root)
        outcome = deactivate_access_key(AccessKeyArgs(access_key_id=alice_key, user_name="alice"), ctx)
        assert outcome.changed and key_status(iam, "alice", alice_key) == "Inactive"
        assert fault_proxy.count("UpdateAccessKey") == 3
        notes = [e for e in ctx.timeline if e.kind == "third_party"]
        assert len(notes) == 1 and "Throttling, ServiceUnavailable" in notes[0].message

    def test_access_denied_is_not_retried_and_is_on_the_incident(self, iam, alice_key, fault_proxy, evidence_root):
        fault_proxy.faults = [Fault(query_action("UpdateAccessKey"), 403, iam_error("AccessDenied", "not allowed"),
                                    times=5)]
        with pytest.raises(PermanentError, match="AWS iam update_access_key refused: AccessDenied: not allowed"):
            deactivate_access_key(AccessKeyArgs(access_key_id=alice_key, user_name="alice"), make_ctx(evidence_root))
        assert fault_proxy.count("UpdateAccessKey") == 1
        assert key_status(iam, "alice", alice_key) == "Active"
        [entry] = events(evidence_root)
        assert entry["kind"] == "third_party" and entry["step"] == "contain_it"
        assert entry["data"] == {"provider": "AWS iam", "operation": "update_access_key", "code": "AccessDenied",
                                 "attempts": 1, "retryable": False, "action": ""}

    def test_throttling_that_lasts_fails_after_the_attempts(self, iam, alice_key, fault_proxy, evidence_root,
                                                             monkeypatch):
        monkeypatch.setenv("IRP_ACTION_ATTEMPTS", "3")
        from irp.settings import get_settings

        get_settings.cache_clear()
        fault_proxy.faults = [Fault(query_action("ListAccessKeys"), 400, iam_error("Throttling"), times=10)]
        with pytest.raises(TransientError, match=r"AWS iam list_access_keys failed after 3 attempt\(s\)"):
            deactivate_access_key(AccessKeyArgs(access_key_id=alice_key, user_name="alice"), make_ctx(evidence_root))
        assert fault_proxy.count("ListAccessKeys") == 3
        [entry] = events(evidence_root)
        assert entry["data"]["retryable"] is True and entry["data"]["attempts"] == 3
        assert "throttled" in entry["message"]

    def test_api_down_is_transient(self, aws, alice_key, evidence_root, monkeypatch):
        from service_fixtures import free_port

        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
        with pytest.raises(TransientError, match="connection failed"):
            deactivate_access_key(AccessKeyArgs(access_key_id=alice_key, user_name="alice"), make_ctx(evidence_root))
        assert events(evidence_root)[0]["data"]["code"] == "ConnectionError"


class TestCredentials:
    def test_no_credentials_is_not_configured(self, evidence_root, monkeypatch):
        monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
        with pytest.raises(NotConfiguredError, match="no credentials"):
            deactivate_access_key(AccessKeyArgs(access_key_id="AKIAABCDEFGHIJKLMNOP"), make_ctx(evidence_root))

    def test_no_region_is_not_configured(self, evidence_root, monkeypatch):
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
        with pytest.raises(NotConfiguredError, match="no region"):
            deactivate_access_key(AccessKeyArgs(access_key_id="AKIAABCDEFGHIJKLMNOP"), make_ctx(evidence_root))


class TestDenyPolicy:
    @pytest.mark.parametrize("kind", ["user", "role"])
    def test_attach_is_idempotent_and_undone(self, iam, evidence_root, kind):
        if kind == "user":
            iam.create_user(UserName="svc")
            read = lambda: iam.list_user_policies(UserName="svc")["PolicyNames"]  # noqa: E731
        else:
            iam.create_role(RoleName="svc", AssumeRolePolicyDocument=TRUST)
            read = lambda: iam.list_role_policies(RoleName="svc")["PolicyNames"]  # noqa: E731
        args = DenyPolicyArgs(principal_type=kind, name="svc")
        first = attach_deny_policy(args, make_ctx(evidence_root))
        assert first.changed and read() == ["irp-deny-all"]
        assert first.after["policy"]["Statement"][0] == {"Sid": "IrpIncidentDenyAll", "Effect": "Deny",
                                                         "Action": "*", "Resource": "*"}
        second = attach_deny_policy(args, make_ctx(evidence_root))
        assert not second.changed and "nothing changed" in second.message
        assert second.undo == first.undo and first.undo.args["document"] is None

        back = undo(first, evidence_root, restore_inline_policy)
        assert back.changed and read() == []

    def test_dry_run_checks_the_principal_exists(self, iam, evidence_root):
        with pytest.raises(PermanentError, match="no IAM role named 'ghost'"):
            attach_deny_policy(DenyPolicyArgs(principal_type="role", name="ghost"),
                               make_ctx(evidence_root, dry_run=True))
        iam.create_role(RoleName="real", AssumeRolePolicyDocument=TRUST)
        outcome = attach_deny_policy(DenyPolicyArgs(principal_type="role", name="real"),
                                     make_ctx(evidence_root, dry_run=True))
        assert outcome.details["would_change"] and iam.list_role_policies(RoleName="real")["PolicyNames"] == []


class TestRevokeSessions:
    def test_denies_tokens_issued_before_the_first_attempt(self, iam, evidence_root):
        iam.create_role(RoleName="app", AssumeRolePolicyDocument=TRUST)
        before = datetime.now(UTC).replace(microsecond=0)
        first = revoke_role_sessions(RevokeSessionsArgs(role_name="app"), make_ctx(evidence_root))
        document = iam.get_role_policy(RoleName="app", PolicyName="AWSRevokeOlderSessions")["PolicyDocument"]
        cutoff = document["Statement"][0]["Condition"]["DateLessThan"]["aws:TokenIssueTime"]
        assert document["Statement"][0]["Effect"] == "Deny"
        assert before <= datetime.fromisoformat(cutoff.replace("Z", "+00:00")) <= datetime.now(UTC)
        assert first.changed

        second = revoke_role_sessions(RevokeSessionsArgs(role_name="app"), make_ctx(evidence_root))
        assert not second.changed  # the retry reuses the first attempt's cutoff
        assert iam.get_role_policy(RoleName="app", PolicyName="AWSRevokeOlderSessions")["PolicyDocument"] == document

    def test_undo_restores_an_earlier_revocation(self, iam, evidence_root):
        iam.create_role(RoleName="app", AssumeRolePolicyDocument=TRUST)
        older = {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": ["*"], "Resource": ["*"],
                 "Condition": {"DateLessThan": {"aws:TokenIssueTime": "2020-01-01T00:00:00Z"}}}]}
        iam.put_role_policy(RoleName="app", PolicyName="AWSRevokeOlderSessions", PolicyDocument=json.dumps(older))
        outcome = revoke_role_sessions(RevokeSessionsArgs(role_name="app"), make_ctx(evidence_root))
        assert outcome.changed and outcome.undo.args["document"] == older
        undo(outcome, evidence_root, restore_inline_policy)
        assert iam.get_role_policy(RoleName="app", PolicyName="AWSRevokeOlderSessions")["PolicyDocument"] == older

    def test_a_later_revocation_already_in_place_is_kept(self, iam, evidence_root):
        iam.create_role(RoleName="app", AssumeRolePolicyDocument=TRUST)
        later = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        document = {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": ["*"], "Resource": ["*"],
                    "Condition": {"DateLessThan": {"aws:TokenIssueTime": later}}}]}
        iam.put_role_policy(RoleName="app", PolicyName="AWSRevokeOlderSessions", PolicyDocument=json.dumps(document))
        outcome = revoke_role_sessions(RevokeSessionsArgs(role_name="app"), make_ctx(evidence_root))
        assert not outcome.changed and outcome.undo is None


def test_restore_inline_policy_puts_a_document_back(iam, evidence_root):
    iam.create_user(UserName="bob")
    document = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject",
                                                        "Resource": "*"}]}
    outcome = restore_inline_policy(InlinePolicyArgs(principal_type="user", name="bob", policy_name="p",
                                                     document=document), make_ctx(evidence_root))
    assert outcome.changed and outcome.undo is None
    assert iam.get_user_policy(UserName="bob", PolicyName="p")["PolicyDocument"] == document
