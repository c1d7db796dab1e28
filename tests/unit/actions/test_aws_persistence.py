"""IAM persistence against moto's server over HTTP: listed in a window, removed item by item, partly restored."""

from __future__ import annotations

# ruff: noqa: F811  (pytest fixtures imported from service_fixtures are parameters here)
import json
import time
from datetime import UTC, datetime

import pytest
from service_fixtures import aws, boto, make_ctx, moto_server  # noqa: F401  (fixtures)

from irp.actions.aws.persistence import (
    ListPersistenceArgs,
    RemovePersistenceArgs,
    list_persistence,
    remove_persistence,
)
from irp.actions.registry import get_registry
from irp.models import Stage


def trust(account: str | None = None, service: str | None = None) -> str:
    principal = {"AWS": f"arn:aws:iam::{account}:root"} if account else {"Service": service}
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}]})


@pytest.fixture
def iam(aws: str, monkeypatch):
    from irp.settings import get_settings

    monkeypatch.setenv("IRP_AWS_TRUSTED_ACCOUNTS", "111122223333")
    get_settings.cache_clear()
    return boto("iam", aws)


@pytest.fixture
def attack(iam) -> dict:
    """alice and her key exist before the window; then an attacker adds keys, a user with a password and MFA, roles."""
    iam.create_user(UserName="alice")
    old_key = iam.create_access_key(UserName="alice")["AccessKey"]["AccessKeyId"]
    time.sleep(1.1)
    since = datetime.now(UTC)
    new_key = iam.create_access_key(UserName="alice")["AccessKey"]["AccessKeyId"]
    iam.create_user(UserName="backdoor")
    backdoor_key = iam.create_access_key(UserName="backdoor")["AccessKey"]["AccessKeyId"]
    iam.create_login_profile(UserName="backdoor", Password="Attacker-Pa55word!")
    serial = iam.create_virtual_mfa_device(VirtualMFADeviceName="backdoor")["VirtualMFADevice"]["SerialNumber"]
    iam.enable_mfa_device(UserName="backdoor", SerialNumber=serial, AuthenticationCode1="123456",
                          AuthenticationCode2="654321")
    iam.create_role(RoleName="ext", AssumeRolePolicyDocument=trust("999988887777"))
    iam.create_role(RoleName="partner", AssumeRolePolicyDocument=trust("111122223333"))
    iam.create_role(RoleName="svc", AssumeRolePolicyDocument=trust(service="ec2.amazonaws.com"))
    return {"since": since, "old_key": old_key, "new_key": new_key, "backdoor_key": backdoor_key, "mfa": serial}


