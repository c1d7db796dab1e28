"""Playbook tests (irp playbooks test) and tabletop exercises (irp exercise): the runner itself is tested here.

A shipped playbook copied and mutated must make its cases fail, each failure naming the expectation it broke.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from irp.cli import app
from irp.models import IncidentType
from irp.playbook.cases import case_json_schema, load_case
from irp.playtest.exercise import load_scenario, run_exercise
from irp.playtest.runner import check, run_case
from irp.playtest.suite import case_files, coverage, run_cases

REPO = Path(__file__).resolve().parents[3]
PLAYBOOKS = REPO / "playbooks"


@pytest.fixture
def playbooks(tmp_path: Path) -> Path:
    """A copy of the shipped playbooks, their templates, samples and cases, to mutate."""
    copy = tmp_path / "playbooks"
    shutil.copytree(PLAYBOOKS, copy)
    return copy


def _failures(playbooks: Path, incident_type: str, old: str, new: str) -> list[str]:
    """The failures of the type's sample case once `old` is replaced by `new` in its playbook."""
    path = playbooks / f"{incident_type}.yaml"
    text = path.read_text()
    assert text.count(old) == 1, f"the mutation must hit exactly one place: {old!r}"
    path.write_text(text.replace(old, new))
    loaded = load_case(playbooks / "tests" / incident_type / "sample.yaml")
    return check(loaded, run_case(loaded))


class TestMutations:
    def test_the_unmutated_copy_passes(self, playbooks: Path) -> None:
        loaded = load_case(playbooks / "tests" / "human_error" / "sample.yaml")
        assert check(loaded, run_case(loaded)) == []

    def test_a_removed_step_fails_its_expectation(self, playbooks: Path) -> None:
        step = (PLAYBOOKS / "human_error.yaml").read_text().split("    - id: request_deletion\n")[1].split("  restore:")[0]
        failures = _failures(playbooks, "human_error", "    - id: request_deletion\n" + step, "")
        case = playbooks / "tests" / "human_error" / "sample.yaml"
        assert any(f.startswith(f"{case}:") and "expect.steps.request_deletion: expected completed, got not run" in f
                   for f in failures), failures
        assert any("expect.actions.1: expected step request_deletion to call its action, got not run" in f
                   for f in failures), failures

    def test_an_inverted_when_fails_its_expectation(self, playbooks: Path) -> None:
        failures = _failures(
            playbooks, "human_error",
            """      when: "alert.labels.get('recipient_tenant', '') != '' or alert.labels.get('recipient', '') != ''"\n""",
            """      when: "not (alert.labels.get('recipient_tenant', '') != '' or alert.labels.get('recipient', '') != '')"\n""")
        assert any("expect.steps.recipient_status: expected completed, got skipped (condition is false: not (" in f
                   for f in failures), failures

    def test_a_changed_classification_rule_fails_severity_and_rule(self, playbooks: Path) -> None:
        failures = _failures(playbooks, "human_error", """    - when: "incident.personal_data.involved"
      severity: major""", """    - when: "incident.personal_data.involved"
      severity: critical""")
        assert any("expect.severity: expected major, got critical (rule 3)" in f for f in failures), failures

    def test_a_changed_argument_fails_its_expectation(self, playbooks: Path) -> None:
        failures = _failures(playbooks, "human_error", """        owner: "platform-oncall"
        details: "{{ {'misdirected_export'""", """        owner: "support-oncall"
        details: "{{ {'misdirected_export'""")
        assert any("expect.actions.0.args.owner: expected response.assign_action argument owner='platform-oncall', "
                   "got 'support-oncall'" in f for f in failures), failures


