"""The playbook language: shipped playbooks validate, broken ones get exact FILE:LINE:COL messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from irp.cli import app
from irp.errors import PlaybookError
from irp.models import IncidentType
from irp.playbook.loader import load_playbook
from irp.playbook.models import playbook_json_schema

REPO = Path(__file__).resolve().parents[3]
BROKEN = Path(__file__).resolve().parent / "broken"
CASES = sorted(p.name for p in BROKEN.iterdir() if p.is_dir())


class TestShippedPlaybooks:
    @pytest.mark.parametrize("incident_type", list(IncidentType), ids=str)
    def test_every_incident_type_has_a_valid_playbook(self, incident_type: IncidentType) -> None:
        loaded = load_playbook(REPO / "playbooks" / f"{incident_type.value}.yaml")
        assert loaded.playbook.incident_type == incident_type
        assert loaded.ref.policy_version == "2026-05-13"
        assert len(loaded.ref.sha256) == 64

    @pytest.mark.parametrize("incident_type", list(IncidentType), ids=str)
    def test_playbook_points_editors_at_the_committed_schema(self, incident_type: IncidentType) -> None:
        first_line = (REPO / "playbooks" / f"{incident_type.value}.yaml").read_text().splitlines()[0]
        assert first_line == "# yaml-language-server: $schema=schema/playbook.schema.json"

    def test_validate_command_accepts_the_shipped_folder(self) -> None:
        result = CliRunner().invoke(app, ["playbooks", "validate", str(REPO / "playbooks")])
        assert result.exit_code == 0, result.output
        assert "valid" in result.output

    def test_committed_schema_is_current(self) -> None:
        committed = json.loads((REPO / "playbooks" / "schema" / "playbook.schema.json").read_text())
        assert committed == playbook_json_schema(), "run: irp playbooks schema > playbooks/schema/playbook.schema.json"


class TestBrokenPlaybooks:
    @pytest.mark.parametrize("case", CASES)
    def test_problems_are_reported_at_file_line_col(self, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(REPO)
        path = (BROKEN / case / "data_leak.yaml").relative_to(REPO)
        expected = (BROKEN / case / "expected.txt").read_text()
        result = CliRunner().invoke(app, ["playbooks", "validate", str(path)])
        assert result.exit_code == 1
        assert result.stdout == expected

    def test_every_problem_of_a_file_is_listed_at_once(self) -> None:
        with pytest.raises(PlaybookError) as caught:
            load_playbook(BROKEN / "bad_values" / "data_leak.yaml")
        assert len(caught.value.problems) == 5
        assert [p.line for p in caught.value.problems] == sorted(p.line for p in caught.value.problems)

    def test_cli_never_prints_a_traceback(self) -> None:
        files = [str(BROKEN / case / "data_leak.yaml") for case in CASES] + [str(BROKEN / "missing.yaml"), str(BROKEN)]
        env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        result = subprocess.run([sys.executable, "-m", "irp.cli", "playbooks", "validate", *files],
                                capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 1
        assert "Traceback" not in result.stdout + result.stderr
        assert "missing.yaml:1:1: no such file" in result.stdout
        assert f"{len(CASES) + 1} of" in result.stderr

    def test_a_valid_and_an_invalid_file_exit_1(self, tmp_path: Path) -> None:
        result = CliRunner().invoke(app, ["playbooks", "validate", str(REPO / "playbooks" / "data_leak.yaml"),
                                          str(BROKEN / "unknown_action" / "data_leak.yaml")])
        assert result.exit_code == 1
        assert "unknown action 'timeline.recrod'" in result.stdout
