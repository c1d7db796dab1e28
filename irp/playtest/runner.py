"""Running a playbook test case offline, through the real engine, and checking what it did.

The engine (irp/engine/respond.py) runs with the stage tasks' own functions (`.fn`) instead of Prefect task
runs: no Prefect server, no API call, the same code. Settings are the defaults (the operator's IRP_* and
AWS_* are set aside), the evidence store is a temporary folder, AWS answers come from the case's facts
(irp/playtest/replay.py), notifications are rendered and archived, never sent (no channel is configured).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.utilities.annotations import BaseAnnotation

from flows.incidents import STAGE_TASKS
from irp.alerts import read_alert
from irp.engine.records import StepRecord
from irp.engine.respond import RunStopped, StageTasks, respond
from irp.engine.script import Script, ScriptedDecision
from irp.engine.steps import retries_without_delay
from irp.errors import IrpError
from irp.evidence import open_store
from irp.models import Alert, Incident, IncidentType, new_incident_id
from irp.notifications.obligations import Deadline, deadlines
from irp.playbook.cases import Facts, LoadedCase, StepExpectation
from irp.playtest.replay import PLATFORM_URL, AwsRecorder, AwsReplay, PlatformRecorder, PlatformReplay, subset
from irp.settings import get_settings

__all__ = ["CaseError", "Outcome", "Session", "check", "offline_settings", "run_case", "run_playbook", "session"]


class CaseError(IrpError):
    """Raised when a case cannot be run as written (its alert file, its folder); the message says where."""


class _Plain:
    """A stage task called as its function: the same code, without a Prefect task run."""

    def __init__(self, task: Any) -> None:
        self.fn = task.fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        bare = [a.unwrap() if isinstance(a, BaseAnnotation) else a for a in args]
        return self.fn(*bare, **kwargs)

    def submit(self, *args: Any, **kwargs: Any) -> _Done:
        return _Done(self(*args, **kwargs))


@dataclass
class _Done:
    value: Any

    def result(self) -> Any:
        return self.value


_SCRATCH = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # a throwaway store: fsync costs nothing in RAM

OFFLINE_STAGES = StageTasks(**{name: _Plain(getattr(STAGE_TASKS, name))
                               for name in ("detect", "analyse", "contain", "restore", "notify", "review")})


@dataclass
class Outcome:
    """What a run did, as a case's expectations read it."""

    incident: Incident
    steps: dict[str, StepRecord]
    rule: int | str
    deadlines: list[Deadline]
    ended_at: datetime
    unrecorded: list[str] = field(default_factory=list)
    recorded_facts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


@contextmanager
def offline_settings(playbooks_dir: Path, evidence_dir: Path, aws: bool, platform: bool = False,
                     keep_configured: bool = False, settings: dict[str, str] | None = None) -> Iterator[None]:
    """Default settings, no cloud, no Prefect server for the duration; `keep_configured`: the operator's
    settings stay (recording against moto or an account)."""
    saved = dict(os.environ)
    try:
        if not keep_configured:
            for name in [n for n in os.environ if n.startswith(("IRP_", "AWS_"))]:
                del os.environ[name]
            os.environ.update(IRP_ACTION_ATTEMPTS="1", AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
                              AWS_CONFIG_FILE="/nonexistent", AWS_EC2_METADATA_DISABLED="true")
        if aws:  # credentials that reach nothing: every call is answered by the replay hook
            os.environ.update(AWS_ACCESS_KEY_ID="playbook-test", AWS_SECRET_ACCESS_KEY="playbook-test",
                              IRP_AWS_REGION="eu-west-3")
            os.environ.pop("IRP_AWS_CREDENTIALS_BLOCK", None)
        if platform:
            os.environ["IRP_PLATFORM_API_URL"] = PLATFORM_URL
        os.environ.update(settings or {})
        os.environ.update(IRP_EVIDENCE_URL=evidence_dir.as_uri(), IRP_PLAYBOOKS_DIR=str(playbooks_dir))
        get_settings.cache_clear()
        quiet = logging.getLogger("irp")
        level, quiet.level = quiet.level, logging.CRITICAL
        try:
            with temporary_settings(restore_defaults={PREFECT_API_URL}):
                yield
        finally:
            quiet.level = level
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()


def case_alert(loaded: LoadedCase) -> Alert:
    alert = loaded.case.alert
    if isinstance(alert, Alert):
        return alert
    try:
        return read_alert(loaded.path.parent / alert.sample)
    except IrpError as exc:
        raise CaseError(f"{loaded.where('alert', 'sample')}: alert.sample: {exc}") from None


def case_type(loaded: LoadedCase) -> IncidentType:
    try:
        return IncidentType(loaded.incident_type)
    except ValueError:
        raise CaseError(f"{loaded.path}:1:1: a case lives in playbooks/tests/<incident type>/; "
                        f"{loaded.incident_type!r} is not one of {', '.join(t.value for t in IncidentType)}") from None


