"""The Prefect UI as a responder uses it, in headless Chromium (Debian's package, driven by Playwright).

The test starts `irp stack` (its own server, SQLite, worker), opens the declaration form, fills it,
starts the run, waits for the approval pause, decides through the Resume form, and checks the
incident. Screenshots go to test-output/<test name>/.
"""

from __future__ import annotations

# ruff: noqa: F811  (pytest fixtures imported from notify_fixtures are parameters here)
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from notify_fixtures import running_smtp, tls_cert  # noqa: F401 (fixture)
from ruamel.yaml import YAML
from stack_process import irp_stack

from irp.errors import EvidenceError
from irp.evidence import open_store

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]

if not CHROMIUM and not os.environ.get("CI"):
    pytest.skip("Chromium is not installed (apt-get install chromium); CI installs it", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UIStack:
    def __init__(self, root: Path, port: int, process: subprocess.Popen) -> None:
        self.root, self.port, self.process = root, port, process
        self.url = f"http://127.0.0.1:{port}"
        self.api = f"{self.url}/api"

    def get(self, path: str) -> dict:
        return httpx.get(f"{self.api}{path}", timeout=10).json()

    def post(self, path: str, body: dict) -> list | dict:
        return httpx.post(f"{self.api}{path}", json=body, timeout=10).json()

    def deployment_id(self, name: str) -> str:
        return self.get(f"/deployments/name/{name}")["id"]

    def flow_runs(self) -> list[dict]:
        return self.post("/flow_runs/filter", {"sort": "START_TIME_DESC", "limit": 50})

    def wait_for_run(self, predicate, timeout: float = 240, what: str = "flow run") -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for run in self.flow_runs():
                if predicate(run):
                    return run
            time.sleep(1)
        raise AssertionError(f"no {what} after {timeout:.0f} s; runs: "
                             + ", ".join(f"{r['name']}={r['state_type']}" for r in self.flow_runs()))


@pytest.fixture(scope="module")
def ui_smtp(tls_cert) -> Iterator:
    """The stack's mail server (aiosmtpd, STARTTLS and AUTH)."""
    with running_smtp(tls_cert) as server:
        yield server


@pytest.fixture(scope="module")
def ui_stack(tmp_path_factory: pytest.TempPathFactory, ui_smtp, tls_cert) -> Iterator[UIStack]:
    """`irp stack` on free ports with its own Prefect home, evidence, mail and a playbook with a gate."""
    root = tmp_path_factory.mktemp("ui-stack")
    shutil.copytree(REPO / "playbooks", root / "playbooks")
    yaml = YAML()
    path = root / "playbooks" / "data_leak.yaml"
    playbook = yaml.load(path)
    playbook["stages"]["contain"].insert(0, {
        "id": "suspend_tenant", "action": "timeline.record", "description": "Suspend the tenant's exports (§6).",
        "approval": {"approvers": 1, "timeout_minutes": 20},
        "args": {"message": "tenant {{ incident.affected_clients | join(',') }} suspended"},
    })
    yaml.dump(playbook, path)
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(root / "prefect"), IRP_PLAYBOOKS_DIR=str(root / "playbooks"),
               IRP_EVIDENCE_URL=f"file://{root / 'evidence'}", PREFECT_SERVER_ANALYTICS_ENABLED="false",
               IRP_SMTP_URL=ui_smtp.url, IRP_SMTP_CA_BUNDLE=str(tls_cert.cert),
               IRP_NOTIFY_AUTHORITIES='{"cnil": ["cnil-filing@confluent-digital.com"]}')
    with irp_stack(root, env, "--port", str(port), "--no-intake") as process:
        stack = UIStack(root, port, process)
        stack.smtp = ui_smtp
        yield stack


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "Chromium is required in CI"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def click_until(button, done, screenshot: Path, attempts: int = 3, wait: float = 20) -> None:
    """Click until `done()` holds: a click the busy UI swallowed is repeated, never one that took effect."""
    for _ in range(attempts):
        button.click()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if done():
                return
            time.sleep(0.5)
        button.page.screenshot(path=str(screenshot), full_page=True)
    raise AssertionError(f"clicking {button} had no effect after {attempts} attempts; see {screenshot}")


def declare_through_the_form(page, stack: UIStack, title: str, shots: Path) -> None:
    """Open the declare deployment, fill the run form as a person would, submit it."""
    page.goto(f"{stack.url}/v2/deployments/deployment/{stack.deployment_id('declare_incident/declare')}/run")
    page.get_by_role("button", name="Select Incident type").click()
    page.get_by_role("option", name="data_leak", exact=True).click()
    page.get_by_label("Title").fill(title)
    page.get_by_label("Reported by").fill("Jeanne Martin, ACME Callcenter DPO")
    page.get_by_label("Description (Optional)").fill("Recordings of our agents were found on a public file share.")
    page.get_by_role("button", name="Select DataCategory").click()
    page.get_by_role("option", name="call_recordings", exact=True).click()
    page.keyboard.press("Escape")
    page.screenshot(path=str(shots / "1-form.png"), full_page=True)
    declared = lambda r: r["parameters"].get("report", {}).get("title") == title  # noqa: E731
    click_until(page.get_by_role("button", name="Submit"), lambda: any(declared(r) for r in stack.flow_runs()),
                shots / "2-submit-retry.png")
    stack.wait_for_run(declared, what="declared run")
    page.screenshot(path=str(shots / "2-run-started.png"))