class TestCaseFiles:
    def test_a_typo_key_is_reported_at_its_line_and_column(self, tmp_path: Path) -> None:
        case = tmp_path / "playbooks" / "tests" / "human_error" / "typo.yaml"
        case.parent.mkdir(parents=True)
        case.write_text("name: typo\nalert: {sample: x.json}\nexpect:\n  severity: major\n  stauts: closed\n")
        result = CliRunner().invoke(app, ["playbooks", "test", str(case)])
        assert result.exit_code == 2
        assert f"{case}:5:3: expect.stauts: unknown key 'stauts'; valid keys: severity, rule, steps, actions, " \
               "notifications, status" in result.output
        assert "Traceback" not in result.output

    def test_a_missing_sample_is_a_broken_case_not_a_traceback(self, tmp_path: Path) -> None:
        case = tmp_path / "playbooks" / "tests" / "human_error" / "nosample.yaml"
        case.parent.mkdir(parents=True)
        case.write_text("name: no sample\nalert:\n  sample: missing.json\n")
        [result] = run_cases([case])
        assert result.broken and result.broken[0].startswith(f"{case}:3:3: alert.sample: ")
        assert "no such file" in result.broken[0]

    def test_an_aws_call_without_a_recorded_answer_is_reported_never_sent(self, tmp_path: Path) -> None:
        case = tmp_path / "playbooks" / "tests" / "human_error" / "aws.yaml"
        case.parent.mkdir(parents=True)
        case.write_text("name: AWS configured, nothing recorded\n"
                        "alert:\n  source: report\n  title: object deleted\n"
                        "  labels: {error_type: accidental_deletion, bucket: ccr-exports}\n"
                        "facts:\n  aws:\n  - {service: s3, operation: GetBucketVersioning, response: {Status: Enabled}}\n")
        loaded = load_case(case)
        outcome = run_case(loaded, playbooks_dir=PLAYBOOKS)
        failures = check(loaded, outcome)
        assert any(f.startswith(f"{case}:6:1: facts: expected every provider call to have a recorded answer, got "
                                "none for s3.HeadBucket") for f in failures), failures
        assert not any("GetBucketVersioning" in call for call in outcome.unrecorded)  # the recorded one answered

    def test_a_broken_playbook_breaks_its_cases_with_the_playbook_problem(self, playbooks: Path) -> None:
        path = playbooks / "human_error.yaml"
        path.write_text(path.read_text().replace("      on_failure: stop\n      args:\n        affected_clients",
                                                 "      on_falure: stop\n      args:\n        affected_clients", 1))
        result = CliRunner().invoke(app, ["playbooks", "test", str(playbooks / "tests" / "human_error" / "two_clients.yaml")])
        assert result.exit_code == 2
        assert f"{path}:54:7: stages.detect.0.on_falure: unknown key 'on_falure'" in result.output
        assert "Traceback" not in result.output

    def test_the_committed_schema_is_current(self) -> None:
        committed = json.loads((PLAYBOOKS / "schema" / "case.schema.json").read_text())
        assert committed == case_json_schema(), "run: irp playbooks schema --case > playbooks/schema/case.schema.json"


class TestShipped:
    def test_every_shipped_case_passes_and_covers_its_playbook(self) -> None:
        results = run_cases(case_files([], PLAYBOOKS), jobs=2)
        assert {r.path.parent.name for r in results} == {t.value for t in IncidentType}
        problems = [line for r in results for line in [*r.broken, *r.failures]]
        assert problems == []
        for incident_type in IncidentType:
            outcomes = [r.outcome for r in results if r.path.parent.name == incident_type.value]
            assert [str(g) for g in coverage(PLAYBOOKS / f"{incident_type.value}.yaml", outcomes)] == []

    def test_coverage_reports_what_no_case_exercised(self, playbooks: Path) -> None:
        (playbooks / "tests" / "human_error" / "s3_deletion_many_people.yaml").unlink()
        (playbooks / "tests" / "human_error" / "caught_before_effect.yaml").unlink()
        result = CliRunner().invoke(app, ["playbooks", "test", "--coverage", str(playbooks / "human_error.yaml")])
        assert result.exit_code == 0, result.output
        assert f"{playbooks / 'human_error.yaml'}:161:7: step restore_object: when never true: " in result.output
        assert "classification.rules.0 never set the severity (critical" in result.output
        assert "classification.rules.4 never set the severity (minor" in result.output
        assert "3 cases: 3 passed, 0 failed, 0 broken" in result.output


