"""AWS actions through the engine: a data-leak playbook with AWS contain steps, run by Prefect against
moto's server over HTTP; then `irp actions undo`; a failing provider escalated; the credentials block."""

from __future__ import annotations

# ruff: noqa: F811  (pytest fixtures imported from service_fixtures are parameters here)
import json
import shutil
from pathlib import Path

import pytest
from lifecycle_fixtures import EVERYONE_AGREES
from pydantic import SecretStr
from ruamel.yaml import YAML
from service_fixtures import Fault, aws, boto, fault_proxy, iam_error, make_ctx, moto_server, query_action  # noqa: F401  (fixtures)
from typer.testing import CliRunner

from flows.incidents import INCIDENT_FLOWS
from irp.actions.aws.iam import AccessKeyArgs, deactivate_access_key
from irp.aws import aws_session
from irp.cli.actions import actions_app
from irp.evidence import open_store
from irp.models import Alert, IncidentStatus, IncidentType, StepStatus
from irp.settings import get_settings

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("prefect_server")

CONTAIN_STEPS = [
    # §6 "limiter les accès": the key that moved the data stops working.
    {"id": "cut_key", "action": "aws.deactivate_access_key", "on_failure": "escalate",
     "args": {"access_key_id": "{{ alert.labels.access_key }}"}},
    # §6 "isoler": the bucket the data left from stops being public.
    {"id": "close_bucket", "action": "aws.block_public_access", "on_failure": "escalate",
     "args": {"bucket": "{{ alert.labels.bucket }}"}},
    # §6: the destination is blocked at the edge.
    {"id": "block_destination", "action": "aws.block_ip", "on_failure": "escalate",
     "args": {"cidr": "{{ alert.labels.destination }}"}},
]


