"""Approver groups in configuration and per-step approval blocks, checked against each other."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from irp.cli import app
from irp.playbook.models import Approval
from irp.settings import Settings, get_settings

REPO = Path(__file__).resolve().parents[3]


def _playbook(tmp_path: Path, approval: str) -> Path:
    """account_compromise.yaml with its first approval replaced by `approval` (a block)."""
    lines = (REPO / "playbooks" / "account_compromise.yaml").read_text().splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if line.startswith("      approval: {"))
    path = tmp_path / "account_compromise.yaml"
    path.write_text("".join(lines[:first]) + approval + "".join(lines[first + 1:]))
    return path


class TestApproverGroups:
    def test_members_are_addresses_or_named_urls(self) -> None:
        settings = Settings(approvers={"oncall": ["alice@confluent-digital.com", "Bob <slack://T0/B0/C0>"]})
        assert settings.approvers["oncall"][1] == "Bob <slack://T0/B0/C0>"
        with pytest.raises(ValidationError, match="neither an e-mail address nor an apprise URL"):
            Settings(approvers={"oncall": ["alice"]})
        with pytest.raises(ValidationError, match="needs a name"):
            Settings(approvers={"oncall": ["slack://T0/B0/C0"]})

    def test_a_short_secret_is_refused_saying_how_to_make_one(self) -> None:
        with pytest.raises(ValidationError, match="32 characters or more.*token_urlsafe"):
            Settings(approval_secret="short")

    def test_verified_needs_a_group(self) -> None:
        with pytest.raises(ValidationError, match="verified: true needs a group"):
            Approval(verified=True)


GROUPS = ('{"oncall": ["a@confluent-digital.com", "b@confluent-digital.com"], "managers": ["m@confluent-digital.com"], '
          '"security-leads": ["s@confluent-digital.com"]}')


class TestValidatorAgainstConfiguration:
    APPROVAL = ("      approval:\n        group: nightshift\n        approvers: 3\n        escalate_to: managers\n"
                "        verified: true\n        timeout_minutes: 30\n        on_timeout: reject\n")

    def test_an_unknown_group_is_a_located_problem_when_groups_are_configured(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        path = _playbook(tmp_path, self.APPROVAL)
        monkeypatch.setenv("IRP_APPROVERS", GROUPS)
        get_settings.cache_clear()
        result = CliRunner().invoke(app, ["playbooks", "validate", str(path)])
        assert result.exit_code == 1
        line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "group: nightshift" in text)
        assert re.fullmatch(rf"{re.escape(str(path))}:{line}:9: stages\.contain\.\d+\.approval\.group: approver group "
                            r"'nightshift' is not in IRP_APPROVERS; configured: managers, oncall, security-leads\n",
                            result.stdout)
        assert "escalate_to" not in result.stdout  # managers is configured

    def test_too_few_members_for_the_verified_approvals_needed(self, tmp_path: Path, monkeypatch) -> None:
        path = _playbook(tmp_path, self.APPROVAL.replace("nightshift", "oncall"))
        monkeypatch.setenv("IRP_APPROVERS", GROUPS)
        get_settings.cache_clear()
        result = CliRunner().invoke(app, ["playbooks", "validate", str(path)])
        assert result.exit_code == 1
        assert "approval.approvers: 3 verified approvals needed but group 'oncall' has 2 member(s)" in result.stdout

    def test_without_configured_groups_the_playbook_stays_valid(self, tmp_path: Path, monkeypatch) -> None:
        monkeypatch.delenv("IRP_APPROVERS", raising=False)
        get_settings.cache_clear()
        result = CliRunner().invoke(app, ["playbooks", "validate", str(_playbook(tmp_path, self.APPROVAL))])
        assert result.exit_code == 0, result.stdout


def test_the_base_url_is_an_http_url() -> None:
    assert Settings(approval_base_url="https://irp.confluent-digital.com").approval_base_url.startswith("https://")
    with pytest.raises(ValidationError, match="is not an http\\(s\\) URL"):
        Settings(approval_base_url="irp.confluent-digital.com")