def _scenario(tmp_path: Path, notify_at: str) -> Path:
    path = tmp_path / "week.yaml"
    path.write_text(f"""name: a week of human error
alert: {{sample: {PLAYBOOKS / 'samples' / 'human_error.json'}}}
injects:
  - {{at: 2h, by: press office, note: "a journalist calls"}}
  - {{at: 6d, by: exercise control, alert: {{sample: {PLAYBOOKS / 'samples' / 'human_error.json'}}}}}
decisions:
  - {{at: 1h, by: Alice, advance: detect, note: checked}}
  - {{at: 2h, by: Alice, advance: analyse, note: done}}
  - {{at: 3h, by: Alice, close: all, note: "recalled"}}
  - {{at: 4h, by: Alice, advance: contain, note: contained}}
  - {{at: 2d, by: Bob, advance: restore, note: checked}}
  - {{at: 5d, by: Claire, review: {{causes: autocomplete}}}}
  - {{at: {notify_at}, by: Claire (DPO), advance: notify, note: "CNIL notified"}}
""")
    return path


class TestExercise:
    def test_a_simulated_week_runs_in_seconds_and_lists_the_missed_deadline(self, tmp_path: Path) -> None:
        scenario = _scenario(tmp_path, "7d")
        started = time.perf_counter()
        report = run_exercise(IncidentType.human_error, load_scenario(scenario), tmp_path, PLAYBOOKS)
        assert time.perf_counter() - started < 60  # a week of incident, simulated (seconds on an idle machine)
        assert report.outcome.incident.status == "closed" and report.outcome.incident.id.startswith("EXERCISE-")
        assert "gdpr_authority due +72h00: missed (handled +168h00)" in report.missed
        assert "| gdpr_authority | +72h00 | missed (handled +168h00) |" in report.markdown
        assert "notification deadline missed: gdpr_authority due +72h00" in report.markdown
        assert report.markdown.startswith("# EXERCISE — Post-incident review — EXERCISE-")
        assert "| +2h00 | press office | a journalist calls |" in report.markdown
        assert "EXERCISE" in report.html

    def test_deadlines_met_in_time_are_not_gaps(self, tmp_path: Path) -> None:
        report = run_exercise(IncidentType.human_error, load_scenario(_scenario(tmp_path, "20h")), tmp_path, PLAYBOOKS)
        assert report.missed == []
        assert "| gdpr_authority | +72h00 | handled in time (notify ended +20h00) |" in report.markdown

    def test_the_shipped_scenario_runs_from_the_command_line(self, tmp_path: Path) -> None:
        scenario = PLAYBOOKS / "exercises" / "data_leak_friday_evening.yaml"
        result = CliRunner().invoke(app, ["exercise", "data_leak", "--scenario", str(scenario), "--out", str(tmp_path)])
        assert result.exit_code == 0, result.output
        text = (tmp_path / "exercise-report.md").read_text()
        assert "late decision: approve of step deactivate_key by Bob Martin at +5h00" in text
        assert "gdpr_authority due +72h00: missed (handled +96h00)" in result.output

    def test_interactive_decisions_are_asked_recorded_and_attributed(self, tmp_path: Path) -> None:
        scenario = tmp_path / "bare.yaml"
        scenario.write_text(f"name: bare\nalert: {{sample: {PLAYBOOKS / 'samples' / 'human_error.json'}}}\n")
        answers = "close all\nAlice Durand\n2h\nfly away\nadvance restore\nBob Martin\n1d\n\n"
        result = CliRunner().invoke(app, ["exercise", "human_error", "--scenario", str(scenario), "--interactive",
                                          "--out", str(tmp_path)], input=answers)
        assert result.exit_code == 0, result.output
        assert "EXERCISE-" in result.output and "containing — 2 measure(s) open" in result.output
        assert "not a decision: 'fly'" in result.output
        text = (tmp_path / "exercise-report.md").read_text()
        assert "| +2h00 | Alice Durand | measure A-" in text
        assert "| +24h00 | Bob Martin | stage restore ended by Bob Martin: restore |" in text
