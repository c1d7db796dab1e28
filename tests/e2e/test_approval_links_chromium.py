"""Approval links end to end: a run on a real Prefect server pauses at a gate needing two verified
approvals, the approvers get the request by mail (aiosmtpd), Chromium opens Alice's link and approves,
her link cannot be used again, Bob approves through his, and the run goes on.

The screenshots (test-output/<test>/) are those of docs/approvals.md: the message and the page.
"""

# ruff: noqa: F811  (pytest fixtures imported from notify_fixtures are parameters here)
from __future__ import annotations

import html
import json
import re
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest
from lifecycle_fixtures import EVERYONE_AGREES
from notify_fixtures import smtp_server, tls_cert  # noqa: F401 (fixtures)
from playbook_copies import edit_playbook
from service_fixtures import AsgiServer

from flows.incidents import INCIDENT_FLOWS
from irp import audit
from irp.alerts import read_alert
from irp.evidence import open_store
from irp.intake.app import create_app
from irp.intake.service import IntakeService
from irp.models import IncidentType
from irp.settings import get_settings

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "playbooks" / "samples" / "data_leak.json"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
ALICE, BOB = "alice@confluent-digital.com", "bob@confluent-digital.com"
GATE = {"id": "suspend_tenant", "action": "timeline.record", "description": "Suspend the Client's tenant",
        "approval": {"group": "oncall", "approvers": 2, "verified": True, "timeout_minutes": 20},
        "args": {"message": "tenant {{ alert.labels.get('tenant') }} suspended"}}

pytestmark = pytest.mark.usefixtures("prefect_server")
if not CHROMIUM:
    pytest.skip("Chromium is not installed (apt-get install chromium); CI installs it", allow_module_level=True)


def wait_for(what: str, probe, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def approve_link(smtp, address: str) -> str:
    mails = smtp.to(address)
    found = re.search(r"http://127\.0\.0\.1:\d+/approvals/[A-Za-z0-9_.\-]+\?decision=approve",
                      mails[-1].message.get_content()) if mails else None
    return found.group(0) if found else ""


def test_two_verified_approvals_through_the_links_resume_the_run(
        smtp_server, tls_cert, playbooks, output_dir, tmp_path, monkeypatch) -> None:
    def gate_only(document) -> None:
        stages = document["stages"]
        stages["contain"], stages["restore"] = [GATE], []
        stages["analyse"] = [s for s in stages["analyse"] if not s["action"].startswith(("aws.", "platform."))]

    edit_playbook(playbooks, "data_leak", gate_only)
    for name, value in {"IRP_SMTP_URL": smtp_server.url, "IRP_SMTP_CA_BUNDLE": str(tls_cert.cert),
                        "IRP_APPROVERS": json.dumps({"oncall": [f"Alice Durand <{ALICE}>", f"Bob Martin <{BOB}>"]}),
                        "IRP_APPROVAL_SECRET": "e2e-approval-secret-0123456789abcdefgh",
                        "IRP_NOTIFY_ATTEMPTS": "1", "IRP_WEBHOOK_TOKEN": "e2e-intake-token",
                        "IRP_INTAKE_JOURNAL": str(tmp_path / "journal.sqlite3")}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    service = IntakeService(get_settings(), create_run=lambda payload: "not used", append_event=lambda i, e: None)
    with AsgiServer(create_app(service)) as intake:
        monkeypatch.setenv("IRP_APPROVAL_BASE_URL", intake.url)
        get_settings.cache_clear()
        result: dict = {}
        alert = read_alert(SAMPLE)
        run = threading.Thread(target=lambda: result.setdefault("state", INCIDENT_FLOWS[IncidentType.data_leak](
            alert=alert, decisions=EVERYONE_AGREES, return_state=True)), daemon=True)
        run.start()
        alice_link = wait_for("the request mailed to Alice", lambda: approve_link(smtp_server, ALICE), 180)
        bob_link = wait_for("the request mailed to Bob", lambda: approve_link(smtp_server, BOB))
        mail = smtp_server.to(ALICE)[-1].message

        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 900, "height": 900})
            headers = "\n".join(f"{k}: {mail[k]}" for k in ("From", "To", "Subject"))
            style = "font:14px monospace;white-space:pre-wrap;word-break:break-all;padding:1rem;max-width:60rem"
            page.set_content(f"<pre style='{style}'>{html.escape(headers)}\n\n{html.escape(mail.get_content())}</pre>")
            page.screenshot(path=str(output_dir / "approval-message.png"), full_page=True)
            page.goto(alice_link)
            assert page.get_by_role("heading").first.inner_text() == "Decide: timeline.record"
            assert "Approval needed: `timeline.record`" in page.locator("pre").inner_text()
            assert page.locator("input[value=approve]").is_checked()
            page.get_by_label("Reason").fill("Checked with the Client's security contact by phone")
            page.screenshot(path=str(output_dir / "approval-page.png"), full_page=True)
            page.get_by_role("button", name="Record my decision").click()
            page.wait_for_load_state()
            assert page.get_by_role("heading").first.inner_text() == "Recorded: you approved timeline.record"
            page.screenshot(path=str(output_dir / "approval-recorded.png"), full_page=True)
            browser.close()

        token = alice_link.split("/approvals/", 1)[1].split("?")[0]
        replay = httpx.post(f"{intake.url}/approvals/{token}", data={"decision": "approve", "reason": "again"})
        assert replay.status_code == 403 and "This link cannot be used" in replay.text
        bob_token = bob_link.split("/approvals/", 1)[1].split("?")[0]
        wait_for("the run waiting for the second approval", lambda: httpx.get(
            f"{intake.url}/approvals/{bob_token}").status_code == 200)
        bob = httpx.post(f"{intake.url}/approvals/{bob_token}", data={"decision": "approve", "reason": "agreed"})
        assert bob.status_code == 200, bob.text
        run.join(180)
    state = result["state"]
    assert state.is_completed(), state.message
    incident_id = state.result().incident_id
    store = open_store(get_settings().evidence_url)
    incident = store.load_incident(incident_id)
    approvals = [e.message for e in incident.timeline if e.step == "suspend_tenant" and e.kind == "approval"]
    assert any("approved by Alice Durand (verified) (1/2)" in m for m in approvals), approvals
    assert any("approved by Bob Martin (verified) (2/2)" in m for m in approvals), approvals
    assert any(e.message == "tenant acme-callcenter suspended" for e in incident.timeline)
    approved = [(e.actor, e.details["verified"]) for e in audit.entries(store, incident_id)
                if e.details["act"] == "approved"]
    assert approved == [("Alice Durand", True), ("Bob Martin", True)]
    refused = [e for e in audit.entries(store, incident_id) if e.details["act"] == "approval_link_refused"]
    assert [e.details["reason"] for e in refused] == ["replayed"]
