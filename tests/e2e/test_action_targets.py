"""Targets an alert may aim at, end to end: an alert chooses a platform user, an access key, an address;
the engine holds the step for a person or refuses a protected target, unless IRP_ACTION_TARGETS allows it.

What changed is counted at the edge: the admin API's writes (served on loopback) and moto's state."""

# ruff: noqa: F811  (pytest fixtures imported from service_fixtures are parameters here)
from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lifecycle_fixtures import EVERYONE_AGREES
from playbook_copies import edit_playbook
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterStartTime,
    FlowRunFilterState,
    FlowRunFilterStateName,
)
from prefect.flow_runs import resume_flow_run
from service_fixtures import ADMIN_TOKEN, AdminApi, AsgiServer, aws, boto, moto_server, save_secret  # noqa: F401

from flows.incidents import INCIDENT_FLOWS
from irp.alerts import read_alert
from irp.evidence import open_store
from irp.models import Alert, Incident, IncidentType
from irp.settings import get_settings

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "playbooks" / "samples" / "data_leak.json"

pytestmark = pytest.mark.usefixtures("prefect_server")

RESET = {"id": "reset_password", "action": "platform.reset_password", "on_failure": "escalate",
         "args": {"user_id": "{{ alert.labels.user_id }}", "notify_user": False}}
CUT_KEY = {"id": "cut_key", "action": "aws.deactivate_access_key", "on_failure": "escalate",
           "args": {"access_key_id": "{{ alert.labels.access_key }}"}}
BLOCK = {"id": "block_source", "action": "aws.block_ip", "on_failure": "escalate",
         "args": {"cidr": "{{ alert.labels.src_ip }}", "method": "waf"}}


def contain_with(playbooks: Path, *steps: dict) -> None:
    """data_leak.yaml whose contain stage is these steps (and no AWS or platform step elsewhere)."""
    def edit(document) -> None:
        stages = document["stages"]
        stages["contain"], stages["restore"] = [dict(step) for step in steps], []
        stages["analyse"] = [s for s in stages["analyse"] if not s["action"].startswith(("aws.", "platform."))]

    edit_playbook(playbooks, "data_leak", edit)


def targets(monkeypatch: pytest.MonkeyPatch, rules: dict) -> None:
    monkeypatch.setenv("IRP_ACTION_TARGETS", json.dumps(rules))
    get_settings.cache_clear()


def alert(**labels: str) -> Alert:
    sample = read_alert(SAMPLE)
    return sample.model_copy(update={"labels": {**sample.labels, **labels}})


class Run:
    """A flow run in a thread, for runs that pause for a person."""

    def __init__(self, alert: Alert) -> None:
        self.result: dict = {}
        self.started = datetime.now(UTC)
        self.thread = threading.Thread(target=lambda: self.result.setdefault(
            "state", INCIDENT_FLOWS[IncidentType.data_leak](alert=alert, decisions=EVERYONE_AGREES, return_state=True)))
        self.thread.start()

    def paused(self, timeout: float = 120) -> str:
        """The id of the paused run (fails when the run ends without pausing)."""
        paused = FlowRunFilter(state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Paused"])),
                               start_time=FlowRunFilterStartTime(after_=self.started))  # this run, not another test's
        deadline = time.monotonic() + timeout
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline:
                runs = client.read_flow_runs(flow_run_filter=paused, limit=1)
                if runs:
                    return str(runs[0].id)
                if not self.thread.is_alive():
                    raise AssertionError(f"the run ended without asking anyone: {self.result['state'].message}")
                time.sleep(0.3)
        raise AssertionError("the flow run never paused")

    def decide(self, decision: str) -> None:
        resume_flow_run(self.paused(), run_input={"decision": decision, "approver": "Alice", "reason": "checked"})
        time.sleep(0.5)  # the run leaves its pause before the next one is looked for

    def incident(self, timeout: float = 120) -> Incident:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the run is still waiting"
        state = self.result["state"]
        assert state.is_completed(), state.message
        return open_store(get_settings().evidence_url).load_incident(state.result().incident_id)


def step_record(incident: Incident, step: str) -> dict:
    with open_store(get_settings().evidence_url).open(incident.id, f"steps/contain/{step}.json") as handle:
        return json.load(handle)


def messages(incident: Incident, step: str, kind: str) -> list[str]:
    return [e.message for e in incident.timeline if e.step == step and e.kind == kind]


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch):
    """The admin API on loopback, configured as production configures it; `writes` counts what changed."""
    admin = AdminApi()
    save_secret("irp-test-admin-token", ADMIN_TOKEN)
    with AsgiServer(admin.app) as server:
        monkeypatch.setenv("IRP_PLATFORM_API_URL", f"{server.url}/admin/v1")
        monkeypatch.setenv("IRP_PLATFORM_TOKEN_BLOCK", "irp-test-admin-token")
        get_settings.cache_clear()
        yield admin


