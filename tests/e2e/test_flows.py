"""The ten incident flows end to end on a real Prefect server, with real files as evidence."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from lifecycle_fixtures import EVERYONE_AGREES
from playbook_copies import edit_playbook
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterTaskRunId,
)
from prefect.flow_runs import resume_flow_run

from flows.incidents import INCIDENT_FLOWS
from irp.alerts import read_alert
from irp.evidence import open_store
from irp.models import Alert, IncidentStatus, IncidentType, StepStatus
from irp.settings import get_settings

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "playbooks" / "samples"

pytestmark = pytest.mark.usefixtures("prefect_server")


def run(incident_type: IncidentType, alert: Alert, **params):
    """A whole response: people end each stage (lifecycle_fixtures), unless the test scripts its own or dry-runs."""
    if not params.get("dry_run"):
        params.setdefault("decisions", EVERYONE_AGREES)
    return INCIDENT_FLOWS[incident_type](alert=alert, return_state=True, **params)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def failing_step(step_id: str, **extra) -> dict:
    """A step that really fails: it archives a file that does not exist."""
    return {"id": step_id, "action": "evidence.collect", "args": {"name": "x.log", "path": "/nonexistent/x.log"}, **extra}


@pytest.fixture(autouse=True)
def collect_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """failing_step's file is below a collection root (that does not exist either), so reading it is what fails."""
    monkeypatch.setenv("IRP_EVIDENCE_COLLECT_ROOTS", "/nonexistent")
    get_settings.cache_clear()


class TestEveryIncidentType:
    @pytest.mark.parametrize("incident_type", list(IncidentType), ids=str)
    def test_runs_end_to_end_and_archives_evidence(self, incident_type: IncidentType, evidence_root: Path) -> None:
        alert = read_alert(SAMPLES / f"{incident_type.value}.json")
        state = run(incident_type, alert)
        assert state.is_completed(), state.message
        summary = state.result()
        assert summary.status == IncidentStatus.closed
        stages = [(s.stage.value, s.phase) for s in summary.stages]
        assert stages == [("detect", None), ("analyse", None), ("contain", None), ("notify", "initial"),
                          ("restore", None), ("review", None), ("notify", "final")]
        assert all(s.status == StepStatus.completed for s in summary.stages)

        folder = evidence_root / summary.incident_id
        manifest = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
        names = {item["name"] for item in manifest}
        assert f"alerts/{alert.fingerprint}.json" in names
        assert f"playbook/{incident_type.value}.yaml" in names
        assert {"incident.json", "review/report.md"} <= names
        assert any(n.startswith("notifications/initial/internal_alert") for n in names)
        assert any(n.startswith("steps/review/") for n in names)
        for item in manifest:
            assert sha256(folder / "objects" / item["name"]) == item["sha256"], item["name"]
        archived_playbook = folder / "objects" / "playbook" / f"{incident_type.value}.yaml"
        assert archived_playbook.read_bytes() == (REPO / "playbooks" / f"{incident_type.value}.yaml").read_bytes()

        incident = open_store(f"file://{evidence_root}").load_incident(summary.incident_id)
        assert incident.playbook.sha256 == sha256(REPO / "playbooks" / f"{incident_type.value}.yaml")
        assert incident.flow_run_ids == [summary.flow_run_id]


