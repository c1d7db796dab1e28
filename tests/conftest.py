"""Shared fixtures: no real cloud, a fresh evidence store per test, one Prefect server per session."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "test-output"

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/e2e/ is an end-to-end test (`-m "not e2e"` runs the fast ones)."""
    for item in items:
        if "e2e" in item.path.parts:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def no_cloud(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reaches a real cloud: AWS_* cleared, no shared credentials or config files."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(autouse=True)
def evidence_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh local evidence store for every test."""
    from irp.settings import get_settings

    root = tmp_path / "evidence"
    monkeypatch.setenv("IRP_EVIDENCE_URL", f"file://{root}")
    get_settings.cache_clear()
    yield root
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def prefect_server() -> str:
    """One real Prefect server (SQLite) for the whole session; yields its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield PREFECT_API_URL.value()


@pytest.fixture
def output_dir(request: pytest.FixtureRequest) -> Path:
    """A folder kept after the run for screenshots and reports (test-output/<test name>)."""
    folder = OUTPUT / request.node.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[Callable[[], str]]:
    """Call it for the URL of a fresh PostgreSQL database (IRP_TEST_POSTGRES_URL's server); all are
    dropped at the end of the session. .ci/run starts Debian's PostgreSQL and sets the variable."""
    base = os.environ.get("IRP_TEST_POSTGRES_URL")
    if not base:
        if os.environ.get("CI"):
            pytest.fail("IRP_TEST_POSTGRES_URL is not set: .ci/run starts PostgreSQL and sets it")
        pytest.skip("IRP_TEST_POSTGRES_URL not set (PostgreSQL paths)")
    import psycopg

    created: list[str] = []

    def create() -> str:
        name = f"irp_test_{secrets.token_hex(4)}"
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return base.rsplit("/", 1)[0] + "/" + name

    yield create
    with psycopg.connect(base, autocommit=True) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