def key_status(iam, user: str, key: str) -> str:
    return next(k["Status"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"] if k["AccessKeyId"] == key)


def has_login_profile(iam, user: str) -> bool:
    try:
        iam.get_login_profile(UserName=user)
        return True
    except iam.exceptions.NoSuchEntityException:
        return False


class TestListPersistence:
    def test_lists_what_was_created_in_the_window_and_archives_it(self, iam, attack, evidence_root):
        ctx = make_ctx(evidence_root, stage=Stage.analyse, step="persistence")
        outcome = list_persistence(ListPersistenceArgs(since=attack["since"]), ctx)
        details = outcome.details
        assert sorted(details["access_keys"]) == sorted([attack["new_key"], attack["backdoor_key"]])
        assert details["users"] == ["backdoor"] and details["login_profiles"] == ["backdoor"]
        assert details["mfa_devices"] == [attack["mfa"]] and details["roles"] == ["ext"]
        assert next(i for i in details["items"] if i["kind"] == "role")["trusts"] == ["999988887777"]
        [item] = ctx.evidence
        assert item.name == "actions/analyse/persistence/iam-persistence-account.json"
        with ctx.store.open(ctx.incident.id, item.name) as handle:
            archived = json.load(handle)
        assert archived["items"] == details["items"] and "Attacker-Pa55word!" not in json.dumps(archived)

    def test_one_user_only(self, iam, attack, evidence_root):
        outcome = list_persistence(ListPersistenceArgs(user_name="alice", since=attack["since"]),
                                   make_ctx(evidence_root))
        assert [(i["kind"], i["id"]) for i in outcome.details["items"]] == [("access_key", attack["new_key"])]

    def test_a_window_before_the_attack_finds_only_the_old_key(self, iam, attack, evidence_root):
        outcome = list_persistence(ListPersistenceArgs(user_name="alice", since=datetime(2020, 1, 1, tzinfo=UTC),
                                                       until=attack["since"]), make_ctx(evidence_root))
        assert outcome.details["access_keys"] == [attack["old_key"]]


class TestRemovePersistence:
    def args(self, attack) -> RemovePersistenceArgs:
        return RemovePersistenceArgs(access_keys=[attack["new_key"], attack["backdoor_key"]], login_profiles="backdoor",
                                     mfa_devices=[attack["mfa"]], users="backdoor", roles="ext")

    def test_removes_each_item_once_and_undo_restores_what_aws_allows(self, iam, attack, evidence_root):
        first = remove_persistence(self.args(attack), make_ctx(evidence_root))
        assert first.changed and len(first.details["items"]) == 6 and all(i["changed"] for i in first.details["items"])
        assert key_status(iam, "alice", attack["new_key"]) == "Inactive"
        assert key_status(iam, "alice", attack["old_key"]) == "Active"
        assert not has_login_profile(iam, "backdoor")
        assert iam.list_virtual_mfa_devices()["VirtualMFADevices"] == []
        assert iam.list_user_policies(UserName="backdoor")["PolicyNames"] == ["irp-deny-all"]
        assert iam.list_role_policies(RoleName="ext")["PolicyNames"] == ["irp-deny-all"]
        assert "cannot be restored: iam-user/backdoor/login-profile" in first.message
        second = remove_persistence(self.args(attack), make_ctx(evidence_root))
        assert not second.changed and second.undo == first.undo
        spec = get_registry()[first.undo.action]
        restored = spec.fn(spec.args_model.model_validate(first.undo.args), make_ctx(evidence_root, step="undo_it"))
        assert restored.changed and "4 of 4 item(s) restored" in restored.message
        assert key_status(iam, "backdoor", attack["backdoor_key"]) == "Active"
        assert iam.list_role_policies(RoleName="ext")["PolicyNames"] == []
        assert not has_login_profile(iam, "backdoor")

    def test_dry_run_changes_nothing(self, iam, attack, evidence_root):
        outcome = remove_persistence(self.args(attack), make_ctx(evidence_root, dry_run=True))
        assert outcome.dry_run and not outcome.changed and "would remove or deactivate 6 of 6" in outcome.message
        assert key_status(iam, "alice", attack["new_key"]) == "Active" and has_login_profile(iam, "backdoor")

    def test_an_item_already_gone_is_skipped_and_the_rest_goes_on(self, iam, attack, evidence_root):
        iam.delete_login_profile(UserName="backdoor")
        outcome = remove_persistence(RemovePersistenceArgs(access_keys=["AKIAGONE0000000000000", attack["new_key"]],
                                                           login_profiles="backdoor"), make_ctx(evidence_root))
        assert list(outcome.details["skipped"]) == ["access key AKIAGONE0000000000000"]
        assert key_status(iam, "alice", attack["new_key"]) == "Inactive"
        assert "has no console password" in outcome.details["items"][1]["message"]

    def test_bad_ids_are_refused_by_the_model(self):
        with pytest.raises(ValueError, match="mfa/x-bad: not virtual MFA device serial numbers"):
            RemovePersistenceArgs(mfa_devices="mfa/x-bad")


def test_trusted_accounts_must_be_account_ids(monkeypatch):
    from irp.settings import Settings

    monkeypatch.setenv("IRP_AWS_TRUSTED_ACCOUNTS", "111122223333, partner")
    with pytest.raises(ValueError, match="partner: not AWS account ids"):
        Settings()