@pytest.fixture
def cloud(aws: str, monkeypatch: pytest.MonkeyPatch) -> dict:
    """In moto: the exporting user and its key, the public bucket, the WAF IP set (configured)."""
    iam, s3 = boto("iam", aws), boto("s3", aws)
    iam.create_user(UserName="svc-export")
    key = iam.create_access_key(UserName="svc-export")["AccessKey"]["AccessKeyId"]
    s3.create_bucket(Bucket="acme-recordings", CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
    arn = boto("wafv2", aws).create_ip_set(Name="edge-blocklist", Scope="REGIONAL", IPAddressVersion="IPV4",
                                           Addresses=[])["Summary"]["ARN"]
    monkeypatch.setenv("IRP_AWS_WAF_IP_SET_ARN", arn)
    # The alert chooses these targets: the deployment allows them, or each step would wait for a person.
    monkeypatch.setenv("IRP_ACTION_TARGETS", json.dumps({
        "access_key": {"allow": ["AKIA*"]}, "bucket": {"allow": ["acme-*"]}, "cidr": {"allow": ["203.0.113.0/24"]}}))
    get_settings.cache_clear()
    return {"iam": iam, "s3": s3, "key": key, "ip_set": arn}


@pytest.fixture
def playbooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """data_leak.yaml (and its templates) with the AWS contain steps in place of the manual ones."""
    folder = tmp_path / "playbooks"
    folder.mkdir()
    shutil.copytree(REPO / "playbooks" / "templates", folder / "templates")
    yaml = YAML()
    document = yaml.load(REPO / "playbooks" / "data_leak.yaml")
    document["stages"]["contain"] = CONTAIN_STEPS
    # moto has no CloudTrail event lookup: the shipped analyse step that uses it is left out here
    document["stages"]["analyse"] = [s for s in document["stages"]["analyse"] if not s["action"].startswith("aws.")]
    # the shipped restore steps refer to the shipped contain steps: this playbook keeps only its own.
    # It declares the undo: after a false positive, the destination is unblocked again
    document["stages"]["restore"] = [{
        "id": "unblock_destination", "action": "actions.undo_step",
        "when": "alert.labels.get('false_positive') == 'true'",
        "args": {"step": "block_destination", "reason": "false positive"}}]
    yaml.dump(document, folder / "data_leak.yaml")
    monkeypatch.setenv("IRP_PLAYBOOKS_DIR", str(folder))
    get_settings.cache_clear()
    return folder


def alert(cloud: dict, **labels: str) -> Alert:
    return Alert(title="Export of call recordings to an unknown host",
                 description="DLP: recordings sent to 203.0.113.50 by svc-export",
                 labels={"tenant": "acme-callcenter", "service": "recordings-store", "bucket": "acme-recordings",
                         "access_key": cloud["key"], "destination": "203.0.113.50",
                         "data_categories": "identification", **labels})


def key_status(cloud: dict) -> str:
    return cloud["iam"].list_access_keys(UserName="svc-export")["AccessKeyMetadata"][0]["Status"]


def blocked(cloud: dict) -> list[str]:
    parts = cloud["ip_set"].split("/")
    waf = boto("wafv2", cloud["iam"].meta.endpoint_url)
    return waf.get_ip_set(Name=parts[-2], Scope="REGIONAL", Id=parts[-1])["IPSet"]["Addresses"]


def public_block(cloud: dict) -> dict | None:
    try:
        return cloud["s3"].get_public_access_block(Bucket="acme-recordings")["PublicAccessBlockConfiguration"]
    except cloud["s3"].exceptions.ClientError:
        return None


def test_playbook_contains_through_aws_and_undo_rolls_back(cloud, playbooks, evidence_root):
    state = INCIDENT_FLOWS[IncidentType.data_leak](alert=alert(cloud), decisions=EVERYONE_AGREES, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary.status == IncidentStatus.closed and not summary.escalated

    assert key_status(cloud) == "Inactive"
    assert public_block(cloud) == {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
                                   "RestrictPublicBuckets": True}
    assert blocked(cloud) == ["203.0.113.50/32"]

    store = open_store(get_settings().evidence_url)
    names = {item.name for item in store.manifest(summary.incident_id)}
    for step in ("cut_key", "close_bucket", "block_destination"):
        assert f"steps/contain/{step}.json" in names
    assert any(n.startswith("actions/contain/cut_key/") and n.endswith("/before.json") for n in names)
    assert any(n.startswith("actions/contain/close_bucket/") and n.endswith("/after.json") for n in names)
    incident = store.load_incident(summary.incident_id)
    assert any(e.kind == "change" and e.step == "cut_key" for e in incident.timeline)

    # a false positive: roll the containment back, step by step
    runner = CliRunner()
    for step in ("cut_key", "close_bucket", "block_destination"):
        result = runner.invoke(actions_app, ["undo", summary.incident_id, step, "--yes"])
        assert result.exit_code == 0, result.output
    assert key_status(cloud) == "Active" and public_block(cloud) is None and blocked(cloud) == []
    undone = [e.step for e in store.load_incident(summary.incident_id).timeline if e.kind == "undo"]
    assert undone == ["cut_key", "close_bucket", "block_destination"]


def test_an_undo_declared_by_the_playbook_runs_in_restore(cloud, playbooks, evidence_root):
    state = INCIDENT_FLOWS[IncidentType.data_leak](alert=alert(cloud, false_positive="true"), decisions=EVERYONE_AGREES,
                                                   return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert blocked(cloud) == [] and key_status(cloud) == "Inactive"  # only the declared undo ran
    incident = open_store(get_settings().evidence_url).load_incident(summary.incident_id)
    [undo] = [e for e in incident.timeline if e.kind == "undo"]
    assert undo.step == "unblock_destination" and "203.0.113.50/32 removed from WAF IP set" in undo.message


def test_dry_run_of_the_playbook_changes_nothing_in_aws(cloud, playbooks, evidence_root):
    state = INCIDENT_FLOWS[IncidentType.data_leak](alert=alert(cloud), dry_run=True, return_state=True)
    assert state.is_completed(), state.message
    assert key_status(cloud) == "Active" and public_block(cloud) is None and blocked(cloud) == []


def test_a_refusing_provider_is_escalated_and_on_the_incident(cloud, playbooks, fault_proxy, evidence_root):
    fault_proxy.faults = [Fault(query_action("UpdateAccessKey"), 403, iam_error("AccessDenied", "no iam:Update"),
                                times=10)]
    state = INCIDENT_FLOWS[IncidentType.data_leak](alert=alert(cloud), decisions=EVERYONE_AGREES, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary.escalated
    assert key_status(cloud) == "Active" and blocked(cloud) == ["203.0.113.50/32"]  # the other steps still ran
    incident = open_store(get_settings().evidence_url).load_incident(summary.incident_id)
    third = [e for e in incident.timeline if e.kind == "third_party"]
    assert third and third[0].step == "cut_key" and third[0].data["code"] == "AccessDenied"
    escalations = [e for e in incident.timeline if e.kind == "escalation"]
    assert "AccessDenied: no iam:Update" in escalations[0].message
    step = next(s for s in incident.timeline if s.kind == "step" and s.step == "cut_key")
    assert StepStatus.failed.value in step.message


class AwsCredentialsBlock:
    """Registers a block type with prefect-aws's slug and fields (prefect-aws itself is not installed)."""

    @staticmethod
    def save(name: str, **fields) -> None:
        from prefect.blocks.core import Block

        class AwsCredentials(Block):
            _block_type_slug = "aws-credentials"
            aws_access_key_id: str | None = None
            aws_secret_access_key: SecretStr | None = None
            region_name: str | None = None
            aws_client_parameters: dict = {}

        AwsCredentials(**fields).save(name, overwrite=True)


def test_credentials_from_a_prefect_aws_block(aws, evidence_root, monkeypatch):
    AwsCredentialsBlock.save("irp-aws", aws_access_key_id="AKIABLOCKBLOCKBLOCK1",
                             aws_secret_access_key="block-secret", region_name="eu-west-1",
                             aws_client_parameters={"endpoint_url": aws})
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("IRP_AWS_CREDENTIALS_BLOCK", "irp-aws")
    get_settings.cache_clear()
    session, endpoint = aws_session()
    credentials = session.get_credentials()
    assert (credentials.access_key, credentials.secret_key) == ("AKIABLOCKBLOCKBLOCK1", "block-secret")
    assert session.region_name == "eu-west-1" and endpoint == aws
    iam = boto("iam", aws)
    iam.create_user(UserName="carol")
    key = iam.create_access_key(UserName="carol")["AccessKey"]["AccessKeyId"]
    outcome = deactivate_access_key(AccessKeyArgs(access_key_id=key), make_ctx(evidence_root))
    assert outcome.changed  # reached moto through the block's endpoint

    monkeypatch.setenv("IRP_AWS_CREDENTIALS_BLOCK", "no-such-block")
    get_settings.cache_clear()
    from irp.errors import NotConfiguredError

    with pytest.raises(NotConfiguredError, match="no aws-credentials block of that name"):
        aws_session()