def run_case(loaded: LoadedCase, playbooks_dir: Path | None = None, record: bool = False) -> Outcome:
    """Run the case's alert through its playbook with its facts and decisions; what happened."""
    case = loaded.case
    playbooks_dir = playbooks_dir or loaded.path.resolve().parents[2]
    incident_type, alert = case_type(loaded), case_alert(loaded)
    facts = case.facts  # recording: the providers the case gives answers for are replayed, the others recorded
    with _with_vars(playbooks_dir, incident_type, case.vars) as folder:
        return run_playbook(incident_type, alert, folder, case.decisions, facts, record=record,
                            severity=case.severity, severity_hint=case.severity_hint, settings=case.settings)


@contextmanager
def _with_vars(playbooks_dir: Path, incident_type: IncidentType, values: dict[str, Any]) -> Iterator[Path]:
    """The playbooks folder, or a copy of the playbook with the case's vars set (templates shared)."""
    if not values:
        yield playbooks_dir
        return
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    source = playbooks_dir / f"{incident_type.value}.yaml"
    document = yaml.load(source.read_text(encoding="utf-8"))
    document.setdefault("vars", {}).update(values)
    with tempfile.TemporaryDirectory(prefix="irp-playtest-vars-", dir=_SCRATCH) as folder:
        with (Path(folder) / source.name).open("w", encoding="utf-8") as handle:
            yaml.dump(document, handle)
        (Path(folder) / "templates").symlink_to((playbooks_dir / "templates").resolve(), target_is_directory=True)
        yield Path(folder)


@dataclass
class Session:
    """An offline engine with its throwaway evidence store and the providers' stand-ins, for one or more runs."""

    replays: list[Any]
    recorders: list[Any]

    def respond(self, incident_type: IncidentType, alert: Alert, decisions: list[ScriptedDecision],
                incident_id: str, severity: Any = None, severity_hint: Any = None) -> None:
        """Run (or continue) the incident until it closes or waits for a decision the script does not give."""
        try:
            respond(incident_type, alert, severity=severity, severity_hint=severity_hint, incident_id=incident_id,
                    decisions=Script(decisions=decisions), stages=OFFLINE_STAGES)
        except RunStopped:
            pass  # the incident's record says so (status stopped)

    def outcome(self, incident_id: str) -> Outcome:
        """What the runs of `incident_id` left: the incident, its step records, its deadlines at its end."""
        store = open_store(get_settings().evidence_url)
        incident = store.load_incident(incident_id)
        steps: dict[str, StepRecord] = {}
        for item in store.manifest(incident_id):
            if item.name.startswith("steps/"):
                with store.open(incident_id, item.name) as handle:
                    record = StepRecord.model_validate_json(handle.read())
                steps[f"{record.id}.{record.phase}" if record.phase else record.id] = record
        ended = incident.closure.at if incident.closure else max(e.at for e in incident.timeline)
        return Outcome(incident=incident, steps=steps, rule=_rule(steps), deadlines=deadlines(incident, ended),
                       ended_at=ended, unrecorded=[c for r in self.replays for c in r.unrecorded],
                       recorded_facts={"aws": self.recorders[0].replayable(), "platform": self.recorders[1].facts}
                       if self.recorders else {})


@contextmanager
def session(playbooks_dir: Path, facts: Facts | None = None, record: bool = False,
            settings: dict[str, str] | None = None) -> Iterator[Session]:
    """`facts`: the providers' answers (a provider absent is not configured); `record`: what is configured answers
    instead, and its answers are kept."""
    facts = facts or Facts()
    with tempfile.TemporaryDirectory(prefix="irp-playtest-", dir=_SCRATCH) as folder, \
            offline_settings(playbooks_dir, Path(folder), aws=facts.aws is not None, platform=facts.platform is not None,
                             keep_configured=record, settings=settings), \
            ExitStack() as hooks:
        hooks.enter_context(retries_without_delay())
        replays = [hooks.enter_context(AwsReplay(facts.aws).installed())] if facts.aws is not None else []
        if facts.platform is not None:
            replays.append(hooks.enter_context(PlatformReplay(facts.platform).installed()))
        recorders = [hooks.enter_context(AwsRecorder().installed()) if facts.aws is None else AwsRecorder(),
                     hooks.enter_context(PlatformRecorder().installed()) if facts.platform is None else PlatformRecorder()
                     ] if record else []
        yield Session(replays, recorders)


def run_playbook(incident_type: IncidentType, alert: Alert, playbooks_dir: Path, decisions: list[ScriptedDecision],
                 facts: Facts | None = None, record: bool = False, severity: Any = None,
                 severity_hint: Any = None, settings: dict[str, str] | None = None) -> Outcome:
    """One whole run of the engine, offline, on a simulated clock; the incident and step records it left."""
    incident_id = new_incident_id()
    with session(playbooks_dir, facts, record, settings) as offline:
        offline.respond(incident_type, alert, decisions, incident_id, severity, severity_hint)
        return offline.outcome(incident_id)


def _rule(steps: dict[str, StepRecord]) -> int | str:
    """The classification rule that set the severity (its index), or where the severity came from."""
    found: int | str = "default"
    for record in steps.values():
        if record.action == "incident.classify" and isinstance(record.output, dict):
            found = record.output.get("rule", record.output.get("source", "default"))
    return found