def open_resume_form(page, stack: UIStack, run_id: str, heading: str):
    page.goto(f"{stack.url}/v2/runs/flow-run/{run_id}")
    page.get_by_role("button", name="Open menu").first.click()
    page.get_by_role("menuitem", name="Resume").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text(heading).first.wait_for()
    return dialog


def decide_through_the_resume_form(page, stack: UIStack, run_id: str, decision: str, who: str, reason: str,
                                   shots: Path) -> None:
    dialog = open_resume_form(page, stack, run_id, "Approval needed")
    text = dialog.inner_text()
    assert "suspend_tenant" in text and "timeline.record" in text and "Suspend the tenant" in text
    assert "severity" in text and "major" in text
    if decision != "approve":
        dialog.get_by_role("button", name="Select Decision").click()
        page.get_by_role("option", name=decision, exact=True).click()
    dialog.get_by_label("Your name").fill(who)
    dialog.get_by_label("Reason").fill(reason)
    page.screenshot(path=str(shots / f"3-resume-{decision}.png"))
    click_until(dialog.get_by_role("button", name="Resume"),
                lambda: stack.get(f"/flow_runs/{run_id}")["state_name"] != "Paused", shots / "3-resume-retry.png")


def _record(store, incident_id: str):
    """The incident's record, or None before it is written (its folder exists from the first archived item)."""
    try:
        return store.load_incident(incident_id)
    except EvidenceError:
        return None


