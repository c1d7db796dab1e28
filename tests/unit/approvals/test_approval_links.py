"""Approvers paged with signed links, the intake's approval pages, verified decisions and the gate's rules.

The run's side is the engine's real request_approval in a thread; the intake is the real ASGI app
with its real journal; mail goes to a real SMTP server (aiosmtpd). Only the Prefect pause and
resume are done in process (`PausedRun`): tests/e2e/test_approval_links.py does them on a server.
"""
# ruff: noqa: F811  (pytest fixtures imported from notify_fixtures are parameters here)

from __future__ import annotations

import logging
import queue
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from itsdangerous import URLSafeSerializer
from notify_fixtures import SmtpServer, smtp_server, tls_cert  # noqa: F401 (fixtures)
from service_fixtures import intake_request, make_incident

from irp import audit
from irp.approval_links import action_sha256
from irp.engine.approval import ApprovalOutcome, request_approval
from irp.engine.records import RunContext
from irp.engine.targets import TargetValue
from irp.evidence import open_store
from irp.intake.approvals import PrefectRuns, RunState
from irp.intake.service import IntakeService
from irp.models import Incident, Stage
from irp.playbook.models import Approval
from irp.settings import Settings, get_settings

SECRET = "unit-approval-secret-0123456789abcdef"
ONCALL = ["Alice Durand <alice@confluent-digital.com>", "bob@confluent-digital.com"]
MANAGERS = ["Carla Managers <carla@confluent-digital.com>"]
LINK = re.compile(r"http://irp\.test/approvals/([A-Za-z0-9_.\-]+)\?decision=(approve|reject)")


class PausedRun(PrefectRuns):
    """The Prefect pause (engine side) and resume (intake side), in process."""

    def __init__(self) -> None:
        self.inbox: queue.Queue = queue.Queue()
        self.key: str | None = None
        self.form: Any = None
        self.ended = False
        self.windows: list[float] = []
        self.changed = threading.Condition()
        self.traveller: Any = None

    # engine side: request_approval's `wait`
    def wait(self, form: Any, seconds: float, key: str) -> Any:
        with self.changed:
            self.key, self.form = key, form
            self.windows.append(seconds)
            self.changed.notify_all()
        item = self.inbox.get(timeout=60)
        with self.changed:
            self.key = None
        if item == "time passes":
            self.traveller.shift(timedelta(seconds=seconds))
            return None
        return form.model_validate(item)

    def paused(self, windows: int) -> str:
        """Wait until the run has opened its `windows`-th pause; its key."""
        with self.changed:
            assert self.changed.wait_for(lambda: self.key is not None and len(self.windows) >= windows, timeout=30)
            return self.key

    # intake side: IntakeService(runs=...)
    def state(self, flow_run_id: str) -> RunState:
        if self.ended:
            return RunState("ended", name="Completed")
        return RunState("paused", self.key) if self.key else RunState("running")

    def description(self, flow_run_id: str, pause_key: str) -> str:
        return self.form._description

    def resume(self, flow_run_id: str, run_input: dict) -> None:
        if self.key is None:
            raise RuntimeError("Cannot resume a run that isn't paused!")
        self.inbox.put(run_input)


class Step:
    id, action, description = "suspend_tenant", "platform.suspend_client", "Suspend the Client's tenant"

    def __init__(self, approval: Approval) -> None:
        self.approval = approval


class Gate:
    """request_approval running in a thread, and what it returned."""

    def __init__(self, run: PausedRun, approval: Approval, incident: Incident, render=None) -> None:
        self.run, self.outcome = run, None
        context = RunContext.model_construct(dry_run=False, approvals="pause", script=None)
        targets = [TargetValue("client_id", "client", "acme-callcenter", True)]

        def main() -> None:
            self.outcome = request_approval(Step(approval), Stage.contain, incident, {"client_id": "acme-callcenter"},
                                            context, targets=targets, render=render, wait=run.wait)

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()

    def result(self) -> ApprovalOutcome:
        self.thread.join(30)
        assert self.outcome is not None, "the gate did not end"
        return self.outcome


