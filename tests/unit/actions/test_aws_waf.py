"""WAFv2 web ACL rules against moto's server over HTTP: a rate-based rule added, idempotent, undone."""

from __future__ import annotations

# ruff: noqa: F811  (pytest fixtures imported from service_fixtures are parameters here)
import pytest
from service_fixtures import Fault, aws, boto, fault_proxy, json_error, json_target, make_ctx, moto_server  # noqa: F401

from irp.actions.aws.waf import RateRuleArgs, RemoveRuleArgs, add_rate_limit_rule, remove_waf_rule
from irp.actions.registry import get_registry
from irp.errors import NotConfiguredError, PermanentError

VISIBILITY = {"SampledRequestsEnabled": False, "CloudWatchMetricsEnabled": False, "MetricName": "m"}
GEO = {"Name": "geo", "Priority": 0, "Action": {"Block": {}}, "VisibilityConfig": VISIBILITY,
       "Statement": {"GeoMatchStatement": {"CountryCodes": ["KP"]}}}


@pytest.fixture
def waf(aws: str):
    return boto("wafv2", aws)


@pytest.fixture
def acl(waf) -> str:
    """A regional web ACL with one rule at priority 0 and a description."""
    return waf.create_web_acl(Name="front", Scope="REGIONAL", DefaultAction={"Allow": {}}, Description="front door",
                              VisibilityConfig=VISIBILITY, Rules=[GEO])["Summary"]["ARN"]


def rules(waf, arn: str) -> list[dict]:
    parts = arn.split("/")
    found = waf.get_web_acl(Name=parts[-2], Scope="REGIONAL", Id=parts[-1])["WebACL"]
    return [{k: v for k, v in r.items() if k in ("Name", "Priority", "Statement", "Action")} for r in found["Rules"]]


def acl_settings(waf, arn: str) -> tuple:
    parts = arn.split("/")
    found = waf.get_web_acl(Name=parts[-2], Scope="REGIONAL", Id=parts[-1])["WebACL"]
    return found["DefaultAction"], found["Description"]


def run_undo(outcome, evidence_root):
    spec = get_registry()[outcome.undo.action]
    return spec.fn(spec.args_model.model_validate(outcome.undo.args),
                   make_ctx(evidence_root, step="undo_it", action=outcome.undo.action))


class TestRateLimitRule:
    def test_adds_once_keeps_the_acl_and_undo_removes_it(self, waf, acl, evidence_root):
        args = RateRuleArgs(web_acl_arn=acl, limit=500)
        first = add_rate_limit_rule(args, make_ctx(evidence_root))
        assert first.changed and first.details == {"rule_name": "irp-rate-INC-TEST-0001", "priority": 1}
        assert rules(waf, acl)[1] == {"Name": "irp-rate-INC-TEST-0001", "Priority": 1, "Action": {"Block": {}},
                                      "Statement": {"RateBasedStatement": {"Limit": 500, "AggregateKeyType": "IP"}}}
        assert rules(waf, acl)[0]["Name"] == "geo" and acl_settings(waf, acl) == ({"Allow": {}}, "front door")
        second = add_rate_limit_rule(args, make_ctx(evidence_root))
        assert not second.changed and second.undo == first.undo and len(rules(waf, acl)) == 2
        removed = run_undo(first, evidence_root)
        assert removed.changed and [r["Name"] for r in rules(waf, acl)] == ["geo"]
        assert acl_settings(waf, acl) == ({"Allow": {}}, "front door")
        assert not remove_waf_rule(RemoveRuleArgs.model_validate(first.undo.args), make_ctx(evidence_root)).changed

    def test_a_rule_of_that_name_with_another_limit_is_refused(self, waf, acl, evidence_root):
        add_rate_limit_rule(RateRuleArgs(web_acl_arn=acl, limit=500, rule_name="flood"), make_ctx(evidence_root))
        with pytest.raises(PermanentError, match="already has a rule named 'flood' that is not a rate limit of 100"):
            add_rate_limit_rule(RateRuleArgs(web_acl_arn=acl, limit=100, rule_name="flood"),
                                make_ctx(evidence_root, step="other"))

    def test_a_taken_priority_is_refused(self, waf, acl, evidence_root):
        with pytest.raises(PermanentError, match=r"priority 0 is taken in web ACL front; taken: \[0\]"):
            add_rate_limit_rule(RateRuleArgs(web_acl_arn=acl, limit=500, priority=0), make_ctx(evidence_root))

    def test_capacity_is_checked_before_writing(self, waf, acl, evidence_root):
        # moto reports 3 WCUs used by any web ACL; the rule needs 2 more
        with pytest.raises(PermanentError, match="would bring it to 5, over capacity_limit 4"):
            add_rate_limit_rule(RateRuleArgs(web_acl_arn=acl, limit=500, capacity_limit=4), make_ctx(evidence_root))
        assert len(rules(waf, acl)) == 1

    def test_a_lost_lock_is_retried(self, waf, acl, fault_proxy, evidence_root):
        fault_proxy.faults = [Fault(json_target("UpdateWebACL"), 400, json_error("WAFOptimisticLockException"),
                                    content_type="application/x-amz-json-1.1")]
        outcome = add_rate_limit_rule(RateRuleArgs(web_acl_arn=acl, limit=500), make_ctx(evidence_root))
        assert outcome.changed and len(rules(waf, acl)) == 2 and fault_proxy.count("UpdateWebACL") == 2

    def test_dry_run_writes_nothing(self, waf, acl, evidence_root):
        outcome = add_rate_limit_rule(RateRuleArgs(web_acl_arn=acl, limit=500), make_ctx(evidence_root, dry_run=True))
        assert outcome.details["would_change"] and len(rules(waf, acl)) == 1

    def test_the_setting_names_the_acl(self, waf, acl, evidence_root, monkeypatch):
        from irp.settings import get_settings

        with pytest.raises(NotConfiguredError, match="IRP_AWS_WAF_WEB_ACL_ARN is unset"):
            add_rate_limit_rule(RateRuleArgs(limit=500), make_ctx(evidence_root))
        monkeypatch.setenv("IRP_AWS_WAF_WEB_ACL_ARN", acl)
        get_settings.cache_clear()
        assert add_rate_limit_rule(RateRuleArgs(limit=500), make_ctx(evidence_root)).changed

    def test_an_ip_set_arn_is_not_a_web_acl(self):
        with pytest.raises(ValueError, match="not a WAFv2 web ACL ARN"):
            RateRuleArgs(web_acl_arn="arn:aws:wafv2:eu-west-3:123456789012:regional/ipset/x/1", limit=500)
