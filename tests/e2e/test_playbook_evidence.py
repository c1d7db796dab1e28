"""Each revised playbook on its shipped sample, run by Prefect against moto's server over HTTP (and the admin
API on loopback): the evidence steps ran in analyse and ended before the first containment step started
(RFC 3227, §10), each archived what it collected, and the containment the playbook promises was done."""

from __future__ import annotations

# ruff: noqa: F811  (pytest fixtures imported from service_fixtures are parameters here)
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
from aws_stack import AWS_SAMPLES, Approver, Cloud, prepare, routed, step_records
from lifecycle_fixtures import EVERYONE_AGREES
from playbook_copies import edit_playbook
from service_fixtures import ADMIN_TOKEN, AdminApi, AsgiServer, aws, boto, fault_proxy, moto_server, save_secret  # noqa: F401

from flows.incidents import INCIDENT_FLOWS
from irp.alerts import read_alert
from irp.models import IncidentStatus, IncidentType
from irp.settings import get_settings

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "playbooks" / "samples"

pytestmark = pytest.mark.usefixtures("prefect_server")


@dataclass
class Case:
    sample: str  # aws/<file> (an EventBridge event) or <type>.json (a generic alert)
    collected: list[str]  # analyse steps that collect evidence, all expected to complete
    contained: list[str]  # contain steps the playbook promises for this sample, all expected to complete
    check: Callable[[Cloud, AdminApi], None] = lambda cloud, api: None
    labels: dict[str, str] = field(default_factory=dict)  # added to a generic sample
    setup: Callable[[Cloud, AdminApi], None] = lambda cloud, api: None


def key_inactive(cloud: Cloud, api: AdminApi) -> None:
    assert cloud.key_status() == "Inactive"


def bucket_closed(name: str) -> Callable[[Cloud, AdminApi], None]:
    def check(cloud: Cloud, api: AdminApi) -> None:
        block = cloud.s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
        assert all(block.values()) and len(block) == 4
    return check


def both(*checks: Callable[[Cloud, AdminApi], None]) -> Callable[[Cloud, AdminApi], None]:
    return lambda cloud, api: [check(cloud, api) for check in checks] and None


def quarantined(cloud: Cloud, api: AdminApi) -> None:
    assert cloud.placement() == {"state": "Standby", "in_target_group": False}


def still_serving(cloud: Cloud, api: AdminApi) -> None:
    """A provider's outage is not the instance's fault: described, never isolated."""
    assert cloud.placement() == {"state": "InService", "in_target_group": True}


def console_user(cloud: Cloud, api: AdminApi) -> None:
    cloud.iam.create_user(UserName="support-lead")
    cloud.user = "support-lead"
    cloud.trail_events("ConsoleLogin", "CreateUser")


def user_denied(cloud: Cloud, api: AdminApi) -> None:
    assert "irp-deny-all" in cloud.iam.list_user_policies(UserName="support-lead")["PolicyNames"]


def rate_rule(cloud: Cloud, api: AdminApi) -> None:
    parts = cloud.web_acl.split("/")
    acl = boto("wafv2", cloud.endpoint).get_web_acl(Name=parts[-2], Scope="REGIONAL", Id=parts[-1])["WebACL"]
    [rule] = acl["Rules"]
    assert rule["Statement"]["RateBasedStatement"]["Limit"] == 2000 and "Block" in rule["Action"]


def writer_client(cloud: Cloud, api: AdminApi) -> None:
    api.clients["lumen-services"] = {"id": "lumen-services", "name": "Lumen", "status": "active",
                                     "suspended_reason": None}
    api.tokens["tok_9d1e47"] = {"id": "tok_9d1e47", "client_id": "lumen-services", "name": "int-crm-sync",
                                "status": "active", "secret": "ccr_live_cccccccccccccccc"}
    api.audit_log = [{"at": datetime.now().astimezone().isoformat(), "client_id": "lumen-services",
                      "user_id": "int-crm-sync", "action": "ratings.bulk_update"}]


def token_revoked(cloud: Cloud, api: AdminApi) -> None:
    assert api.tokens["tok_9d1e47"]["status"] == "revoked"


CASES = {
    "data_leak-guardduty-s3": Case(
        "aws/guardduty-s3-exfiltration.json",
        ["describe_key", "describe_bucket", "flow_logs", "trail_key", "s3_data_events", "s3_access_logs"],
        ["deactivate_key", "block_public"], both(key_inactive, bucket_closed("callcenterrate-recordings"))),
    "data_leak-cloudtrail-public-bucket": Case(
        "aws/cloudtrail-bucket-policy-public.json",
        ["describe_bucket", "flow_logs", "s3_data_events", "s3_access_logs"], ["block_public"],
        bucket_closed("callcenterrate-exports")),
    "data_leak-securityhub-macie": Case(
        "aws/securityhub-macie-pii.json", ["describe_bucket", "s3_data_events", "s3_access_logs"], ["block_public"],
        bucket_closed("callcenterrate-exports")),
    "account_compromise-guardduty-iam": Case(
        "aws/guardduty-iam-credentials.json", ["describe_key", "trail_key", "trail_user", "list_persistence"],
        ["deactivate_key", "remove_persistence", "block_src"], key_inactive),
    "account_compromise-cloudtrail-root-key": Case(
        "aws/cloudtrail-root-access-key.json", ["describe_key", "trail_key", "list_persistence"],
        ["deactivate_key", "remove_persistence", "block_src"], key_inactive),
    "account_compromise-health-exposed-key": Case(
        "aws/health-credentials-exposed.json", ["describe_key", "trail_key", "list_persistence"],
        ["deactivate_key", "remove_persistence"], key_inactive),
    "account_compromise-securityhub-key": Case(
        "aws/securityhub-iam-ttp.json", ["describe_key", "trail_key", "trail_user", "list_persistence"],
        ["deactivate_key", "remove_persistence"], key_inactive),
    "malware-guardduty-ec2": Case(
        "aws/guardduty-ec2-cryptocurrency.json", ["collect_host_state", "describe_host"], ["quarantine_host"],
        quarantined),
    "unauthorized_access-console-without-mfa": Case(
        "aws/console-login-without-mfa.json", ["trail_user", "list_persistence"], ["deny_iam_user"], user_denied,
        setup=console_user),
    "intrusion_attempt-guardduty-ssh": Case(
        "aws/guardduty-ec2-ssh-brute-force.json", ["flow_logs"], ["block_src"]),
    "service_unavailability-aws-health": Case(
        "aws/health-issue.json", ["describe_instance"], ["shed_load", "fail_over"], still_serving),
    "cyberattack-ddos": Case("cyberattack.json", ["waf_logs"], ["rate_limit"], rate_rule),
    "data_alteration-ratings": Case("data_alteration.json", ["platform_audit"], ["revoke_writer_tokens"],
                                    token_revoked, setup=writer_client),
    "human_error-deleted-object": Case(
        "human_error.json", ["describe_bucket", "s3_data_events"], ["undo_mistake"],
        labels={"bucket": "callcenterrate-exports", "object_key": "exports/acme.csv"},
        setup=lambda cloud, api: cloud.bucket("callcenterrate-exports")),
}