@pytest.fixture
def settings(smtp_server: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tls_cert) -> Settings:
    monkeypatch.setenv("IRP_SMTP_URL", smtp_server.url)
    monkeypatch.setenv("IRP_SMTP_CA_BUNDLE", str(tls_cert.cert))
    monkeypatch.setenv("IRP_APPROVERS", f'{{"oncall": {_json(ONCALL)}, "managers": {_json(MANAGERS)}}}')
    monkeypatch.setenv("IRP_APPROVAL_SECRET", SECRET)
    monkeypatch.setenv("IRP_APPROVAL_BASE_URL", "http://irp.test")
    monkeypatch.setenv("IRP_NOTIFY_ATTEMPTS", "1")
    monkeypatch.setenv("IRP_WEBHOOK_TOKEN", "intake-token")
    monkeypatch.setenv("IRP_INTAKE_JOURNAL", str(tmp_path / "journal.sqlite3"))
    get_settings.cache_clear()
    return get_settings()


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


@pytest.fixture
def run() -> PausedRun:
    return PausedRun()


@pytest.fixture
def intake(settings: Settings, run: PausedRun) -> Iterator[IntakeService]:
    service = IntakeService(settings, create_run=lambda payload: "run", append_event=lambda i, e: None, runs=run)
    yield service
    service.journal.close()


def links(smtp: SmtpServer, address: str) -> list[tuple[str, str]]:
    """(token, decision) of every link mailed to `address`, oldest first."""
    found = []
    for received in smtp.to(address):
        found += [(m.group(1), m.group(2)) for m in LINK.finditer(received.message.get_content())]
    return found


def approve_link(smtp: SmtpServer, address: str, index: int = -1) -> str:
    return [token for token, decision in links(smtp, address) if decision == "approve"][index]


def post(intake: IntakeService, token: str, decision: str = "approve", reason: str = "checked with the Client"):
    return intake_request(intake, "POST", f"/approvals/{token}", data={"decision": decision, "reason": reason})


def audit_acts(incident_id: str = "INC-TEST-0001") -> list[dict]:
    return [e.details for e in audit.entries(open_store(get_settings().evidence_url), incident_id)]


class TestPaging:
    def test_each_member_receives_the_request_with_personal_links(self, settings, run, smtp_server) -> None:
        Gate(run, Approval(group="oncall", approvers=2, timeout_minutes=30), make_incident())
        run.paused(1)
        alice = smtp_server.to("alice@confluent-digital.com")
        assert len(alice) == 1 and len(smtp_server.to("bob@confluent-digital.com")) == 1
        mail = alice[0].message
        text = mail.get_content()
        assert mail["Subject"].startswith("[irp] approval needed: platform.suspend_client for INC-TEST-0001 by ")
        assert "Hello Alice Durand," in text and "Incident:  INC-TEST-0001" in text
        assert "Action:    platform.suspend_client (stage contain, step suspend_tenant)" in text
        assert "  - client_id (client): acme-callcenter  [chosen by alert data: check it]" in text
        deadline = (datetime.now(UTC) + timedelta(minutes=30)).strftime("%Y-%m-%d %H:")
        assert f"Decide by: {deadline}" in text
        assert [d for _, d in links(smtp_server, "alice@confluent-digital.com")] == ["approve", "reject"]
        assert approve_link(smtp_server, "alice@confluent-digital.com") != approve_link(smtp_server,
                                                                                        "bob@confluent-digital.com")
        run.inbox.put({"decision": "reject", "approver": "Bob", "reason": "no"})

    def test_without_a_secret_nobody_is_paged_and_the_timeline_says_how(self, settings, run, smtp_server,
                                                                        monkeypatch) -> None:
        monkeypatch.delenv("IRP_APPROVAL_SECRET")
        get_settings.cache_clear()
        gate = Gate(run, Approval(group="oncall"), make_incident())
        run.paused(1)
        run.inbox.put({"decision": "reject", "approver": "Bob", "reason": "no"})
        messages = [e.message for e in gate.result().timeline]
        assert smtp_server.messages == []
        assert any("not paged: IRP_APPROVAL_SECRET is not set" in m and "token_urlsafe(32)" in m for m in messages)