def step_record(outcome: Outcome, key: str) -> StepRecord | None:
    """`id`, or `id.initial` / `id.final`: a notify step that ran in both phases answers `id` with its initial run."""
    return outcome.steps.get(key) or outcome.steps.get(f"{key}.initial") or outcome.steps.get(f"{key}.final")


def _status_text(record: StepRecord | None) -> str:
    if record is None:
        return "not run (no such step ran in this case)"
    detail = record.reason or record.error or ""
    return f"{record.status.value}" + (f" ({detail})" if detail else "")


def _offset(delta: timedelta) -> str:
    """72h, 30d, 1h30m: days only from a week on, as deadlines are written."""
    seconds = int(delta.total_seconds())
    days, rest = divmod(seconds, 86400) if seconds >= 7 * 86400 else (0, seconds)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    return "".join(f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n) or "0m"


def check(loaded: LoadedCase, outcome: Outcome) -> list[str]:
    """Every expectation the outcome does not meet, as FILE:LINE:COL: expect.KEY: expected X, got Y."""
    expect, failures = loaded.case.expect, []

    def fail(loc: tuple[str | int, ...], message: str) -> None:
        failures.append(f"{loaded.where(*loc)}: {'.'.join(map(str, loc))}: {message}")

    for call in outcome.unrecorded:
        fail(("facts",), f"expected every provider call to have a recorded answer, got none for {call}")
    if expect.severity is not None and outcome.incident.severity != expect.severity:
        fail(("expect", "severity"), f"expected {expect.severity.value}, got {outcome.incident.severity.value} "
                                     f"(rule {outcome.rule})")
    if expect.rule is not None and outcome.rule != expect.rule:
        fail(("expect", "rule"), f"expected {expect.rule}, got {outcome.rule}")
    for key, wanted in expect.steps.items():
        wanted = wanted if isinstance(wanted, StepExpectation) else StepExpectation(status=wanted)
        record = step_record(outcome, key)
        text = (record.reason or record.error or "") if record else ""
        if record is None or record.status != wanted.status or (wanted.reason and wanted.reason not in text):
            expected = wanted.status.value + (f" ({wanted.reason!r})" if wanted.reason else "")
            fail(("expect", "steps", key), f"expected {expected}, got {_status_text(record)}")
    for index, wanted_action in enumerate(expect.actions):
        record = step_record(outcome, wanted_action.step)
        if record is None or record.status.value != "completed":
            fail(("expect", "actions", index), f"expected step {wanted_action.step} to call its action, "
                                               f"got {_status_text(record)}")
            continue
        for name, value in wanted_action.args.items():
            actual = record.args.get(name) if isinstance(record.args, dict) else None
            if not subset(value, actual):
                fail(("expect", "actions", index, "args", name),
                     f"expected {record.action} argument {name}={value!r}, got {actual!r}")
    if expect.notifications is not None:
        owed = {d.obligation.id: d for d in outcome.deadlines}
        aware = outcome.incident.aware_at
        for index, wanted_n in enumerate(expect.notifications):
            found = owed.pop(wanted_n.obligation, None)
            if found is None:
                owed_now = ", ".join(d.obligation.id for d in outcome.deadlines) or "none owed"
                fail(("expect", "notifications", index), f"expected notification {wanted_n.obligation} owed, got {owed_now}")
                continue
            if wanted_n.due is not None and found.due_at - aware != wanted_n.due:
                fail(("expect", "notifications", index, "due"),
                     f"expected {wanted_n.obligation} due {_offset(wanted_n.due)} after awareness, "
                     f"got {_offset(found.due_at - aware)}")
            if wanted_n.status is not None and found.status != wanted_n.status:
                fail(("expect", "notifications", index, "status"),
                     f"expected {wanted_n.obligation} {wanted_n.status}, got {found.status}")
        for extra in owed.values():
            fail(("expect", "notifications"), f"expected no other notification owed, got {extra.obligation.id} "
                                              f"(due {_offset(extra.due_at - aware)} after awareness)")
    if expect.status is not None and outcome.incident.status != expect.status:
        waiting = f" (waits at {outcome.incident.waiting.stage.value})" if outcome.incident.waiting else ""
        fail(("expect", "status"), f"expected {expect.status.value}, got {outcome.incident.status.value}{waiting}")
    return failures


def observed(outcome: Outcome) -> dict[str, Any]:
    """The outcome written as a case's `expect` (irp playbooks test --record)."""
    aware = outcome.incident.aware_at
    steps: dict[str, Any] = {}
    for key, record in outcome.steps.items():
        if record.status.value == "completed":
            steps[key] = "completed"
        else:
            steps[key] = {"status": record.status.value,  # the reason's kind, not this machine's configuration
                          "reason": (record.reason or record.error or "").split(":")[0].split(" after ")[0][:80]}
    return {
        "severity": outcome.incident.severity.value,
        "rule": outcome.rule,
        "steps": steps,
        "notifications": [{"obligation": d.obligation.id, "due": _offset(d.due_at - aware)} for d in outcome.deadlines],
        "status": outcome.incident.status.value,
    }
