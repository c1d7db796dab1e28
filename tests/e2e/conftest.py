"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from irp.settings import get_settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def playbooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An editable copy of the shipped playbooks, used by the flows of this test."""
    folder = tmp_path / "playbooks"
    shutil.copytree(REPO / "playbooks", folder)
    monkeypatch.setenv("IRP_PLAYBOOKS_DIR", str(folder))
    get_settings.cache_clear()
    return folder


@pytest.fixture(scope="session")
def deployments(prefect_server: str) -> str:
    """The session's Prefect server with every incident flow deployed as <type>/respond."""
    from intake_harness import apply_deployments

    apply_deployments()
    return prefect_server