class TestPages:
    def test_the_page_shows_what_is_decided_escaped_and_a_get_changes_nothing(self, intake, run, smtp_server) -> None:
        incident = make_incident().model_copy(update={"title": "<script>alert(1)</script> leak"})
        gate = Gate(run, Approval(group="oncall", approvers=1), incident)
        run.paused(1)
        token = approve_link(smtp_server, "alice@confluent-digital.com")
        for _ in range(2):  # a mail scanner, then the person
            page = intake_request(intake, "GET", f"/approvals/{token}?decision=approve")
            assert page.status_code == 200
            assert "&lt;script&gt;alert(1)&lt;/script&gt; leak" in page.text and "<script>" not in page.text
            assert 'value="approve" checked' in page.text and "Alice Durand" in page.text
            assert page.headers["referrer-policy"] == "no-referrer" and page.headers["cache-control"] == "no-store"
        assert run.inbox.empty() and len(run.windows) == 1  # nothing decided by the GETs
        done = post(intake, token)
        assert done.status_code == 200 and "Recorded: you approved platform.suspend_client" in done.text
        outcome = gate.result()
        assert outcome.approved and outcome.verified == ["Alice Durand"]
        assert outcome.decisions[0]["verified"] is True and outcome.decisions[0]["approver"] == "Alice Durand"

    def test_a_decision_without_a_reason_is_asked_again_and_uses_nothing(self, intake, run, smtp_server) -> None:
        gate = Gate(run, Approval(group="oncall"), make_incident())
        run.paused(1)
        token = approve_link(smtp_server, "bob@confluent-digital.com")
        missing = post(intake, token, reason="  ")
        assert missing.status_code == 422 and "give a reason" in missing.text
        assert post(intake, token).status_code == 200
        assert gate.result().approved

    def test_a_decision_for_a_run_that_ended_gets_a_clear_page(self, intake, run, smtp_server) -> None:
        gate = Gate(run, Approval(group="oncall"), make_incident())
        run.paused(1)
        token = approve_link(smtp_server, "alice@confluent-digital.com")
        run.inbox.put({"decision": "reject", "approver": "Bob", "reason": "not now"})
        gate.result()
        run.ended = True
        for method in ("GET", "POST"):
            page = intake_request(intake, method, f"/approvals/{token}",
                                  **({"data": {"decision": "approve", "reason": "late"}} if method == "POST" else {}))
            assert page.status_code == 410
            assert "This response run has ended" in page.text and "Nothing was recorded" in page.text


class TestRefusedLinks:
    def test_forged_altered_expired_and_replayed_links_get_403_without_detail(
            self, intake, run, smtp_server, caplog) -> None:
        with time_machine.travel(datetime.now(UTC), tick=True) as traveller:
            gate = Gate(run, Approval(group="oncall", approvers=2, timeout_minutes=30), make_incident())
            run.paused(1)
            alice = approve_link(smtp_server, "alice@confluent-digital.com")
            bob = approve_link(smtp_server, "bob@confluent-digital.com")
            payload = URLSafeSerializer(SECRET, salt="irp-approval-link-v1").loads(alice)
            forged = URLSafeSerializer("another-secret-of-32-characters-xx", salt="irp-approval-link-v1").dumps(payload)
            body, signature = alice.rsplit(".", 1)
            altered = URLSafeSerializer("x", salt="y").dumps({**payload, "identity": "Mallory"}).rsplit(".", 1)[0] \
                + "." + signature
            refused = []
            with caplog.at_level(logging.WARNING, logger="irp.intake"):
                for token in (forged, altered, alice[:-3] + "AAA", "garbage"):
                    refused += [intake_request(intake, "GET", f"/approvals/{token}"), post(intake, token)]
            assert post(intake, alice).status_code == 200
            run.paused(2)
            refused += [post(intake, alice), intake_request(intake, "GET", f"/approvals/{alice}")]  # replayed
            traveller.shift(timedelta(minutes=31))  # past the links' expiry
            refused.append(post(intake, bob))
            assert {r.status_code for r in refused} == {403}
            assert len({r.text for r in refused}) == 1 and "This link cannot be used" in refused[0].text
            assert sum("approval link refused (forged" in r.message for r in caplog.records) == 8  # 4 tokens, GET and POST
            reasons = [a["reason"] for a in audit_acts() if a["act"] == "approval_link_refused"]
            assert reasons == ["replayed", "replayed", "expired"]
            run.inbox.put({"decision": "reject", "approver": "Bob", "reason": "stop"})
            assert gate.result().verified == ["Alice Durand"]