class TestRunRecords:
    def test_flow_run_is_named_and_tagged_after_the_incident(self) -> None:
        state = run(IncidentType.data_leak, read_alert(SAMPLES / "data_leak.json"))
        summary = state.result()
        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(summary.flow_run_id)
        assert flow_run.name.startswith(summary.incident_id)
        assert {f"incident:{summary.incident_id}", "type:data_leak", f"severity:{summary.severity.value}"} <= set(flow_run.tags)

    def test_review_report_is_a_prefect_artifact_keyed_per_incident(self) -> None:
        summary = run(IncidentType.data_leak, read_alert(SAMPLES / "data_leak.json")).result()
        with get_client(sync_client=True) as client:
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"review-{summary.incident_id.lower()}"])))
        # the review stage writes the draft; the outcome people record rewrites it (a new version, same key)
        assert len(artifacts) == 2 and {a.type for a in artifacts} == {"markdown"}
        draft, final = sorted(artifacts, key=lambda a: a.created)
        assert f"# Post-incident review — {summary.incident_id} (draft" in draft.data
        assert f"# Post-incident review — {summary.incident_id}\n" in final.data
        assert "established by the test" in final.data  # the causes the review recorded

    def test_an_edited_playbook_applies_to_the_next_run(self, playbooks: Path, evidence_root: Path) -> None:
        alert = read_alert(SAMPLES / "data_leak.json")
        first = run(IncidentType.data_leak, alert).result()
        edit_playbook(playbooks, "data_leak", lambda d: d.__setitem__("version", "1.1.0"))
        second = run(IncidentType.data_leak, alert).result()
        store = open_store(f"file://{evidence_root}")
        one, two = store.load_incident(first.incident_id), store.load_incident(second.incident_id)
        assert (one.playbook.version, two.playbook.version) == ("1.0.0", "1.1.0")
        assert two.playbook.sha256 == sha256(playbooks / "data_leak.yaml") != one.playbook.sha256

    def test_initial_notification_does_not_wait_for_containment(self, playbooks: Path) -> None:
        slow = failing_step("slow", on_failure="continue", retries=1, retry_delay_seconds=3)
        edit_playbook(playbooks, "data_leak", lambda d: d["stages"]["contain"].insert(0, slow))
        summary = run(IncidentType.data_leak, read_alert(SAMPLES / "data_leak.json")).result()
        outcome = {(s.stage.value, s.phase): s for s in summary.stages}
        assert outcome[("notify", "initial")].started_at < outcome[("contain", None)].ended_at
        assert outcome[("notify", "final")].started_at >= outcome[("review", None)].ended_at


