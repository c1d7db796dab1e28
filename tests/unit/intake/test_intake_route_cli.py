"""`irp playbooks route SOURCE PAYLOAD`: where a payload's alerts would go, for people editing routing.yaml."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from irp.cli import app
from irp.errors import IrpError, PlaybookError

SAMPLES = Path(__file__).parent / "samples"
REPO = Path(__file__).resolve().parents[3]
runner = CliRunner()


def test_alertmanager_sample_goes_to_its_route() -> None:
    result = runner.invoke(app, ["playbooks", "route", "alertmanager", str(SAMPLES / "alertmanager.json"), "--json"])
    assert result.exit_code == 0, result.output
    [alert] = json.loads(result.output)["alerts"]
    assert (alert["route"], alert["incident_type"], alert["severity_hint"]) == \
        ("login-brute-force", "account_compromise", "major")
    assert alert["group_key"].startswith("route:login-brute-force:")


def test_unrouted_alert_from_stdin_is_said_so() -> None:
    body = json.dumps({"title": "disk almost full", "labels": {"team": "billing"}})
    result = runner.invoke(app, ["playbooks", "route", "generic", "-"], input=body)
    assert result.exit_code == 0, result.output
    assert "- disk almost full (firing" in result.output
    assert "unrouted: no route matches and there is no default" in result.output


def test_another_routing_file_and_its_problems(tmp_path: Path) -> None:
    routing = tmp_path / "routing.yaml"
    routing.write_text("version: 1\nroutes:\n  - name: billing\n    labels: {team: billing}\n"
                       "    incident_type: technical_failure\n    severity: minor\n")
    body = json.dumps({"title": "disk almost full", "labels": {"team": "billing"}})
    result = runner.invoke(app, ["playbooks", "route", "generic", "-", "--routing", str(routing)], input=body)
    assert result.exit_code == 0, result.output
    assert "route billing -> technical_failure, severity minor" in result.output
    routing.write_text("version: 1\nroutes:\n  - name: billing\n    incident_type: nope\n")
    result = runner.invoke(app, ["playbooks", "route", "generic", "-", "--routing", str(routing)], input=body)
    assert isinstance(result.exception, PlaybookError)
    assert str(result.exception).startswith(f"{routing}:4:5: routes.0.incident_type:")


def test_sns_confirmation_has_no_alert_and_bad_input_is_named() -> None:
    result = runner.invoke(app, ["playbooks", "route", "sns", str(SAMPLES / "sns-subscription-confirmation.json")])
    assert result.exit_code == 0 and "0 sns alerts" in result.output
    result = runner.invoke(app, ["playbooks", "route", "nagios", "-"], input="{}")
    assert isinstance(result.exception, IrpError)
    assert str(result.exception) == ("unknown source 'nagios'; valid: alertmanager, grafana, sns, eventbridge, "
                                     "pagerduty, generic, report")


def test_errors_are_one_line_without_traceback() -> None:
    result = subprocess.run([sys.executable, "-m", "irp.cli", "playbooks", "route", "generic", "-"], input='{"title": ""}',
                            capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 1
    assert result.stderr == "irp: error: stdin: not a generic payload: title: String should have at least 1 character\n"