class TestVerifiedDecisions:
    def test_two_verified_approvals_resume_the_run(self, intake, run, smtp_server) -> None:
        gate = Gate(run, Approval(group="oncall", approvers=2, verified=True), make_incident())
        run.paused(1)
        assert post(intake, approve_link(smtp_server, "alice@confluent-digital.com")).status_code == 200
        run.paused(2)
        assert gate.outcome is None
        assert post(intake, approve_link(smtp_server, "bob@confluent-digital.com")).status_code == 200
        outcome = gate.result()
        assert outcome.approved and sorted(outcome.verified) == ["Alice Durand", "bob@confluent-digital.com"]
        approved = [a for a in audit_acts() if a["act"] == "approved"]
        assert [(a["verified"], a["approvals"]) for a in approved] == [(True, "1/2"), (True, "2/2")]

    def test_a_typed_approval_is_unverified_and_does_not_count_where_verified_is_required(
            self, intake, run, smtp_server) -> None:
        gate = Gate(run, Approval(group="oncall", approvers=1, verified=True), make_incident())
        run.paused(1)
        run.inbox.put({"decision": "approve", "approver": "Alice Durand", "reason": "typed in the UI"})
        run.paused(2)
        assert gate.outcome is None
        assert post(intake, approve_link(smtp_server, "bob@confluent-digital.com")).status_code == 200
        outcome = gate.result()
        assert outcome.verified == ["bob@confluent-digital.com"]
        assert any("typed in the Prefect UI is unverified" in e.message for e in outcome.timeline)
        assert [d["verified"] for d in outcome.decisions] == [False, True]

    def test_the_same_identity_twice_counts_once(self, intake, run, smtp_server) -> None:
        gate = Gate(run, Approval(group="oncall", approvers=2), make_incident())
        run.paused(1)
        assert post(intake, approve_link(smtp_server, "alice@confluent-digital.com")).status_code == 200
        run.paused(2)
        run.inbox.put({"decision": "approve", "approver": " alice durand ".upper(), "reason": "again"})
        run.paused(3)
        assert gate.outcome is None
        assert post(intake, approve_link(smtp_server, "bob@confluent-digital.com")).status_code == 200
        outcome = gate.result()
        assert outcome.approved and outcome.reason == "approved by Alice Durand, bob@confluent-digital.com"
        assert any("ALICE DURAND already approved step suspend_tenant; another person must (one person counts once)" in e.message
                   for e in outcome.timeline)

    def test_the_reporter_cannot_approve(self, intake, run, smtp_server) -> None:
        incident = make_incident().model_copy(update={"reporter": "Alice Durand (Confluent Digital, SOC)"})
        gate = Gate(run, Approval(group="oncall", approvers=1), incident)
        run.paused(1)
        assert post(intake, approve_link(smtp_server, "alice@confluent-digital.com")).status_code == 200
        run.paused(2)
        assert gate.outcome is None
        assert post(intake, approve_link(smtp_server, "bob@confluent-digital.com")).status_code == 200
        outcome = gate.result()
        assert outcome.verified == ["bob@confluent-digital.com"]
        refused = [a for a in audit_acts() if a["act"] == "approval_refused"]
        assert refused and "Alice Durand reported this incident and cannot approve its steps (four-eyes)" \
            in refused[0]["reason"]

    def test_a_changed_argument_voids_an_earlier_approval(self, intake, run, smtp_server) -> None:
        args = {"client_id": "acme-callcenter"}
        gate = Gate(run, Approval(group="oncall", approvers=2), make_incident(), render=lambda: dict(args))
        run.paused(1)
        old_bob = approve_link(smtp_server, "bob@confluent-digital.com")
        args["client_id"] = "globex"  # the facts change while the run waits: seen when it renders again
        assert post(intake, approve_link(smtp_server, "alice@confluent-digital.com")).status_code == 200
        run.paused(2)
        assert post(intake, old_bob).status_code == 200  # bob approved what he was shown: acme-callcenter
        run.paused(3)
        assert gate.outcome is None
        again = smtp_server.to("alice@confluent-digital.com")[-1].message
        assert again["Subject"].startswith("[irp] Again: approval needed") and '"client_id": "globex"' in \
            again.get_content()
        assert post(intake, approve_link(smtp_server, "alice@confluent-digital.com")).status_code == 200
        run.paused(4)  # the run takes Alice's approval and waits again before Bob's link can resume it
        assert post(intake, approve_link(smtp_server, "bob@confluent-digital.com")).status_code == 200
        outcome = gate.result()
        assert outcome.approved
        assert any("earlier approvals void (Alice Durand); asking again" in e.message for e in outcome.timeline)
        voids = [a for a in audit_acts() if a["act"] == "approval_void"]
        assert voids[0]["void"] == ["Alice Durand"]
        assert voids[1]["link_sha256"] == action_sha256("platform.suspend_client", {"client_id": "acme-callcenter"})
        assert voids[1]["action_sha256"] == action_sha256("platform.suspend_client", {"client_id": "globex"})