@pytest.fixture
def admin_api(monkeypatch: pytest.MonkeyPatch):
    """The admin API on loopback, its token in a real Prefect Secret block."""
    api = AdminApi()
    save_secret("irp-test-admin-token", ADMIN_TOKEN)
    with AsgiServer(api.app) as server:
        monkeypatch.setenv("IRP_PLATFORM_API_URL", f"{server.url}/admin/v1")
        monkeypatch.setenv("IRP_PLATFORM_TOKEN_BLOCK", "irp-test-admin-token")
        yield api


@pytest.fixture
def cloud(fault_proxy, aws, admin_api, playbooks: Path, monkeypatch: pytest.MonkeyPatch) -> Cloud:
    for incident_type, name in (("data_leak", "flow_log_groups"), ("malware", "flow_log_groups"),
                                ("intrusion_attempt", "flow_log_groups"), ("cyberattack", "waf_log_groups")):
        group = "aws-waf-logs-edge" if name == "waf_log_groups" else "vpc-flow-logs"
        edit_playbook(playbooks, incident_type, lambda d, n=name, g=group: d["vars"].__setitem__(n, [g]))
    built = Cloud(aws, fault_proxy, monkeypatch)
    get_settings.cache_clear()
    return built


def alert_of(case: Case, cloud: Cloud, api: AdminApi):
    case.setup(cloud, api)
    if case.sample.startswith("aws/"):
        return routed("eventbridge", prepare(cloud, (AWS_SAMPLES / case.sample.removeprefix("aws/")).read_text()))
    alert = read_alert(SAMPLES / case.sample)
    alert = alert.model_copy(update={"labels": {**alert.labels, **case.labels}})
    return alert, IncidentType(case.sample.removesuffix(".json")), None


@pytest.mark.parametrize("name", list(CASES))
def test_evidence_is_collected_before_the_first_containment_step(name, cloud, admin_api, evidence_root):
    case = CASES[name]
    alert, incident_type, hint = alert_of(case, cloud, admin_api)
    with Approver():
        state = INCIDENT_FLOWS[incident_type](alert=alert, severity_hint=hint, decisions=EVERYONE_AGREES,
                                              return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary.status == IncidentStatus.closed
    records = {r["id"]: r for r in step_records(evidence_root, summary.incident_id)}

    for step in case.collected:
        record = records[step]
        assert (record["stage"], record["status"]) == ("analyse", "completed"), (step, record.get("error"),
                                                                                record.get("reason"))
        assert record["evidence"], f"{step} archived nothing"
    for step in case.contained:
        assert (records[step]["stage"], records[step]["status"]) == ("contain", "completed"), (
            step, records[step].get("error"), records[step].get("reason"))
    acted = [r for r in records.values() if r["stage"] == "contain" and r["status"] != "skipped"]
    first_containment = min(datetime.fromisoformat(r["started_at"]) for r in acted)
    last_collection = max(datetime.fromisoformat(records[s]["ended_at"]) for s in case.collected)
    assert last_collection <= first_containment
    case.check(cloud, admin_api)


def test_flow_logs_are_queried_with_the_alert_addresses_as_values_only(cloud, admin_api, evidence_root):
    """The query the playbook writes is sent as written; the addresses of the alert are escaped literals."""
    alert, incident_type, hint = routed(
        "eventbridge", prepare(cloud, (AWS_SAMPLES / "guardduty-ec2-ssh-brute-force.json").read_text()))
    alert = alert.model_copy(update={"labels": {**alert.labels, "src_ip": '1.2.3.4" or srcAddr like "'}})
    state = INCIDENT_FLOWS[incident_type](alert=alert, severity_hint=hint, return_state=True)
    records = {r["id"]: r for r in step_records(evidence_root, state.result().incident_id)}
    [item] = records["flow_logs"]["evidence"]
    sent = json.loads((evidence_root / state.result().incident_id / "objects" / item).read_text())
    assert sent["log_groups"] == ["vpc-flow-logs"]
    assert sent["query_sent"].endswith('filter srcAddr = "1.2.3.4\\" or srcAddr like \\"" or dstAddr = '
                                       '"1.2.3.4\\" or srcAddr like \\"" | sort @timestamp asc')
