"""Alert files: one clear error per problem, the document kept verbatim."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from irp.alerts import read_alert
from irp.errors import AlertError
from irp.models import AlertSource

REPO = Path(__file__).resolve().parents[3]


class TestReadAlert:
    def test_sample_is_read_and_kept_verbatim(self) -> None:
        alert = read_alert(REPO / "playbooks" / "samples" / "data_leak.json")
        assert alert.source == AlertSource.generic
        assert alert.raw["labels"]["tenant"] == "acme-callcenter"
        assert alert.observed_at.tzinfo is not None

    def test_fingerprint_is_derived_when_missing(self, tmp_path: Path) -> None:
        (tmp_path / "a.json").write_text('{"title": "x", "labels": {"a": "1"}}')
        (tmp_path / "b.json").write_text('{"title": "x", "labels": {"a": "1"}, "description": "other"}')
        first, second = read_alert(tmp_path / "a.json"), read_alert(tmp_path / "b.json")
        assert first.fingerprint == second.fingerprint and len(first.fingerprint) == 16

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            (b'{"title": "x",', "a.json:1:15: invalid JSON: Expecting property name enclosed in double quotes"),
            (b"[1, 2]", "a.json: expected a JSON object, got list"),
            (b'{"titel": "x"}', "a.json: invalid alert: title: Field required; titel: Extra inputs are not permitted"),
            (b"\xff\xfe\x00", "a.json: not UTF-8 text; an alert is a JSON document"),
            (b'{"title": "x", "observed_at": "yesterday"}', "a.json: invalid alert: observed_at: Input should be"),
        ],
    )
    def test_bad_files_get_one_clear_message(self, tmp_path: Path, content: bytes, message: str) -> None:
        (tmp_path / "a.json").write_bytes(content)
        with pytest.raises(AlertError) as caught:
            read_alert(tmp_path / "a.json")
        assert str(caught.value).startswith(str(tmp_path / message.split(":")[0]) + message[len(message.split(":")[0]):])

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(AlertError, match="no such file"):
            read_alert(tmp_path / "nope.json")


class TestRunCommandErrors:
    """`irp run` fails before starting anything, with one line and no traceback."""

    @pytest.mark.parametrize(
        ("args", "expected"),
        [
            (["run", "data_leak", "--alert", "/nonexistent/alert.json"], "irp: error: /nonexistent/alert.json: no such file"),
            (["run", "data_leek", "--alert", "x.json"], "Invalid value for 'TYPE'"),
            (["run", "data_leak", "--alert", "/"], "irp: error: /: is a directory"),
            (["run", "data_leak", "--alert", str(REPO / "pyproject.toml")], "invalid JSON"),
            (["run", "data_leak", "--alert", str(REPO / "playbooks/samples/data_leak.json"), "--severity", "huge"],
             "Invalid value for '--severity'"),
        ],
    )
    def test_one_line_no_traceback(self, args: list[str], expected: str) -> None:
        env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        result = subprocess.run([sys.executable, "-m", "irp.cli", *args], capture_output=True, text=True,
                                env=env, timeout=120)
        assert result.returncode != 0
        assert expected in result.stderr
        assert "Traceback" not in result.stderr + result.stdout