class TestEscalation:
    def test_a_reminder_then_the_backup_group_is_paged_at_the_timeout(self, intake, run, smtp_server,
                                                                     monkeypatch) -> None:
        with time_machine.travel(datetime(2026, 12, 7, 3, 0, tzinfo=UTC), tick=True) as traveller:
            run.traveller = traveller
            gate = Gate(run, Approval(group="oncall", approvers=1, timeout_minutes=30, escalate_to="managers"),
                        make_incident())
            run.paused(1)
            assert 20 * 60 - 5 < run.windows[0] <= 20 * 60  # until the reminder, 10 min before the timeout (the clock ticks)
            assert smtp_server.to("carla@confluent-digital.com") == []
            run.inbox.put("time passes")
            run.paused(2)
            reminder = smtp_server.to("alice@confluent-digital.com")[-1].message
            assert reminder["Subject"].startswith("[irp] Reminder: approval needed")
            assert 10 * 60 - 5 < run.windows[1] <= 10 * 60
            run.inbox.put("time passes")
            run.paused(3)
            escalation = smtp_server.to("carla@confluent-digital.com")
            assert len(escalation) == 1 and escalation[0].message["Subject"].startswith("[irp] Escalation:")
            assert "reject applies at 2026-12-07 03:45 UTC unless you decide" in escalation[0].message.get_content()
            assert 15 * 60 - 5 < run.windows[2] <= 15 * 60
            assert post(intake, approve_link(smtp_server, "carla@confluent-digital.com")).status_code == 200
            outcome = gate.result()
            assert outcome.approved and outcome.verified == ["Carla Managers"]

    def test_nobody_deciding_after_the_escalation_applies_on_timeout(self, intake, run, smtp_server) -> None:
        with time_machine.travel(datetime(2026, 12, 7, 3, 0, tzinfo=UTC), tick=True) as traveller:
            run.traveller = traveller
            gate = Gate(run, Approval(group="oncall", timeout_minutes=5, escalate_to="managers"), make_incident())
            for window in (1, 2):
                run.paused(window)
                run.inbox.put("time passes")
            outcome = gate.result()
            assert not outcome.approved and outcome.timed_out
            assert "timed out after 5 min (0/1 approvals); default applied: reject" in outcome.reason
            assert len(smtp_server.to("carla@confluent-digital.com")) == 1


def test_a_link_never_resumes_the_pause_of_another_step_whose_id_it_prefixes(intake, run, smtp_server) -> None:
    gate = Gate(run, Approval(group="oncall"), make_incident())
    run.paused(1)
    token = approve_link(smtp_server, "alice@confluent-digital.com")
    run.key = "approval-contain-suspend-tenant-all-0"  # the run now waits at step suspend_tenant_all
    page = post(intake, token)
    assert page.status_code == 409 and "does not wait for a decision now" in page.text
    assert run.inbox.empty()
    run.key = "approval-contain-suspend-tenant-0"
    assert post(intake, token).status_code == 200  # not used by the refusal
    assert gate.result().approved
