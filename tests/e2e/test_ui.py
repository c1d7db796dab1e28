"""The Prefect UI as a responder uses it, in headless Chromium (Debian's package, driven by Playwright).

The test starts `irp stack` (its own server, SQLite, worker), opens the declaration form, fills it,
starts the run, waits for the approval pause, decides through the Resume form, and checks the
incident. Screenshots go to test-output/<test name>/.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ruamel.yaml import YAML

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
def ui_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIStack]:
    """`irp stack` on free ports with its own Prefect home, evidence and a playbook with a gate."""
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
               IRP_EVIDENCE_URL=f"file://{root / 'evidence'}", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    log = open(root / "stack.log", "wb")
    process = subprocess.Popen([str(Path(sys.executable).parent / "irp"), "stack", "--port", str(port), "--no-intake"],
                               cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while b"irp stack is up." not in (root / "stack.log").read_bytes():
            assert process.poll() is None, (root / "stack.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "stack did not come up:\n" + (root / "stack.log").read_text()[-3000:]
            time.sleep(1)
        yield UIStack(root, port, process)
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


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


def decide_through_the_resume_form(page, stack: UIStack, run_id: str, decision: str, who: str, reason: str,
                                   shots: Path) -> None:
    page.goto(f"{stack.url}/v2/runs/flow-run/{run_id}")
    page.get_by_role("button", name="Open menu").first.click()
    page.get_by_role("menuitem", name="Resume").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Approval needed").wait_for()
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
                lambda: stack.get(f"/flow_runs/{run_id}")["state_type"] != "PAUSED", shots / "3-resume-retry.png")


def run_declaration(browser, stack: UIStack, title: str, decision: str, who: str, reason: str, shots: Path):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    try:
        declare_through_the_form(page, stack, title, shots)
        paused = stack.wait_for_run(lambda r: r["state_type"] == "PAUSED", what="paused run")
        decide_through_the_resume_form(page, stack, paused["id"], decision, who, reason, shots)
        done = stack.wait_for_run(lambda r: r["id"] == paused["id"] and r["state_type"] in ("COMPLETED", "FAILED"),
                                  what="finished run")
        page.goto(f"{stack.url}/v2/runs/flow-run/{done['id']}")
        page.get_by_text("Completed").first.wait_for(timeout=30_000)
        page.screenshot(path=str(shots / "4-run-completed.png"))
        assert done["state_type"] == "COMPLETED"
        incident_id = done["name"].split()[0]
        return open_store(f"file://{stack.root / 'evidence'}").load_incident(incident_id)
    finally:
        page.close()


def test_approve_from_the_resume_form(ui_stack: UIStack, browser, output_dir: Path) -> None:
    incident = run_declaration(browser, ui_stack, "Agent recordings on a public share", "approve",
                               "Alice Durand", "confirmed with the Client", output_dir)
    assert incident.title == "Agent recordings on a public share"
    assert incident.reporter == "Jeanne Martin, ACME Callcenter DPO" and incident.personal_data.categories == ["call_recordings"]
    assert "step suspend_tenant approved by Alice Durand (1/1): confirmed with the Client" in [
        e.message for e in incident.timeline]
    assert any(e.message.startswith("tenant ") and e.message.endswith(" suspended") for e in incident.timeline)
    names = {item.name for item in open_store(f"file://{ui_stack.root / 'evidence'}").manifest(incident.id)}
    assert "approvals/contain/suspend_tenant.json" in names


def test_reject_from_the_resume_form_skips_the_step(ui_stack: UIStack, browser, output_dir: Path) -> None:
    incident = run_declaration(browser, ui_stack, "Second report, false positive", "reject",
                               "Bob Lefèvre", "the share is internal", output_dir)
    messages = [e.message for e in incident.timeline]
    assert "step suspend_tenant rejected by Bob Lefèvre: the share is internal" in messages
    assert ("step suspend_tenant (timeline.record) skipped: step suspend_tenant rejected by Bob Lefèvre: "
            "the share is internal") in messages
    assert not any(m.endswith(" suspended") for m in messages)