class TestDryRun:
    def test_dry_run_writes_no_evidence_and_no_artifact(self, evidence_root: Path) -> None:
        state = run(IncidentType.data_leak, read_alert(SAMPLES / "data_leak.json"), dry_run=True)
        summary = state.result()
        assert summary.dry_run and summary.status == IncidentStatus.closed
        assert "review/report.md" in summary.evidence  # what would have been archived
        assert not evidence_root.exists() or not any(evidence_root.iterdir())
        with get_client(sync_client=True) as client:
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"review-{summary.incident_id.lower()}"])))
        assert artifacts == []

    def test_cli_dry_run_prints_what_would_be_archived(self, evidence_root: Path, prefect_server: str) -> None:
        env = {**os.environ, "PREFECT_API_URL": prefect_server}
        result = subprocess.run([sys.executable, "-m", "irp.cli", "run", "data_leak", "--alert",
                                 str(SAMPLES / "data_leak.json"), "--dry-run"],
                                capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr
        assert "(dry run)" in result.stdout and "nothing written" in result.stdout
        assert "  review/report.md" in result.stdout
        assert not evidence_root.exists() or not any(evidence_root.iterdir())


class TestFailureSemantics:
    def test_stop_ends_the_run_but_keeps_what_ran(self, playbooks: Path, evidence_root: Path) -> None:
        edit_playbook(playbooks, "data_leak", lambda d: d["stages"]["contain"].insert(0, failing_step("broken")))
        state = run(IncidentType.data_leak, read_alert(SAMPLES / "data_leak.json"))
        assert state.is_failed()
        assert "step broken failed and stopped the run" in str(state.result(raise_on_failure=False))
        incident_id = next(p.name for p in evidence_root.iterdir())
        incident = open_store(f"file://{evidence_root}").load_incident(incident_id)
        assert incident.status == IncidentStatus.stopped
        ran = [(s.stage.value, s.status.value) for s in incident.stages]
        assert ("contain", "failed") in ran and not any(stage == "restore" for stage, _ in ran)
        assert any("cannot read /nonexistent/x.log" in e.message for e in incident.timeline)

    def test_cli_reports_a_stopped_run_in_one_line_without_traceback(self, playbooks: Path, prefect_server: str) -> None:
        edit_playbook(playbooks, "data_leak", lambda d: d["stages"]["contain"].insert(0, failing_step("broken")))
        env = {**os.environ, "PREFECT_API_URL": prefect_server, "IRP_PLAYBOOKS_DIR": str(playbooks)}
        env.pop("IRP_DEBUG", None)
        result = subprocess.run([sys.executable, "-m", "irp.cli", "run", "data_leak", "--alert",
                                 str(SAMPLES / "data_leak.json")], capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr + result.stdout
        assert result.stderr.strip().splitlines()[-1].startswith("irp: error: run failed: incident INC-")
        assert "step broken failed and stopped the run" in result.stderr

    def test_continue_records_the_failure_and_goes_on(self, playbooks: Path) -> None:
        edit_playbook(playbooks, "data_leak",
                      lambda d: d["stages"]["contain"].insert(0, failing_step("broken", on_failure="continue")))
        summary = run(IncidentType.data_leak, read_alert(SAMPLES / "data_leak.json")).result()
        assert summary.status == IncidentStatus.closed and not summary.escalated
        incident = open_store(get_settings().evidence_url).load_incident(summary.incident_id)
        assert any(e.kind == "step" and e.step == "broken" and "failed (continue)" in e.message for e in incident.timeline)

    def test_escalate_flags_the_incident_and_goes_on(self, playbooks: Path) -> None:
        edit_playbook(playbooks, "data_leak",
                      lambda d: d["stages"]["restore"].insert(0, failing_step("broken", on_failure="escalate")))
        summary = run(IncidentType.data_leak, read_alert(SAMPLES / "data_leak.json")).result()
        assert summary.status == IncidentStatus.closed and summary.escalated
        incident = open_store(get_settings().evidence_url).load_incident(summary.incident_id)
        assert [e.step for e in incident.timeline if e.kind == "escalation"] == ["broken"]

    def test_retries_are_attempts_of_the_step(self, playbooks: Path) -> None:
        edit_playbook(playbooks, "data_leak", lambda d: d["stages"]["contain"].insert(
            0, failing_step("flaky", on_failure="continue", retries=2, retry_delay_seconds=0)))
        summary = run(IncidentType.data_leak, read_alert(SAMPLES / "data_leak.json")).result()
        flaky = step_record(summary.incident_id, "contain", "flaky")
        assert flaky["status"] == "failed" and flaky["attempts"] == 3
        assert "attempt 2 of 3 failed" in stage_logs(summary.flow_run_id, "contain")

    def test_bad_arguments_are_not_retried(self, playbooks: Path) -> None:
        edit_playbook(playbooks, "data_leak", lambda d: d["stages"]["contain"].insert(0, {
            "id": "typed", "action": "response.assign_action", "retries": 3, "retry_delay_seconds": 0,
            "on_failure": "continue", "args": {"title": "x", "owner": "y", "due_in_hours": "{{ 'soon' }}"}}))
        summary = run(IncidentType.data_leak, read_alert(SAMPLES / "data_leak.json")).result()
        typed = step_record(summary.incident_id, "contain", "typed")
        assert typed["status"] == "failed" and typed["attempts"] == 1
        incident = open_store(get_settings().evidence_url).load_incident(summary.incident_id)
        assert any("invalid args for response.assign_action: due_in_hours" in e.message for e in incident.timeline)


def step_record(incident_id: str, stage: str, step: str) -> dict:
    """The step's record as archived in the incident's evidence."""
    with open_store(get_settings().evidence_url).open(incident_id, f"steps/{stage}/{step}.json") as handle:
        return json.loads(handle.read())


def stage_logs(flow_run_id: str, stage: str) -> str:
    """The log lines of the run's `stage` task run, as the Prefect UI shows them."""
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        ids = [t.id for t in task_runs if t.name.startswith(f"{stage}-")]
        deadline = time.monotonic() + 30
        while True:  # logs reach the server in batches
            logs = client.read_logs(LogFilter(task_run_id=LogFilterTaskRunId(any_=ids)))
            text = "\n".join(entry.message for entry in logs)
            if "attempt" in text or time.monotonic() > deadline:
                return text
            time.sleep(0.5)


class TestUnknownValuesNeverStopAResponse:
    def test_a_data_leak_with_an_unknown_category_reaches_contain_and_notify(self, evidence_root: Path) -> None:
        """Before issue 17 one category outside the vocabulary failed assess_personal_data (on_failure: stop)."""
        alert = read_alert(SAMPLES / "data_leak.json")
        alert = alert.model_copy(update={"labels": {**alert.labels, "data_categories": "contact,shoe_sizes,pii"}})
        state = run(IncidentType.data_leak, alert)
        assert state.is_completed(), state.message
        summary = state.result()
        ran = [(s.stage.value, s.phase, s.status) for s in summary.stages]
        assert ("contain", None, StepStatus.completed) in ran
        assert ("notify", "initial", StepStatus.completed) in ran and ("notify", "final", StepStatus.completed) in ran
        incident = open_store(f"file://{evidence_root}").load_incident(summary.incident_id)
        assert [c.value for c in incident.personal_data.categories] == ["contact", "identification"]
        assert incident.personal_data.unclassified == ["shoe_sizes"]
        assert any(e.kind == "finding" and e.message.startswith("unclassified data categories 'shoe_sizes'")
                   for e in incident.timeline)
        assert (evidence_root / summary.incident_id / "objects" / "obligations" / "assessment.json").exists()  # §7


class TestAlertDataIsNotTemplate:
    def test_template_syntax_in_an_alert_is_rendered_as_text(self, evidence_root: Path) -> None:
        hostile = "{{ 'zz' ~ 'qq' }} {% for i in range(3) %}x{% endfor %} {{ ''.__class__ }}"
        alert = Alert(title=f"Leak {hostile}", description=hostile,
                      labels={"tenant": "{{ incident.id }}", "data_categories": "contact"})
        summary = run(IncidentType.data_leak, alert).result()
        objects = evidence_root / summary.incident_id / "objects"
        report = (objects / "review" / "report.md").read_text()
        internal = (objects / "notifications" / "initial" / "internal_alert.fr.md").read_text()
        client = (objects / "notifications" / "initial" / "client_notification.fr.md").read_text()
        for text in (report, internal):  # shown as text where the alert's words are shown at all
            assert "{{ 'zz' ~ 'qq' }}" in text and "zzqq" not in text
            assert "{% for i in range(3) %}x{% endfor %}" in text and "xxx" not in text
        assert "zz" not in client and "xxx" not in client  # an external letter never prints the alert's text
        assert "{{ incident.id }}" in json.dumps(
            open_store(f"file://{evidence_root}").load_incident(summary.incident_id).affected_clients)


class TestAlertDataIsNeverATarget:
    TOKEN = "sp-e2e-token-4d1f9a0c7b2e"

    @pytest.mark.parametrize(("incident_type", "label", "endpoint"), [
        ("service_unavailability", "status_page_url", "status_page"),
        ("technical_failure", "provider_status_url", "provider_status.VoxScribe speech-to-text API"),
    ])
    def test_configured_endpoints_are_called_and_urls_in_labels_are_not(
            self, incident_type: str, label: str, endpoint: str, evidence_root: Path,
            monkeypatch: pytest.MonkeyPatch) -> None:
        from listener_fixtures import Listener
        from service_fixtures import save_secret

        save_secret("irp-status-page-token", self.TOKEN)
        with Listener() as configured, Listener() as attacker:
            monkeypatch.setenv("IRP_HTTP_ENDPOINTS", json.dumps({endpoint: f"{configured.url}/api"}))
            monkeypatch.setenv("IRP_HTTP_SECRET_HOSTS", json.dumps({"irp-status-page-token": ["127.0.0.1"]}))
            get_settings.cache_clear()
            alert = read_alert(SAMPLES / f"{incident_type}.json")
            alert = alert.model_copy(update={"labels": {**alert.labels, label: f"{attacker.url}/steal"}})
            summary = run(IncidentType(incident_type), alert).result()
        assert attacker.requests == []
        assert [r["path"] for r in configured.requests] == ["/api"]
        if incident_type == "service_unavailability":
            assert configured.requests[0]["headers"]["authorization"] == f"OAuth {self.TOKEN}"
        folder = evidence_root / summary.incident_id
        assert not [p for p in folder.rglob("*") if p.is_file() and self.TOKEN.encode() in p.read_bytes()]


class TestApprovalGates:
    def _gate(self, playbooks: Path, **approval) -> None:
        edit_playbook(playbooks, "data_leak", lambda d: d["stages"]["contain"].insert(0, {
            "id": "suspend_tenant", "action": "timeline.record", "description": "Suspend the tenant (§6)",
            "approval": approval, "args": {"message": "tenant {{ incident.affected_clients | join(',') }} suspended"}}))

    def _run_in_thread(self, alert: Alert) -> tuple[threading.Thread, dict]:
        result: dict = {}
        thread = threading.Thread(target=lambda: result.setdefault("state", run(IncidentType.data_leak, alert)))
        thread.start()
        return thread, result

    def _flow_run_id(self) -> str:
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                runs = client.read_flow_runs(limit=5, sort="START_TIME_DESC")
                paused = [r for r in runs if r.state and r.state.is_paused()]
                if paused:
                    return str(paused[0].id)
                time.sleep(0.3)
        raise AssertionError("the flow run never paused")

    def test_two_distinct_approvers_are_required(self, playbooks: Path) -> None:
        self._gate(playbooks, approvers=2, timeout_minutes=2)
        thread, result = self._run_in_thread(read_alert(SAMPLES / "data_leak.json"))
        for approver in ("Alice", "alice", "Bob"):
            run_id = self._flow_run_id()
            resume_flow_run(run_id, run_input={"decision": "approve", "approver": approver, "reason": "confirmed"})
            time.sleep(0.5)
        thread.join(120)
        summary = result["state"].result()
        incident = open_store(get_settings().evidence_url).load_incident(summary.incident_id)
        approvals = [e.message for e in incident.timeline if e.kind == "approval"]
        assert approvals == [
            "step suspend_tenant approved by Alice (unverified) (1/2): confirmed",
            "alice already approved step suspend_tenant; another person must (one person counts once)",
            "step suspend_tenant approved by Bob (unverified) (2/2): confirmed",
        ]
        assert any("tenant acme-callcenter suspended" == e.message for e in incident.timeline)
        names = {i.name for i in open_store(get_settings().evidence_url).manifest(summary.incident_id)}
        assert "approvals/contain/suspend_tenant.json" in names

    def test_a_rejection_skips_the_step_with_the_reason(self, playbooks: Path) -> None:
        self._gate(playbooks, approvers=1, timeout_minutes=2)
        thread, result = self._run_in_thread(read_alert(SAMPLES / "data_leak.json"))
        resume_flow_run(self._flow_run_id(), run_input={"decision": "reject", "approver": "Carol", "reason": "false positive"})
        thread.join(120)
        summary = result["state"].result()
        incident = open_store(get_settings().evidence_url).load_incident(summary.incident_id)
        assert "step suspend_tenant (timeline.record) skipped: step suspend_tenant rejected by Carol (unverified): " \
            "false positive" in [
            e.message for e in incident.timeline]
        assert not any("suspended" == e.message[-9:] for e in incident.timeline if e.kind == "note")

    def test_a_timeout_escalates_and_applies_the_default(self, playbooks: Path) -> None:
        self._gate(playbooks, approvers=1, timeout_minutes=0.05, on_timeout="approve")
        state = run(IncidentType.data_leak, read_alert(SAMPLES / "data_leak.json"))
        summary = state.result()
        assert summary.escalated and summary.status == IncidentStatus.closed
        incident = open_store(get_settings().evidence_url).load_incident(summary.incident_id)
        assert any(e.kind == "escalation" and "default applied: approve" in e.message for e in incident.timeline)
        assert any(e.message == "tenant acme-callcenter suspended" for e in incident.timeline)


class TestIntegrationsNotConfigured:
    def test_an_optional_unconfigured_step_is_skipped_before_any_approval(self, playbooks: Path) -> None:
        edit_playbook(playbooks, "data_leak", lambda d: d["stages"]["contain"].insert(0, {
            "id": "suspend", "action": "platform.suspend_account", "optional": True,
            "approval": {"approvers": 1, "timeout_minutes": 30},
            "args": {"client_id": "{{ incident.affected_clients[0] }}", "reason": "data leak"}}))
        state = run(IncidentType.data_leak, read_alert(SAMPLES / "data_leak.json"))  # would hang if it paused
        summary = state.result()
        assert summary.status == IncidentStatus.closed and not summary.escalated
        incident = open_store(get_settings().evidence_url).load_incident(summary.incident_id)
        skipped = [e.message for e in incident.timeline if e.step == "suspend" and e.kind == "step"]
        assert skipped == ["step suspend (platform.suspend_account) skipped: not configured: "
                           "CallCenterRate admin API: IRP_PLATFORM_API_URL is unset"]
        assert not any(e.kind == "approval" for e in incident.timeline)

    def test_an_unconfigured_optional_step_is_skipped_without_retries(self, playbooks: Path) -> None:
        edit_playbook(playbooks, "data_leak", lambda d: d["stages"]["contain"].insert(0, {
            "id": "block", "action": "aws.block_public_access", "optional": True, "retries": 2,
            "args": {"bucket": "evidence-bucket"}}))
        summary = run(IncidentType.data_leak, read_alert(SAMPLES / "data_leak.json")).result()
        block = step_record(summary.incident_id, "contain", "block")
        assert block["status"] == "skipped" and block["attempts"] == 1
        incident = open_store(get_settings().evidence_url).load_incident(summary.incident_id)
        assert any(e.step == "block" and "skipped: not configured: AWS" in e.message for e in incident.timeline)


# Expressions that would exhaust the worker (memory, CPU) if computed: each must fail its own step at once.
BOMBS = {
    "long_string": "'a' * 10**10",
    "huge_power": "10 ** (10 ** 9) > 1",
    "huge_range": "range(10**9) | list",
    "repeated_twice": "'x' * 10**6 * 10**3",
    "huge_width": "'%*d' % (10**9, 1)",
}
DOUBLING = "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}"
SLOW = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


class TestExpressionBombs:
    def _step(self, step_id: str, message: str, **extra) -> dict:
        return {"id": step_id, "action": "timeline.record", "on_failure": "continue", "args": {"message": message}, **extra}

    def test_bombs_in_when_and_args_fail_their_step_and_the_run_goes_on(self, playbooks: Path, evidence_root: Path) -> None:
        def add(document) -> None:
            bombs = [self._step(f"when_{name}", "ran", when=expression) for name, expression in BOMBS.items()]
            bombs += [self._step(f"args_{name}", "{{ " + expression + " }}") for name, expression in BOMBS.items()]
            bombs += [self._step("args_doubling", DOUBLING),
                      self._step("args_gated", "{{ 'a' * 10**10 }}", approval={"timeout_minutes": 1}),
                      self._step("args_slow", SLOW, timeout_seconds=1),
                      self._step("after_bombs", "contain goes on")]
            document["stages"]["contain"][0:0] = bombs

        edit_playbook(playbooks, "data_leak", add)
        summary = run(IncidentType.data_leak, read_alert(SAMPLES / "data_leak.json")).result()
        assert summary.status == IncidentStatus.closed
        assert [(s.stage.value, s.phase, s.status) for s in summary.stages][-4:] == [
            ("notify", "initial", StepStatus.completed), ("restore", None, StepStatus.completed),
            ("review", None, StepStatus.completed), ("notify", "final", StepStatus.completed)]
        incident = open_store(get_settings().evidence_url).load_incident(summary.incident_id)
        failed = {e.step: e.message for e in incident.timeline if e.kind == "step" and "failed (continue)" in e.message}
        for name in BOMBS:
            assert "cannot evaluate when: expression too large: " in failed.pop(f"when_{name}")
            assert "cannot render args: expression too large: " in failed.pop(f"args_{name}")
        assert "cannot render args: expression too large: ~ would make 2097152 characters" in failed.pop("args_doubling")
        assert "cannot render args: expression too large: " in failed.pop("args_gated")
        slow = failed.pop("args_slow")  # the template's own deadline, or the task's timeout under load: both stop it
        assert "cannot render args: still running after 1 s" in slow or "timed out (Scope timed out after 1.0" in slow
        assert not failed
        assert any(e.step == "after_bombs" and "completed" in e.message for e in incident.timeline)
        folder = evidence_root / summary.incident_id / "objects" / "steps" / "contain"
        for record in (json.loads(p.read_text()) for p in folder.glob("*.json") if p.stem.startswith(("when_", "args_"))):
            seconds = (datetime.fromisoformat(record["ended_at"]) - datetime.fromisoformat(record["started_at"]))
            assert seconds.total_seconds() < (3 if record["id"] == "args_slow" else 1), record

    def test_a_broken_classification_rule_is_reported_and_skipped(self, playbooks: Path) -> None:
        def add(document) -> None:
            document["classification"]["rules"][0:0] = [
                {"when": "'a' * 10**10", "severity": "critical", "reason": "broken"},
                {"when": "1 / 0", "severity": "critical", "reason": "broken too"},
                {"when": "true", "severity": "minor", "reason": "the next rule still applies"}]

        edit_playbook(playbooks, "data_leak", add)
        summary = run(IncidentType.data_leak, read_alert(SAMPLES / "data_leak.json")).result()
        assert summary.status == IncidentStatus.closed and summary.severity.value == "minor"
        incident = open_store(get_settings().evidence_url).load_incident(summary.incident_id)
        skipped = [e.message for e in incident.timeline if e.kind == "classification" and "rule skipped" in e.message]
        assert skipped == [
            "classification.rules.0.when ('a' * 10**10) cannot be evaluated, rule skipped: expression too large: "
            "'a' * 10000000000 would make 10000000000 characters; at most 1048576 are allowed",
            "classification.rules.1.when (1 / 0) cannot be evaluated, rule skipped: ZeroDivisionError: division by zero"]
