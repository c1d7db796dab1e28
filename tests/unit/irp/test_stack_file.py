"""The stack leaves where it runs, so the CLI in another shell uses its server (and says so)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from irp.stack import Stack, adopt_running_stack, running_stack, write_stack_file


@pytest.fixture
def no_api_url(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PREFECT_API_URL", "PREFECT_UI_URL", "PREFECT_UI_API_URL"):
        monkeypatch.delenv(name, raising=False)


def test_a_running_stack_is_adopted_and_named(tmp_path: Path, no_api_url: None) -> None:
    path = tmp_path / "stack.json"
    write_stack_file(Stack(port=4321, intake_port=9876), with_intake=True, path=path)
    info = json.loads(path.read_text())
    assert info["api_url"] == "http://127.0.0.1:4321/api" and info["intake_url"] == "http://127.0.0.1:9876"
    note = adopt_running_stack(path)
    assert os.environ["PREFECT_API_URL"] == "http://127.0.0.1:4321/api"
    assert os.environ["PREFECT_UI_URL"] == "http://127.0.0.1:4321"
    assert note and "http://127.0.0.1:4321/api" in note and str(path) in note


def test_a_stale_file_is_ignored(tmp_path: Path, no_api_url: None) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / "stack.json"
    path.write_text(json.dumps({"pid": dead.pid, "api_url": "http://127.0.0.1:1/api"}))
    assert running_stack(path) is None
    assert adopt_running_stack(path) is None and "PREFECT_API_URL" not in os.environ


def test_an_explicit_api_url_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "stack.json"
    write_stack_file(Stack(port=4321), with_intake=False, path=path)
    monkeypatch.setenv("PREFECT_API_URL", "http://elsewhere:4200/api")
    assert adopt_running_stack(path) is None
    assert os.environ["PREFECT_API_URL"] == "http://elsewhere:4200/api"


@pytest.mark.parametrize("text", ["", "{not json", '{"pid": "x"}', "[]"])
def test_an_unreadable_file_is_ignored(tmp_path: Path, no_api_url: None, text: str) -> None:
    path = tmp_path / "stack.json"
    path.write_text(text)
    assert adopt_running_stack(path) is None
