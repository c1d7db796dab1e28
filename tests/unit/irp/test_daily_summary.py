"""The deadline watch and its daily summary see what no playbook took: a triage waiting for its type is
counted, not reported as an unreadable incident; the unrouted alerts are read from the intake's journal
while the intake holds it, and both are sent to the internal recipients (a local webhook receiver)."""

# ruff: noqa: F811  (pytest fixtures imported from notify_fixtures are parameters here)
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from notify_fixtures import webhook  # noqa: F401 (fixture)
from service_fixtures import intake_request

from irp.deadlines import check_deadlines, daily_summary, unrouted_since
from irp.evidence import LocalEvidenceStore
from irp.intake.service import IntakeService
from irp.models import Alert, Severity, utcnow
from irp.settings import Settings
from irp.triage import open_triage

TOKEN = "unit-token"


def settings_for(tmp_path: Path, webhook) -> Settings:
    return Settings(webhook_token=TOKEN, intake_journal=str(tmp_path / "journal.sqlite3"),
                    notify_internal=[webhook.url()], notify_allowlist=["json://127.0.0.1:"],
                    notify_retry_base_seconds=0.01, triage_severities=["critical"])


def test_a_waiting_triage_is_counted_not_a_problem(tmp_path: Path, webhook) -> None:
    store = LocalEvidenceStore(tmp_path / "evidence")
    opened = open_triage(store, settings_for(tmp_path, webhook), Alert(title="Root login", labels={"severity": "critical"}),
                         "INC-20261207-AAAAAA", Severity.critical)
    assert opened.notification.status == "sent" and "[IRP][À TRIER] INC-20261207-AAAAAA" in \
        webhook.requests[0]["body"]["title"]
    report = check_deadlines(store, settings_for(tmp_path, webhook))
    assert report.triage_pending == ["INC-20261207-AAAAAA"] and report.problems == []


def test_the_daily_summary_reads_the_journal_the_intake_holds_and_tells_internal(tmp_path: Path, webhook) -> None:
    settings = settings_for(tmp_path, webhook)
    service = IntakeService(settings, create_run=lambda payload: "run", append_event=lambda i, e: None)
    try:
        for title in ("Disk latency high", "Disk latency high", "Certificate expires in 20 days"):
            intake_request(service, "POST", "/alerts/generic", json={"title": title, "labels": {"severity": "warning"}},
                           headers={"Authorization": f"Bearer {TOKEN}"})
        found = unrouted_since(settings.intake_journal, utcnow() - timedelta(hours=24))
        assert {(a["title"], a["count"]) for a in found} == {("Disk latency high", 2),
                                                              ("Certificate expires in 20 days", 1)}
        assert unrouted_since(settings.intake_journal, utcnow() + timedelta(minutes=1)) == []
        store = LocalEvidenceStore(tmp_path / "evidence")
        open_triage(store, settings, Alert(title="Root login", labels={"severity": "critical"}), "INC-20261207-BBBBBB",
                    Severity.critical)
        summary = daily_summary(store, settings)
    finally:
        service.journal.close()
    assert [d.status for d in summary.deliveries] == ["sent"] and summary.problems == []
    body = webhook.requests[-1]["body"]
    assert body["title"] == "[IRP][Résumé] 2 alerte(s) non routée(s), 1 tri(s) en attente"
    assert "Disk latency high (2 fois" in body["message"] and "INC-20261207-BBBBBB — Root login" in body["message"]


def test_nothing_is_sent_on_a_quiet_day(tmp_path: Path, webhook) -> None:
    summary = daily_summary(LocalEvidenceStore(tmp_path / "evidence"), settings_for(tmp_path, webhook))
    assert summary.deliveries == [] and summary.unrouted == [] and webhook.requests == []
