"""Audit and history end to end: real runs of several playbooks on a real Prefect server feed the store;
`irp incidents`, `irp audit`, `irp actions`, `irp report` then read it, also with no Prefect server at all."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
from lifecycle_fixtures import EVERYONE_AGREES
from playbook_copies import edit_playbook
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.flow_runs import resume_flow_run

from flows.declare import IncidentReport, declare_incident
from flows.incidents import INCIDENT_FLOWS
from irp import audit
from irp.alerts import read_alert
from irp.evidence import open_store
from irp.models import IncidentStatus, IncidentType, utcnow
from irp.settings import get_settings

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "playbooks" / "samples"

pytestmark = pytest.mark.usefixtures("prefect_server")


def fresh_alert(incident_type: IncidentType):
    """The type's sample alert, observed now (so the response metrics are about this run)."""
    return read_alert(SAMPLES / f"{incident_type.value}.json").model_copy(update={"observed_at": utcnow()})


def irp(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "irp.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300, cwd=REPO)


def artifact(key: str):
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return found[-1] if found else None


class TestHistory:
    def test_runs_of_several_playbooks_feed_the_history(self, playbooks: Path, evidence_root: Path,
                                                        prefect_server: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
        stop = {"id": "broken", "action": "evidence.collect", "on_failure": "stop",
                "args": {"name": "x.log", "path": "/nonexistent/x.log"}}
        monkeypatch.setenv("IRP_EVIDENCE_COLLECT_ROOTS", "/nonexistent")  # reading the file is what fails
        get_settings.cache_clear()
        edit_playbook(playbooks, "malware", lambda d: d["stages"]["contain"].insert(0, stop))
        summaries = {}
        for incident_type in (IncidentType.data_leak, IncidentType.service_unavailability,
                              IncidentType.account_compromise):
            state = INCIDENT_FLOWS[incident_type](alert=fresh_alert(incident_type), decisions=EVERYONE_AGREES,
                                                  return_state=True)
            assert state.is_completed(), state.message
            summaries[incident_type] = state.result()
        stopped = INCIDENT_FLOWS[IncidentType.malware](alert=fresh_alert(IncidentType.malware), return_state=True)
        assert stopped.is_failed()
        store = open_store(get_settings().evidence_url)
        ids = {s.incident_id for s in summaries.values()}
        malware_id = next(i for i in store.incident_ids() if i not in ids)
        leak = summaries[IncidentType.data_leak]

        # list: everything, filters, JSON and CSV
        listed = irp("incidents", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = {r["id"]: r for r in json.loads(listed.stdout)}
        assert set(rows) == ids | {malware_id}
        assert rows[malware_id]["status"] == "stopped" and rows[leak.incident_id]["status"] == "closed"
        assert rows[leak.incident_id]["restore_deadline"] == "met"  # seconds, against a day
        by_type = json.loads(irp("incidents", "list", "--json", "--type", "malware").stdout)
        assert [r["id"] for r in by_type] == [malware_id]
        closed = list(csv.DictReader(io.StringIO(irp("incidents", "list", "--csv", "--status", "closed").stdout)))
        assert {r["id"] for r in closed} == ids

        # show: timeline, the flow run's UI link, the playbook version
        shown = irp("incidents", "show", leak.incident_id, env={"PREFECT_API_URL": prefect_server})
        assert shown.returncode == 0, shown.stderr
        ui = prefect_server.removesuffix("/api")
        assert f"{leak.flow_run_id}  {ui}/runs/flow-run/{leak.flow_run_id}" in shown.stdout
        assert "playbook   Fuite de données v1.0.0 (policy 2026-05-13) " in shown.stdout
        timeline = shown.stdout.split("timeline (UTC):\n")[1]
        for kind in ("alert", "stage", "step", "notification", "evidence", "audit", "review"):
            assert f" {kind} " in timeline, kind

        # the audit log: every saved state, chained; intact
        acts = [e.details["act"] for e in audit.entries(store, leak.incident_id)]
        assert acts[0] == "opened" and acts[-1] == "closed" and acts.count("updated") >= 7
        assert {"stage_advanced", "review_recorded"} <= set(acts)  # the people's decisions, each audited
        statuses = [e.details["status"] for e in audit.entries(store, leak.incident_id)]
        assert statuses[-1] == "closed" and "restoring" in statuses
        assert audit.entries(store, malware_id)[-1].details["status"] == "stopped"
        verified = irp("audit", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "4 incident(s) checked" in verified.stdout and "audit log intact" in verified.stdout

        # the review: HTML and chart archived, markdown and table artifacts
        names = {item.name for item in store.manifest(leak.incident_id)}
        assert {"review/report.md", "review/report.html", "review/timeline.svg", "review/metrics.json"} <= names
        review = artifact(f"review-{leak.incident_id.lower()}")
        assert "## Response metrics" in review.data and "## Corrective actions" in review.data
        table = artifact(f"metrics-{leak.incident_id.lower()}")
        assert table.type == "table" and "restore" in str(table.data)
        overall = artifact("incident-metrics")
        assert overall.type == "markdown" and "MTTR" in overall.data
        assert artifact("incident-metrics-table").type == "table"

        # corrective actions tracked until closed
        actions = json.loads(irp("actions", "list", "--open", "--json", "--incident", leak.incident_id).stdout)
        fix = next(a for a in actions if a["kind"] == "corrective")
        closed_action = irp("actions", "close", leak.incident_id, fix["id"], "--by", "Alice Martin",
                            "--resolution", "egress control deployed")
        assert closed_action.returncode == 0, closed_action.stderr
        still_open = json.loads(irp("actions", "list", "--open", "--json").stdout)
        assert fix["id"] not in {a["id"] for a in still_open}

        # export: the archived review, the chain, the act itself audited
        bundle = tmp_path / "leak.tar.gz"
        exported = irp("incidents", "export", leak.incident_id, "--output", str(bundle))
        assert exported.returncode == 0, exported.stderr
        with tarfile.open(bundle) as tar:
            readme = tar.extractfile(f"{leak.incident_id}/README.txt").read().decode()
            html = tar.extractfile(f"{leak.incident_id}/report.html").read().decode()
        assert "as archived by the review stage" in readme and "chain check at export: intact" in readme
        assert "<svg" in html
        assert [e.details["act"] for e in audit.entries(store, leak.incident_id)][-2:] == [
            "action_closed", "exported"]

        # Prefect's database gone: no server at all, a fresh Prefect home; the store still answers
        no_prefect = {"PREFECT_API_URL": "http://127.0.0.1:9/api", "PREFECT_HOME": str(tmp_path / "fresh-home")}
        offline = irp("incidents", "list", "--json", env=no_prefect)
        assert offline.returncode == 0, offline.stderr
        assert {r["id"] for r in json.loads(offline.stdout)} == ids | {malware_id}
        shown = irp("incidents", "show", malware_id, env=no_prefect)
        assert shown.returncode == 0 and "status     stopped" in shown.stdout
        assert "http://127.0.0.1:9/runs/flow-run/" in shown.stdout
        report = irp("report", "monthly", "--output", str(tmp_path / "month.html"), env=no_prefect)
        assert report.returncode == 0, report.stderr
        assert ": 4 incident(s)" in report.stdout
        assert irp("audit", "verify", env=no_prefect).returncode == 0


class TestOperatorActs:
    def test_a_declaration_is_the_first_audit_entry(self) -> None:
        report = IncidentReport(incident_type=IncidentType.human_error, title="Wrong tenant export sent",
                                reporter="Dana Roy (Acme)", reporter_role="client")
        summary = declare_incident(report=report)
        store = open_store(get_settings().evidence_url)
        entries = audit.entries(store, summary.incident_id)
        assert [e.details["act"] for e in entries][:2] == ["declared", "opened"]
        assert (entries[0].actor, entries[0].details["reporter_role"]) == ("Dana Roy (Acme)", "client")
        assert audit.verify(store).intact
        shown = json.loads(irp("incidents", "show", summary.incident_id, "--json").stdout)
        assert [r["role"] for r in shown["flow_runs"]] == ["declare_incident", "response"]
        assert shown["flow_runs"][1]["id"] == summary.flow_run_id

    def test_approval_decisions_are_audited_under_the_approvers_name(self, playbooks: Path) -> None:
        edit_playbook(playbooks, "data_leak", lambda d: d["stages"]["contain"].insert(0, {
            "id": "suspend_tenant", "action": "timeline.record", "approval": {"approvers": 1, "timeout_minutes": 2},
            "args": {"message": "tenant suspended"}}))
        result: dict = {}
        thread = threading.Thread(target=lambda: result.setdefault(
            "state", INCIDENT_FLOWS[IncidentType.data_leak](alert=fresh_alert(IncidentType.data_leak),
                                                            decisions=EVERYONE_AGREES, return_state=True)))
        thread.start()
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                paused = [r for r in client.read_flow_runs(limit=5, sort="START_TIME_DESC")
                          if r.state and r.state.is_paused()]
                if paused:
                    break
                time.sleep(0.3)
        assert paused, "the flow run never paused"
        resume_flow_run(paused[0].id, run_input={"decision": "reject", "approver": "Carol", "reason": "false positive"})
        thread.join(120)
        summary = result["state"].result()
        store = open_store(get_settings().evidence_url)
        rejected = [e for e in audit.entries(store, summary.incident_id) if e.details["act"] == "rejected"]
        assert len(rejected) == 1
        assert (rejected[0].actor, rejected[0].details["reason"], rejected[0].details["step"]) == (
            "Carol", "false positive", "suspend_tenant")
        assert store.load_incident(summary.incident_id).status == IncidentStatus.closed
