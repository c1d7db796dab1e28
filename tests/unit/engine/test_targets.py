"""Targets an alert may aim at: the registry's marks, the static rule, IRP_ACTION_TARGETS, the approval
form, the validator's notes, and where an incident's Clients come from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from service_fixtures import make_ctx, make_incident
from typer.testing import CliRunner

from irp.actions.incident import ScopeArgs, set_scope
from irp.actions.registry import get_registry
from irp.cli import app
from irp.engine.approval import describe, request_approval
from irp.engine.records import RunContext
from irp.engine.script import Script
from irp.engine.targets import TargetValue, judge
from irp.errors import ConfigurationError
from irp.models import ClientOrigin, Stage, TimelineEntry
from irp.notifications import client_hold
from irp.playbook.loader import load_playbook
from irp.playbook.models import Approval
from irp.playbook.templates import reads_run_data
from irp.settings import Settings, get_settings

REPO = Path(__file__).resolve().parents[3]
# Actions of irp/actions/aws/ and irp/actions/http.py that change nothing they are pointed at.
READ_ONLY = {"aws.list_persistence", "aws.lookup_cloudtrail_events", "aws.snapshot_volumes", "http.request",
             "aws.describe_access_key", "aws.describe_instance", "aws.describe_bucket", "aws.collect_s3_data_events",
             "aws.collect_s3_access_logs", "aws.collect_instance_state", "aws.query_logs_insights",
             "platform.describe_user", "platform.describe_token", "platform.export_audit_log"}


def verdict(monkeypatch: pytest.MonkeyPatch, rules: dict, action: str, args: dict, templated: tuple[str, ...] = ()):
    """judge() on `args`, the arguments in `templated` written in the playbook as alert templates."""
    monkeypatch.setenv("IRP_ACTION_TARGETS", json.dumps(rules))
    get_settings.cache_clear()
    spec = get_registry()[action]
    raw = {key: ("{{ alert.labels.x }}" if key in templated else value) for key, value in args.items()}
    return judge(spec, raw, spec.args_model.model_validate(args))


class TestRegistry:
    def test_every_state_changing_aws_and_platform_action_declares_its_targets(self) -> None:
        registry = get_registry()
        changing = {n for n, s in registry.items()
                    if s.module.startswith(("irp.actions.aws.", "irp.actions.platform", "irp.actions.http"))} - READ_ONLY
        assert changing and {n for n in changing if not registry[n].targets} == set()
        assert registry["platform.reset_password"].targets["user_id"].kind == "platform_user"
        assert set(registry["aws.block_ip"].targets) == {"cidr", "ip_set_arn", "network_acl_id"}

    def test_a_kind_may_depend_on_another_argument(self) -> None:
        spec = get_registry()["platform.set_maintenance"]
        target = spec.targets["target"]
        assert target.kinds(spec.args_model) == ["tenant", "feature"]
        args = spec.args_model.model_validate({"scope": "tenant", "target": "acme"})
        assert target.resolve(args) == "tenant"

    def test_the_catalogue_shows_targets(self) -> None:
        from irp.actions.registry import catalogue_markdown

        row = next(line for line in catalogue_markdown().splitlines() if line.startswith("| `aws.attach_deny_policy`"))
        assert "`name` (required, target: iam_user/iam_role)" in row


class TestStaticRule:
    @pytest.mark.parametrize("text", [
        "{{ alert.labels.user_id }}", "{{ alert.labels.get('user') or 'x' }}", "u-{{ steps.scope.output.user }}",
        "{{ incident.affected_clients[0] }}", "{% for c in incident.affected_clients %}{{ c }}{% endfor %}",
        "{{ broken", ["{{ alert.title }}"], {"a": "{{ alert.title }}"},
    ])
    def test_run_data_counts_as_chosen_by_the_alert(self, text) -> None:
        assert reads_run_data(text)

    @pytest.mark.parametrize("text", ["break-glass-admin", "{{ 'svc-' ~ 'export' }}", "{{ playbook.name }}-{{ stage }}",
                                      42, None, "a{b"])
    def test_constants_and_configuration_do_not(self, text) -> None:
        assert not reads_run_data(text)


class TestJudge:
    def test_an_alert_chosen_target_without_allow_is_held(self, monkeypatch) -> None:
        result = verdict(monkeypatch, {}, "platform.reset_password", {"user_id": "u-42"}, ("user_id",))
        assert result.held == ("held for approval: user_id 'u-42' (platform_user) comes from alert data and no "
                               "IRP_ACTION_TARGETS allow pattern covers it")
        assert result.targets == [TargetValue("user_id", "platform_user", "u-42", True)] and not result.refused

    def test_a_playbook_constant_runs_and_an_allowed_value_too(self, monkeypatch) -> None:
        assert not verdict(monkeypatch, {}, "platform.reset_password", {"user_id": "u-42"}).held
        rules = {"platform_user": {"allow": ["U-*"]}}  # globs ignore case
        assert not verdict(monkeypatch, rules, "platform.reset_password", {"user_id": "u-42"}, ("user_id",)).held

    def test_deny_wins_over_allow_and_over_the_playbook(self, monkeypatch) -> None:
        rules = {"iam_user": {"allow": ["*"], "deny": ["break-glass-*"]}}
        result = verdict(monkeypatch, rules, "aws.attach_deny_policy", {"principal_type": "user",
                                                                        "name": "Break-Glass-Admin"})
        assert result.refused.startswith("refused: name 'Break-Glass-Admin' (iam_user) is protected "
                                          "(IRP_ACTION_TARGETS[\"iam_user\"] denies 'break-glass-*')")
        role = verdict(monkeypatch, rules, "aws.attach_deny_policy", {"principal_type": "role",
                                                                      "name": "break-glass-admin"}, ("name",))
        assert not role.refused and role.held  # a role named alike is another kind

    def test_cidr_allow_needs_containment_and_deny_any_overlap(self, monkeypatch) -> None:
        rules = {"cidr": {"allow": ["0.0.0.0/0"], "deny": ["10.0.0.0/8", "192.168.7.0/24"]}}
        assert verdict(monkeypatch, rules, "aws.block_ip", {"cidr": "10.1.2.3"}, ("cidr",)).refused
        assert verdict(monkeypatch, rules, "aws.block_ip", {"cidr": "192.168.0.0/16"}, ("cidr",)).refused  # wider
        assert not verdict(monkeypatch, rules, "aws.block_ip", {"cidr": "198.51.100.7"}, ("cidr",)).held
        narrow = {"cidr": {"allow": ["198.51.100.0/24"]}}
        assert verdict(monkeypatch, narrow, "aws.block_ip", {"cidr": "198.51.0.0/16"}, ("cidr",)).held

    def test_rules_per_action_apply_to_that_action_only(self, monkeypatch) -> None:
        rules = {"aws.deactivate_access_key": {"allow": ["AKIA*"]}}
        key = {"access_key_id": "AKIAABCDEFGHIJKLMNOP"}
        assert not verdict(monkeypatch, rules, "aws.deactivate_access_key", key, ("access_key_id",)).held
        assert verdict(monkeypatch, rules, "aws.activate_access_key", key, ("access_key_id",)).held

    def test_an_unknown_action_in_the_setting_is_a_clear_error(self, monkeypatch) -> None:
        with pytest.raises(ConfigurationError, match="'platform.reset_pasword' is not an action with targets; "
                                                     "actions with targets: aws.activate_access_key"):
            verdict(monkeypatch, {"platform.reset_pasword": {"deny": ["x"]}}, "platform.reset_password",
                    {"user_id": "u-42"})

    @pytest.mark.parametrize(("value", "message"), [
        ({"users": {"deny": ["x"]}}, "'users' is neither a target kind"),
        ({"cidr": {"deny": ["10.0.0.0/33"]}}, "cidr: '10.0.0.0/33' is not an IP address or CIDR range"),
        ({"iam_user": {"alow": ["x"]}}, "Extra inputs are not permitted"),
    ])
    def test_bad_settings_are_refused_at_start(self, monkeypatch, value, message) -> None:
        monkeypatch.setenv("IRP_ACTION_TARGETS", json.dumps(value))
        with pytest.raises(ValidationError, match=message):
            Settings()


class TestApprovalForm:
    class Step:
        id, action, description, approval = "reset_password", "platform.reset_password", "Burn the password", None

    def test_the_form_lists_targets_and_who_chose_them(self) -> None:
        targets = [TargetValue("user_id", "platform_user", "u-42 | `x`", True),
                   TargetValue("ip_set_arn", "ip_set", "arn:aws:wafv2:...", False)]
        text = describe(self.Step(), Stage.contain, make_incident(), {"user_id": "u-42"}, 1, [], targets,
                        "held for approval: user_id 'u-42' (platform_user) comes from alert data")
        assert "**Why irp asks:** user_id 'u-42' (platform_user) comes from alert data" in text
        assert "| `user_id` | platform_user | `u-42 \\| 'x'` | **alert data** (check it) |" in text
        assert "| `ip_set_arn` | ip_set | `arn:aws:wafv2:...` | the playbook or configuration |" in text

    def test_a_dry_run_says_the_step_would_be_held(self) -> None:
        run = RunContext.model_construct(dry_run=True, approvals="pause", script=None)
        outcome = request_approval(self.Step(), Stage.contain, make_incident(), {}, run, why="held for approval: x")
        assert outcome.approved and outcome.timeline[0].message == "dry run: step reset_password would be held for approval: x"

    def test_without_a_server_nobody_approves_and_the_reason_says_so(self) -> None:
        run = RunContext.model_construct(dry_run=False, approvals="none", script=None)
        outcome = request_approval(self.Step(), Stage.contain, make_incident(), {}, run)
        assert not outcome.approved and outcome.reason.startswith("no one can approve step reset_password here")

    def test_a_decisions_file_approves_with_enough_distinct_people_or_rejects(self) -> None:
        two = Approval(approvers=2)
        step = type("S", (), {"id": "reset_password", "action": "platform.reset_password", "description": "",
                              "approval": two})()
        def run(*entries):
            script = Script.model_validate({"decisions": list(entries)})
            return RunContext.model_construct(dry_run=False, approvals="pause", script=script,
                                              script_start=make_incident().aware_at)
        once = {"at": "5m", "by": "alice", "approve": "reset_password", "note": "ok"}
        assert not request_approval(step, Stage.contain, make_incident(), {}, run(once, once)).approved  # one person
        both = request_approval(step, Stage.contain, make_incident(), {}, run(once, {**once, "by": "bob"}))
        assert both.approved and both.reason == "approved by alice, bob (decisions file)"
        rejected = request_approval(step, Stage.contain, make_incident(), {},
                                    run(once, {"at": "6m", "by": "bob", "reject": "reset_password", "note": "no"}))
        assert not rejected.approved and rejected.reason == "step reset_password rejected by bob: no"


class TestValidatorNotes:
    def test_shipped_steps_that_will_be_held_are_noted_not_invalid(self) -> None:
        loaded = load_playbook(REPO / "playbooks" / "account_compromise.yaml")
        noted = {n.path for n in loaded.notes}
        assert "stages.contain.1.args.user_id" in noted  # reset_password, no approval
        assert not any(".args.client_id" in n for n in noted)  # suspend_client has its approval
        result = CliRunner().invoke(app, ["playbooks", "validate", str(REPO / "playbooks" / "account_compromise.yaml")])
        assert result.exit_code == 0 and "stages.contain.1.args.user_id: note: platform.reset_password changes " \
            "this target (platform_user) and alert data chooses its value" in result.output


class TestClientOrigins:
    def test_clients_from_alert_data_are_unconfirmed_those_of_the_playbook_trusted(self, evidence_root) -> None:
        ctx = make_ctx(evidence_root, step="scope")
        ctx.from_run_data = frozenset({"affected_clients"})
        set_scope(ScopeArgs(affected_clients="globex"), ctx)
        assert [(o.client, o.source, o.confirmed) for o in ctx.incident.client_origins] == [("globex", "alert", False)]
        assert not ctx.incident.client_confirmed("globex")
        assert any("not confirmed: globex" in e.message for e in ctx.timeline)
        ctx.from_run_data = frozenset()
        set_scope(ScopeArgs(affected_clients="globex,acme"), ctx)
        assert ctx.incident.client_confirmed("globex") and ctx.incident.client_confirmed("acme")

    def test_a_letter_is_held_for_an_unconfirmed_client_and_never_mailed_to_an_unknown_one(self) -> None:
        settings = Settings(notify_clients={"globex": ["dpo@globex.example"]})
        incident = make_incident().model_copy(update={
            "affected_clients": ["globex", "initech"],
            "client_origins": [ClientOrigin.of("globex", "alert"), ClientOrigin.of("initech", "alert")]})
        assert client_hold(incident, settings, "client", "initech")[0] == "unknown_client"
        hold, why = client_hold(incident, settings, "client", "globex")
        assert hold == "unconfirmed_client" and "--clients globex --by NAME" in why
        assert client_hold(incident, settings, "internal", "") == client_hold(incident, settings, "data_subjects", "*") \
            == ("", "")
        confirmed = incident.model_copy(update={"timeline": [TimelineEntry(
            kind="clients_confirmed", message="x", data={"clients": ["globex"], "by": "Alice"})]})
        assert client_hold(confirmed, settings, "client", "globex") == ("", "")
