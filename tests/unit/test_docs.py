"""The README stays true: the action catalogue and the configuration match the code."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from irp.settings import Settings

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def test_generated_tables_are_current() -> None:
    """The action catalogue and the settings table match the registry and irp/settings.py."""
    spec = importlib.util.spec_from_file_location("update_readme", REPO / "scripts" / "update_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.readme_with_tables(README) == README, "run: .venv/bin/python scripts/update_readme.py"


def test_every_setting_is_documented() -> None:
    missing = [f"IRP_{name.upper()}" for name in Settings.model_fields if f"`IRP_{name.upper()}`" not in README]
    assert missing == []


def test_quick_start_is_two_commands() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = quick_start.split("```sh", 1)[1].split("```", 1)[0].strip().splitlines()
    assert [c.split("#")[0].strip() for c in commands] == ["./start.sh", ".venv/bin/pytest"]
