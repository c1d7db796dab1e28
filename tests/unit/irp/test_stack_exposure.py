"""`irp stack` bound beyond loopback refuses to start without the UI's and the intake's credentials."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from irp.errors import ConfigurationError
from irp.stack import check_exposure

REPO = Path(__file__).resolve().parents[3]


def test_an_exposed_stack_without_credentials_refuses_to_start_saying_how(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PREFECT_SERVER_API_AUTH_STRING", "IRP_WEBHOOK_TOKEN", "PREFECT_API_URL")}
    env.update(PYTHONPATH=str(REPO), PREFECT_HOME=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "irp.cli", "stack", "--host", "0.0.0.0", "--port", "1",
                             "--intake-port", "2"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    text = " ".join(result.stderr.split())
    assert text.startswith("irp: error: irp stack --host 0.0.0.0 is reachable from other machines; refusing to "
                           "start without: PREFECT_SERVER_API_AUTH_STRING=user:password")
    assert "IRP_WEBHOOK_TOKEN (the bearer token" in text and "keep the default --host 127.0.0.1" in text
    assert "Traceback" not in result.stderr and list(tmp_path.iterdir()) == []  # nothing started


def test_each_missing_credential_is_named() -> None:
    with pytest.raises(ConfigurationError) as caught:
        check_exposure("10.0.0.5", True, {"PREFECT_SERVER_API_AUTH_STRING": "admin:x"})
    assert "IRP_WEBHOOK_TOKEN" in str(caught.value) and "PREFECT_SERVER_API_AUTH_STRING=user:password" not in str(caught.value)
    with pytest.raises(ConfigurationError, match="PREFECT_SERVER_API_AUTH_STRING=user:password"):
        check_exposure("10.0.0.5", False, {"IRP_WEBHOOK_TOKEN": "t"})


def test_loopback_or_both_credentials_start() -> None:
    check_exposure("127.0.0.1", True, {})
    check_exposure("::1", True, {})
    check_exposure("0.0.0.0", True, {"PREFECT_SERVER_API_AUTH_STRING": "admin:x", "IRP_WEBHOOK_TOKEN": "t"})
    check_exposure("0.0.0.0", False, {"PREFECT_SERVER_API_AUTH_STRING": "admin:x"})