class TestPlatformUser:
    def test_an_alert_chosen_user_is_held_and_a_rejection_changes_nothing(self, api, playbooks) -> None:
        contain_with(playbooks, RESET)
        run = Run(alert(user_id="u-42"))
        run.paused()
        assert api.writes == []  # nothing changed while a person decides
        run.decide("reject")
        incident = run.incident()
        assert api.writes == [] and not api.users["u-42"]["password_reset_required"]
        [held] = messages(incident, "reset_password", "approval")[:1]
        assert held == ("step reset_password held for approval: user_id 'u-42' (platform_user) comes from alert "
                        "data and no IRP_ACTION_TARGETS allow pattern covers it")
        record = step_record(incident, "reset_password")
        assert record["status"] == "skipped" and record["held"].startswith("held for approval: user_id 'u-42'")
        assert "rejected by Alice" in record["reason"]

    def test_an_approved_hold_runs_the_step(self, api, playbooks) -> None:
        contain_with(playbooks, RESET)
        run = Run(alert(user_id="u-42"))
        run.decide("approve")
        incident = run.incident()
        assert api.writes == [("POST", "users/u-42/password-reset")]
        assert step_record(incident, "reset_password")["status"] == "completed"
        names = {i.name for i in open_store(get_settings().evidence_url).manifest(incident.id)}
        assert "approvals/contain/reset_password.json" in names

    def test_a_protected_user_is_refused_whatever_the_approval(self, api, playbooks, monkeypatch) -> None:
        targets(monkeypatch, {"platform_user": {"allow": ["*"], "deny": ["u-4?", "break-glass-admin"]}})
        contain_with(playbooks, {**RESET, "approval": {"approvers": 1, "timeout_minutes": 30}})
        run = Run(alert(user_id="u-42"))  # would wait 30 minutes if it asked
        incident = run.incident(timeout=90)
        assert api.writes == [] and incident.escalated
        assert not messages(incident, "reset_password", "approval")
        refusal = ("refused: user_id 'u-42' (platform_user) is protected (IRP_ACTION_TARGETS[\"platform_user\"] "
                   "denies 'u-4?'): never changed automatically, approval or not")
        assert step_record(incident, "reset_password")["error"] == refusal
        assert any(e.kind == "escalation" and refusal in e.message for e in incident.timeline)

    def test_a_user_the_configuration_allows_is_changed_without_approval(self, api, playbooks, monkeypatch) -> None:
        targets(monkeypatch, {"platform_user": {"allow": ["u-*"], "deny": ["break-glass-admin"]}})
        contain_with(playbooks, RESET)
        incident = Run(alert(user_id="u-42")).incident(timeout=90)
        assert api.writes == [("POST", "users/u-42/password-reset")]
        assert not [e for e in incident.timeline if e.kind == "approval"]
        assert step_record(incident, "reset_password")["held"] == ""


@pytest.fixture
def cloud(aws: str, monkeypatch: pytest.MonkeyPatch) -> dict:
    """In moto: the exporting user and its key, the WAF IP set (configured)."""
    iam = boto("iam", aws)
    iam.create_user(UserName="svc-export")
    key = iam.create_access_key(UserName="svc-export")["AccessKey"]["AccessKeyId"]
    arn = boto("wafv2", aws).create_ip_set(Name="edge-blocklist", Scope="REGIONAL", IPAddressVersion="IPV4",
                                           Addresses=[])["Summary"]["ARN"]
    monkeypatch.setenv("IRP_AWS_WAF_IP_SET_ARN", arn)
    get_settings.cache_clear()

    def state() -> tuple[str, list[str]]:
        status = iam.list_access_keys(UserName="svc-export")["AccessKeyMetadata"][0]["Status"]
        parts = arn.split("/")
        blocked = boto("wafv2", aws).get_ip_set(Name=parts[-2], Scope="REGIONAL", Id=parts[-1])["IPSet"]["Addresses"]
        return status, blocked

    return {"key": key, "state": state}


class TestAwsTargets:
    def test_an_alert_chosen_key_and_address_are_held_for_a_person(self, cloud, playbooks) -> None:
        contain_with(playbooks, CUT_KEY, BLOCK)
        run = Run(alert(access_key=cloud["key"], src_ip="198.51.100.7"))
        run.paused()
        assert cloud["state"]() == ("Active", [])
        run.decide("reject")  # the key
        run.decide("reject")  # the address
        incident = run.incident()
        assert cloud["state"]() == ("Active", [])
        assert step_record(incident, "cut_key")["held"].startswith(f"held for approval: access_key_id '{cloud['key']}'")
        assert step_record(incident, "block_source")["held"] == (
            "held for approval: cidr '198.51.100.7/32' (cidr) comes from alert data and no IRP_ACTION_TARGETS allow "
            "pattern covers it")

    def test_protected_address_and_key_owner_are_refused(self, cloud, playbooks, monkeypatch) -> None:
        targets(monkeypatch, {"cidr": {"allow": ["0.0.0.0/0"], "deny": ["198.51.100.0/24"]},
                              "access_key": {"allow": ["AKIA*"]}, "iam_user": {"deny": ["svc-*"]}})
        contain_with(playbooks, CUT_KEY, BLOCK)
        incident = Run(alert(access_key=cloud["key"], src_ip="198.51.100.7")).incident(timeout=90)
        assert cloud["state"]() == ("Active", [])
        assert incident.escalated and not [e for e in incident.timeline if e.kind == "approval"]
        assert "cidr '198.51.100.7/32' (cidr) is protected (IRP_ACTION_TARGETS[\"cidr\"] denies '198.51.100.0/24')" \
            in step_record(incident, "block_source")["error"]
        # the key's owner was looked up by the action: it refuses a protected owner itself
        assert "iam_user 'svc-export' is protected (IRP_ACTION_TARGETS[\"iam_user\"] denies 'svc-*')" \
            in step_record(incident, "cut_key")["error"]

    def test_targets_the_configuration_allows_are_changed_without_approval(self, cloud, playbooks, monkeypatch) -> None:
        targets(monkeypatch, {"cidr": {"allow": ["198.51.100.0/24"]}, "aws.deactivate_access_key": {"allow": ["AKIA*"]}})
        contain_with(playbooks, CUT_KEY, BLOCK)
        incident = Run(alert(access_key=cloud["key"], src_ip="198.51.100.7")).incident(timeout=90)
        assert cloud["state"]() == ("Inactive", ["198.51.100.7/32"])
        assert not [e for e in incident.timeline if e.kind == "approval"] and not incident.escalated
