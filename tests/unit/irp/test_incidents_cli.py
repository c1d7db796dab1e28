"""`irp incidents`, `irp actions list/close` and `irp report monthly` on a store of known incidents."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from history_fixtures import build_incident, save
from typer.testing import CliRunner

from irp import audit
from irp.cli.actions import actions_app
from irp.cli.incidents import incidents_app
from irp.cli.report import report_app
from irp.evidence import LocalEvidenceStore
from irp.evidence.custody import check_chain
from irp.evidence.models import RawEntry
from irp.models import ActionItem, ClientOrigin, IncidentStatus, IncidentType, Severity, Stage

runner = CliRunner()
NOV = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)
HOSTILE = "<script>alert('x')</script> & co"


def corrective(action_id: str, due: datetime, title: str = "Add an egress control") -> ActionItem:
    return ActionItem(id=action_id, title=title, owner="security@confluent-digital.com", stage=Stage.review,
                      due_at=due)


@pytest.fixture
def store(evidence_root: Path, monkeypatch: pytest.MonkeyPatch) -> LocalEvidenceStore:
    """Five incidents: three types, three severities, two months, one still running."""
    monkeypatch.setenv("PREFECT_UI_URL", "http://prefect.example:4200")
    store = LocalEvidenceStore(evidence_root)
    save(store, build_incident("INC-20261103-AAAAAA", detected=NOV, restored_after=timedelta(hours=10),
                               actions=[corrective("A-000001", NOV + timedelta(days=30))],
                               flow_run_ids=["0b9f3c52-1111-4222-8333-444455556666"]))
    save(store, build_incident("INC-20261110-BBBBBB", detected=NOV + timedelta(days=7),
                               restored_after=timedelta(hours=30), title=HOSTILE,
                               actions=[corrective("A-000002", NOV + timedelta(days=8), "Rotate the keys")]))
    save(store, build_incident("INC-20261112-CCCCCC", type=IncidentType.malware, severity=Severity.major,
                               detected=NOV + timedelta(days=9), restored_after=timedelta(hours=5)))
    save(store, build_incident("INC-20261020-DDDDDD", type=IncidentType.service_unavailability,
                               severity=Severity.minor, detected=NOV - timedelta(days=14),
                               restored_after=timedelta(hours=2)))
    save(store, build_incident("INC-20261128-EEEEEE", type=IncidentType.malware, severity=Severity.major,
                               detected=NOV + timedelta(days=25), contained_after=None, restored_after=None,
                               notified_after=None, status=IncidentStatus.containing,
                               actions=[ActionItem(id="A-000003", title="Isolate the host", owner="oncall",
                                                   stage=Stage.contain)]))
    return store


def invoke(app, *args: str):
    result = runner.invoke(app, list(args))
    return result


class TestList:
    def test_table_lists_everything_newest_first(self, store) -> None:
        result = invoke(incidents_app, "list")
        assert result.exit_code == 0, result.output
        ids = [line.split()[0] for line in result.output.splitlines()[1:-1]]
        assert ids == ["INC-20261128-EEEEEE", "INC-20261112-CCCCCC", "INC-20261110-BBBBBB",
                       "INC-20261103-AAAAAA", "INC-20261020-DDDDDD"]
        assert result.output.splitlines()[-1] == "5 incident(s)"

    @pytest.mark.parametrize(("args", "expected"), [
        (["--type", "malware"], {"INC-20261128-EEEEEE", "INC-20261112-CCCCCC"}),
        (["--severity", "critical"], {"INC-20261110-BBBBBB", "INC-20261103-AAAAAA"}),
        (["--status", "containing"], {"INC-20261128-EEEEEE"}),
        (["--since", "2026-11-10"], {"INC-20261128-EEEEEE", "INC-20261112-CCCCCC", "INC-20261110-BBBBBB"}),
        (["--since", "2026-11-10T08:00:01Z"], {"INC-20261128-EEEEEE", "INC-20261112-CCCCCC"}),
        (["--type", "malware", "--status", "closed"], {"INC-20261112-CCCCCC"}),
        (["--type", "human_error"], set()),
    ])
    def test_filters_in_json(self, store, args: list[str], expected: set[str]) -> None:
        result = invoke(incidents_app, "list", "--json", *args)
        assert result.exit_code == 0, result.output
        assert {row["id"] for row in json.loads(result.output)} == expected

    def test_json_rows_carry_the_record_and_its_metrics(self, store) -> None:
        rows = {r["id"]: r for r in json.loads(invoke(incidents_app, "list", "--json").output)}
        row = rows["INC-20261103-AAAAAA"]
        assert (row["type"], row["severity"], row["status"], row["playbook"]) == (
            "data_leak", "critical", "closed", "data_leak@1.2.0")
        assert (row["restore_seconds"], row["restore_deadline"]) == (36000, "met")
        assert (row["contain_seconds"], row["acknowledge_seconds"]) == (10800, 300)
        assert rows["INC-20261110-BBBBBB"]["restore_deadline"] == "missed"
        assert rows["INC-20261110-BBBBBB"]["title"] == HOSTILE
        assert rows["INC-20261103-AAAAAA"]["open_actions"] == 1

    def test_csv_has_a_header_and_one_row_per_incident(self, store) -> None:
        result = invoke(incidents_app, "list", "--csv", "--severity", "major")
        assert result.exit_code == 0, result.output
        rows = list(csv.DictReader(io.StringIO(result.output)))
        assert {r["id"] for r in rows} == {"INC-20261128-EEEEEE", "INC-20261112-CCCCCC"}
        assert list(rows[0])[:5] == ["id", "type", "severity", "status", "title"]
        running = next(r for r in rows if r["id"] == "INC-20261128-EEEEEE")
        assert running["restore_seconds"] == "" and running["status"] == "containing"

    @pytest.mark.parametrize(("args", "message"), [
        (["--since", "last week"], "--since 'last week': not a date; use YYYY-MM-DD or an ISO 8601 time"),
        (["--json", "--csv"], "--json and --csv exclude each other"),
    ])
    def test_bad_options_are_one_line_errors(self, store, args: list[str], message: str) -> None:
        result = invoke(incidents_app, "list", *args)
        assert result.exit_code == 1
        assert message in result.output and "Traceback" not in result.output

    def test_an_unknown_type_lists_the_valid_ones(self, store) -> None:
        result = invoke(incidents_app, "list", "--type", "phishing")
        assert result.exit_code == 2 and "data_leak" in result.output

    def test_an_unreadable_record_is_reported_and_the_others_listed(self, store, evidence_root: Path) -> None:
        (evidence_root / "INC-20261112-CCCCCC" / "incident.json").write_text('{"id": "INC-20261112-CCCCCC"}')
        result = runner.invoke(incidents_app, ["list", "--json"])
        assert result.exit_code == 0
        assert len(json.loads(result.stdout)) == 4
        assert "warning: skipped INC-20261112-CCCCCC: the incident record does not validate" in result.stderr


class TestShow:
    def test_timeline_runs_playbook_metrics_and_actions(self, store) -> None:
        store.put_json("INC-20261103-AAAAAA", "review/report.md", {"x": 1}, source_system="irp")
        result = invoke(incidents_app, "show", "INC-20261103-AAAAAA")
        assert result.exit_code == 0, result.output
        out = result.output
        assert ("0b9f3c52-1111-4222-8333-444455556666  http://prefect.example:4200/runs/flow-run/"
                "0b9f3c52-1111-4222-8333-444455556666") in out
        assert "playbook   data_leak v1.2.0 (policy 2026-05-13) playbooks/data_leak.yaml sha256 abab" in out
        assert "restore 10h 00m met (target 1d 00h)" in " ".join(out.split())
        assert "A-000001  review   open" in out
        for kind, text in [("stage", "stage contain completed"), ("step", "step contain_step"),
                           ("notification", "initial client notification"), ("evidence", "review/report.md"),
                           ("audit", "opened:"), ("audit", "updated:")]:
            assert any(kind in line and text in line for line in out.splitlines()), (kind, text)
        times = [line.split()[0] + " " + line.split()[1] for line in out.split("timeline (UTC):\n")[1].splitlines()]
        assert times == sorted(times)

    def test_ui_link_is_derived_from_the_api_url(self, store, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("PREFECT_UI_URL")
        monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4299/api")
        data = json.loads(invoke(incidents_app, "show", "INC-20261103-AAAAAA", "--json").output)
        assert data["flow_runs"] == [{"id": "0b9f3c52-1111-4222-8333-444455556666", "role": "response",
                                      "url": "http://127.0.0.1:4299/runs/flow-run/0b9f3c52-1111-4222-8333-444455556666"}]
        assert data["incident"]["playbook"]["version"] == "1.2.0"
        assert data["metrics"]["measures"]["restore"]["state"] == "met"

    def test_an_unknown_id_suggests_close_ones(self, store) -> None:
        result = invoke(incidents_app, "show", "INC-20261103-AAAAAB")
        assert result.exit_code == 1
        assert "no incident INC-20261103-AAAAAB in file://" in result.output
        assert "did you mean INC-20261103-AAAAAA" in result.output


class TestExport:
    def test_bundle_is_self_contained_and_checkable(self, store, tmp_path: Path) -> None:
        bundle = tmp_path / "out" / "bundle.tar.gz"
        result = invoke(incidents_app, "export", "INC-20261103-AAAAAA", "--output", str(bundle))
        assert result.exit_code == 0, result.output
        with tarfile.open(bundle) as tar:
            files = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers()}
        assert set(files) == {"README.txt", "incident.json", "timeline.json", "timeline.svg", "metrics.json",
                              "report.html", "report.md", "manifest.jsonl", "custody.jsonl", "SHA256SUMS"}
        sums = dict(reversed(line.split("  ")) for line in files["SHA256SUMS"].decode().splitlines())
        assert all(hashlib.sha256(files[name]).hexdigest() == digest for name, digest in sums.items())
        raws = [RawEntry(label=str(n), text=line) for n, line in enumerate(files["custody.jsonl"].splitlines(), 1)]
        assert check_chain("INC-20261103-AAAAAA", raws)[1] == []
        assert "generated at export: no review was archived" in files["README.txt"].decode()
        assert b"Post-incident review" in files["report.html"] and b"<svg" in files["report.html"]
        kinds = {row["kind"] for row in json.loads(files["timeline.json"])}
        assert {"stage", "step", "notification", "evidence", "audit"} <= kinds
        exported = audit.entries(store, "INC-20261103-AAAAAA")[-1]
        assert exported.details["act"] == "exported"
        assert exported.details["sha256"] == hashlib.sha256(bundle.read_bytes()).hexdigest()

    def test_an_unwritable_destination_is_an_error(self, store, tmp_path: Path) -> None:
        blocker = tmp_path / "file"
        blocker.write_text("x")
        result = invoke(incidents_app, "export", "INC-20261103-AAAAAA", "--output", str(blocker / "b.tar.gz"))
        assert result.exit_code == 1 and "cannot write the bundle" in result.output


class TestMetricsCommand:
    def test_aggregates_by_type_and_severity(self, store) -> None:
        data = json.loads(invoke(incidents_app, "metrics", "--json", "--status", "closed").output)
        groups = {(a["group"], a["key"]): a for a in data["aggregates"]}
        assert groups[("all", "all")]["incidents"] == 4
        assert groups[("type", "data_leak")]["mean_seconds"]["restore"] == 20 * 3600
        assert groups[("severity", "critical")]["met"]["restore"] == 1
        text = invoke(incidents_app, "metrics").output
        assert "MTTR" in text and "data_leak" in text and "INC-20261128-EEEEEE" in text


class TestActions:
    def test_list_all_and_open(self, store) -> None:
        rows = json.loads(invoke(actions_app, "list", "--json").output)
        assert [r["id"] for r in rows] == ["A-000002", "A-000001", "A-000003"]  # earliest due first, none last
        assert {r["id"]: r["kind"] for r in rows} == {"A-000001": "corrective", "A-000002": "corrective",
                                                      "A-000003": "measure"}
        assert next(r for r in rows if r["id"] == "A-000002")["overdue"] is True
        text = invoke(actions_app, "list", "--open").output
        assert "A-000002" in text and "OVERDUE" in text

    def test_close_records_who_what_and_when_and_audits_it(self, store) -> None:
        result = invoke(actions_app, "close", "INC-20261110-BBBBBB", "a-000002", "--by", "Alice Martin",
                        "--resolution", "Keys rotated; checked in IAM")
        assert result.exit_code == 0, result.output
        assert "action A-000002 of INC-20261110-BBBBBB closed by Alice Martin (after its due date)" in result.output
        incident = store.load_incident("INC-20261110-BBBBBB")
        action = incident.actions[0]
        assert (action.status, action.closed_by, action.resolution) == (
            "closed", "Alice Martin", "Keys rotated; checked in IAM")
        assert any(e.kind == "decision" and "closed by Alice Martin" in e.message for e in incident.timeline)
        entry = audit.entries(store, incident.id)[-1]
        assert (entry.details["act"], entry.actor, entry.details["action_id"]) == (
            "action_closed", "Alice Martin", "A-000002")
        assert audit.verify_incident(store, incident.id).intact
        open_ids = [r["id"] for r in json.loads(invoke(actions_app, "list", "--open", "--json").output)]
        assert "A-000002" not in open_ids and "A-000001" in open_ids
        again = invoke(actions_app, "close", "INC-20261110-BBBBBB", "A-000002", "--by", "B", "--resolution", "x")
        assert again.exit_code == 1 and "already closed on" in again.output and "by Alice Martin" in again.output

    @pytest.mark.parametrize(("incident", "action", "message"), [
        ("INC-20261110-BBBBBB", "A-999999", "has no action 'A-999999'; its actions: A-000002 (open)"),
        ("INC-20261110-BBBBBX", "A-000002", "no incident INC-20261110-BBBBBX"),
    ])
    def test_close_refusals_say_why(self, store, incident: str, action: str, message: str) -> None:
        result = invoke(actions_app, "close", incident, action, "--by", "Alice", "--resolution", "done")
        assert result.exit_code == 1
        assert message in result.output and "Traceback" not in result.output

    def test_a_measure_closes_while_its_incident_is_handled(self, store) -> None:
        """People close measures during the response: the run reads the decision, it never overwrites it."""
        result = invoke(actions_app, "close", "INC-20261128-EEEEEE", "A-000003", "--by", "Alice", "--resolution", "done")
        assert result.exit_code == 0, result.output
        incident = store.load_incident("INC-20261128-EEEEEE")
        store.save_incident(incident.model_copy(update={"actions": [
            a.model_copy(update={"status": "open", "closed_at": None}) for a in incident.actions]}))  # a run's stale copy
        again = store.load_incident("INC-20261128-EEEEEE")
        assert [(a.id, a.status, a.closed_by) for a in again.actions] == [("A-000003", "closed", "Alice")]


class TestMonthlyReport:
    def test_html_with_counts_trend_and_charts(self, store, tmp_path: Path) -> None:
        out = tmp_path / "nov.html"
        result = invoke(report_app, "monthly", "--month", "2026-11", "--output", str(out))
        assert result.exit_code == 0, result.output
        assert "Incident summary — November 2026: 4 incident(s)" in result.output
        html = out.read_text()
        assert html.count("<svg") == 3
        assert "<script>" not in html and "&lt;script&gt;" in html  # an incident title is data
        for incident_id in ("INC-20261103-AAAAAA", "INC-20261110-BBBBBB", "INC-20261112-CCCCCC",
                            "INC-20261128-EEEEEE"):
            assert incident_id in html
        assert "INC-20261020-DDDDDD" not in html  # October
        assert "2026-06" in html and "2026-10" in html  # six months of trend
        critical = html.rsplit("<td>severity: critical</td>", 1)[1].split("</tr>", 1)[0]
        assert critical.strip() == "<td>2/2</td><td>2/2</td><td>1/2</td><td>2/2</td>"  # restore: 10 h met, 30 h missed

    def test_a_bad_month_is_an_error(self, store) -> None:
        result = invoke(report_app, "monthly", "--month", "2026-13")
        assert result.exit_code == 1 and "--month '2026-13': not a month; use YYYY-MM" in result.output


class TestConfirmClients:
    @pytest.fixture
    def named(self, store) -> str:
        incident = build_incident("INC-20261129-FFFFFF", detected=NOV + timedelta(days=26)).model_copy(update={
            "affected_clients": ["globex"], "client_origins": [ClientOrigin.of("globex", "alert", by="step scope")]})
        save(store, incident)
        return incident.id

    def test_a_responder_confirms_and_it_is_audited(self, store, named) -> None:
        assert not store.load_incident(named).client_confirmed("globex")
        result = invoke(incidents_app, "confirm-clients", named, "--clients", "globex", "--by", "Alice Martin")
        assert result.exit_code == 0, result.output
        assert result.output.startswith("confirmed by Alice Martin: globex")
        assert store.load_incident(named).client_confirmed("globex")
        [entry] = [e for e in audit.entries(store, named) if e.details.get("act") == "clients_confirmed"]
        assert entry.actor == "Alice Martin" and entry.details["clients"] == ["globex"]
        shown = invoke(incidents_app, "show", named)
        assert "clients    globex (alert step scope, confirmed by Alice Martin)" in shown.output

    @pytest.mark.parametrize(("args", "message"), [
        (["--clients", "initech", "--by", "Alice"],
         "error: incident INC-20261129-FFFFFF does not name 'initech'; its Clients: globex"),
        (["--clients", " , ", "--by", "Alice"], "error: give --clients with at least one Client id and --by"),
        (["--clients", "globex", "--by", "  "], "error: give --clients with at least one Client id and --by"),
    ])
    def test_bad_requests_are_one_line_errors(self, store, named, args, message) -> None:
        result = invoke(incidents_app, "confirm-clients", named, *args)
        assert result.exit_code == 1 and result.output.startswith(message)
        assert not store.load_incident(named).client_confirmed("globex")

    def test_an_unknown_incident_is_a_one_line_error(self, store) -> None:
        result = invoke(incidents_app, "confirm-clients", "INC-20261129-000000", "--clients", "a", "--by", "Alice")
        assert result.exit_code == 1 and "no incident 'INC-20261129-000000'" in result.output