def suspended_at(stack: UIStack, incident_id: str, stage: str, timeout: float = 240):
    """The incident once its response run is suspended waiting at `stage` (no worker busy with it)."""
    store = open_store(f"file://{stack.root / 'evidence'}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (incident := _record(store, incident_id)) is not None:
            runs = [stack.get(f"/flow_runs/{i}") for i in incident.flow_run_ids[-1:]]
            if incident.waiting and incident.waiting.stage.value == stage and runs and \
                    runs[0]["state_name"] == "Suspended":
                return incident, runs[0]
        time.sleep(1)
    raise AssertionError(f"{incident_id} did not wait at {stage} within {timeout:.0f} s")


def irp_cli(stack: UIStack, *args: str) -> str:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.update(PREFECT_API_URL=stack.api, IRP_EVIDENCE_URL=f"file://{stack.root / 'evidence'}",
               IRP_PLAYBOOKS_DIR=str(stack.root / "playbooks"))
    done = subprocess.run([str(Path(sys.executable).parent / "irp"), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def run_declaration(browser, stack: UIStack, title: str, decision: str, who: str, reason: str, shots: Path):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    try:
        declare_through_the_form(page, stack, title, shots)
        paused = stack.wait_for_run(lambda r: r["state_name"] == "Paused", what="paused run")
        decide_through_the_resume_form(page, stack, paused["id"], decision, who, reason, shots)
        incident_id = paused["name"].split()[0]
        incident, run = suspended_at(stack, incident_id, "contain")  # the response now waits for its measures
        page.goto(f"{stack.url}/v2/runs/flow-run/{run['id']}")
        page.get_by_text("Suspended").first.wait_for(timeout=30_000)
        page.screenshot(path=str(shots / "4-run-waits-at-contain.png"))
        return incident
    finally:
        page.close()


def test_approve_from_the_resume_form(ui_stack: UIStack, browser, output_dir: Path) -> None:
    incident = run_declaration(browser, ui_stack, "Agent recordings on a public share", "approve",
                               "Alice Durand", "confirmed with the Client", output_dir)
    assert incident.title == "Agent recordings on a public share"
    assert incident.reporter == "Jeanne Martin, ACME Callcenter DPO" and incident.personal_data.categories == ["call_recordings"]
    assert "step suspend_tenant approved by Alice Durand (unverified) (1/1): confirmed with the Client" in [
        e.message for e in incident.timeline]
    assert any(e.message.startswith("tenant ") and e.message.endswith(" suspended") for e in incident.timeline)
    names = {item.name for item in open_store(f"file://{ui_stack.root / 'evidence'}").manifest(incident.id)}
    assert "approvals/contain/suspend_tenant.json" in names


def test_reject_from_the_resume_form_skips_the_step(ui_stack: UIStack, browser, output_dir: Path) -> None:
    incident = run_declaration(browser, ui_stack, "Second report, false positive", "reject",
                               "Bob Lefèvre", "the share is internal", output_dir)
    messages = [e.message for e in incident.timeline]
    assert "step suspend_tenant rejected by Bob Lefèvre (unverified): the share is internal" in messages
    assert ("step suspend_tenant (timeline.record) skipped: step suspend_tenant rejected by Bob Lefèvre (unverified): "
            "the share is internal") in messages
    assert not any(m.endswith(" suspended") for m in messages)


def test_the_review_outcome_from_the_resume_form_closes_the_incident(ui_stack: UIStack, browser, output_dir: Path) -> None:
    """The whole life in the UI: approval, measures ended from the CLI, the review recorded in the form, closure."""
    incident = run_declaration(browser, ui_stack, "Recordings exported by a contractor", "approve",
                               "Alice Durand", "confirmed with the Client", output_dir)
    note = "done outside irp for this test"
    irp_cli(ui_stack, "incidents", "advance", incident.id, "analyse", "--by", "Claire DPO", "--note", note)
    said = irp_cli(ui_stack, "incidents", "advance", incident.id, "contain", "--by", "Alice Durand", "--note", note)
    assert "resumed flow run" in said
    suspended_at(ui_stack, incident.id, "restore")
    irp_cli(ui_stack, "incidents", "advance", incident.id, "restore", "--by", "Bob Martin", "--note", "exports checked")
    waiting, run = suspended_at(ui_stack, incident.id, "review")
    assert "awaiting review" in irp_cli(ui_stack, "incidents", "show", incident.id)
    page = browser.new_page(viewport={"width": 1400, "height": 1300})
    try:
        dialog = open_resume_form(page, ui_stack, run["id"], "waits at")
        assert "review" in dialog.inner_text()
        dialog.get_by_label("Your name").fill("Claire DPO")
        dialog.get_by_label("Causes").fill("A contractor's export token was never revoked.")
        dialog.get_by_label("What worked").fill("The DLP alert came within minutes.")
        dialog.get_by_label("What did not work").fill("Nobody owned contractor offboarding.")
        dialog.get_by_label("Corrective actions").fill("title=Revoke contractor tokens at offboarding,owner=it-lead,"
                                                       "due=2027-01-31")
        page.screenshot(path=str(output_dir / "5-review-form.png"), full_page=True)
        store = open_store(f"file://{ui_stack.root / 'evidence'}")
        click_until(dialog.get_by_role("button", name="Resume"),
                    lambda: store.load_incident(incident.id).review is not None, output_dir / "5-review-retry.png")
    finally:
        page.close()
    suspended_at(ui_stack, incident.id, "notify")  # the letters are owed: no mail channel in this stack
    irp_cli(ui_stack, "incidents", "advance", incident.id, "notify", "--by", "Claire DPO",
            "--note", "CNIL notified through its online form")
    done = ui_stack.wait_for_run(lambda r: r["id"] == run["id"] and r["state_type"] in ("COMPLETED", "FAILED"),
                                 what="finished run")
    assert done["state_type"] == "COMPLETED"
    closed = store.load_incident(incident.id)
    assert closed.status.value == "closed" and closed.review.by == "Claire DPO"
    assert closed.review.causes == "A contractor's export token was never revoked."
    assert any(a.title == "Revoke contractor tokens at offboarding" and a.owner == "it-lead" for a in closed.actions)


def test_a_letter_to_the_cnil_leaves_once_its_reviewer_approves_it_on_the_form(ui_stack: UIStack, browser,
                                                                                output_dir: Path) -> None:
    """No external message leaves unreviewed: the held letter waits in its own run; the DPO approves it there."""
    incident = run_declaration(browser, ui_stack, "Recordings on a share, CNIL letter", "approve",
                               "Alice Durand", "confirmed with the Client", output_dir)
    cnil = "cnil-filing@confluent-digital.com"
    assert ui_stack.smtp.to(cnil) == []  # held: nothing left before the review
    review = ui_stack.wait_for_run(lambda r: r["name"] == f"{incident.id} review gdpr_authority"
                                   and r["state_name"] == "Suspended", what="the letter's review run")
    page = browser.new_page(viewport={"width": 1400, "height": 1300})
    try:
        dialog = open_resume_form(page, ui_stack, review["id"], "Violation de données personnelles")
        text = dialog.inner_text()
        assert "deadline" in text and "Violation de données personnelles" in text
        dialog.get_by_label("Your name").fill("Claire Petit (DPO)")
        page.screenshot(path=str(output_dir / "6-letter-review-form.png"), full_page=True)
        click_until(dialog.get_by_role("button", name="Resume"), lambda: ui_stack.smtp.to(cnil),
                    output_dir / "6-letter-review-retry.png")
    finally:
        page.close()
    done = ui_stack.wait_for_run(lambda r: r["id"] == review["id"] and r["state_type"] in ("COMPLETED", "FAILED"),
                                 what="the review run to end")
    assert done["state_type"] == "COMPLETED"
    [letter] = ui_stack.smtp.to(cnil)  # exactly one
    assert letter.message["Subject"].startswith("Violation de données personnelles (RGPD, art. 33)")
    store = open_store(f"file://{ui_stack.root / 'evidence'}")
    sent = [n for n in store.load_incident(incident.id).notifications if n.obligation == "gdpr_authority"]
    assert any(n.reviewed_by == "Claire Petit (DPO)" for n in sent) or any(
        e.kind == "notification" and "approved by Claire Petit (DPO)" in e.message
        for e in store.load_incident(incident.id).timeline)
