"""Playbook test cases (`playbooks/tests/<type>/*.yaml`): an alert, what the providers answer, what people
decide, and what the playbook must do with them.

    # yaml-language-server: $schema=../../schema/case.schema.json
    name: export sent to the wrong Client, 42 people
    alert: {sample: ../../samples/human_error.json}
    decisions:                                   # the decisions file's list (irp/engine/script.py)
      - {at: 1h, by: alice, close: all, note: "export recalled"}
    expect:
      severity: major
      rule: 3                                    # classification.rules index, or default / hint / operator
      steps:
        recipient_status: completed
        restore_object: {status: skipped, reason: "condition is false"}
      actions:
        - {step: undo_mistake, args: {owner: platform-oncall}}
      notifications:
        - {obligation: "client:acme-callcenter", due: 24h}
      status: closed

Unknown keys are errors, located as FILE:LINE:COL like the playbooks' (irp/playbook/problems.py).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from irp.engine.script import ScriptedDecision, parse_offset
from irp.errors import PlaybookError
from irp.models import Alert, IncidentStatus, Severity, StepStatus
from irp.playbook.models import VarValue
from irp.playbook.problems import Positions, schema_problems

__all__ = ["AwsFact", "Case", "PlatformFact", "Expect", "LoadedCase", "case_json_schema", "load_case"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AlertSample(_Strict):
    """An alert file (JSON, as `irp run --alert` reads it), relative to the case file."""

    sample: str = Field(..., min_length=1, description="Path of the alert file, relative to this case file.")


class AwsError(_Strict):
    code: str = Field(..., min_length=1, description="The AWS error code, e.g. AccessDenied, NoSuchEntity.")
    message: str = ""
    status: int = Field(400, ge=300, le=599, description="HTTP status of the error answer.")


class AwsFact(_Strict):
    """One recorded AWS answer, replayed at botocore's `before-call` (no HTTP request is made)."""

    service: str = Field(..., min_length=1, description="The botocore service name: iam, ec2, s3, logs, wafv2…")
    operation: str = Field(..., min_length=1, description="The API operation: GetAccessKeyLastUsed, DescribeInstances… "
                                                          "(glob: * for every operation of the service).")
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="Only calls whose parameters include these get this answer.")
    response: dict[str, Any] = Field(default_factory=dict, description="The parsed answer botocore returns.")
    error: AwsError | None = Field(None, description="An error answer instead (a provider outage: code "
                                                     "ServiceUnavailable, status 503).")
    repeat: bool = Field(True, description="Answer every matching call (false: the first one only).")


class PlatformFact(_Strict):
    """One recorded answer of the CallCenterRate admin API, replayed at its HTTP client (no request is sent)."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    path: str = Field(..., min_length=1, description="Path under IRP_PLATFORM_API_URL, e.g. users/u-123 (glob: users/*).")
    params: dict[str, Any] = Field(default_factory=dict, description="Query parameters the request must include.")
    body: dict[str, Any] = Field(default_factory=dict, description="JSON body the request must include.")
    status: int = Field(200, ge=100, le=599)
    response: Any = Field(None, description="The JSON answer.")
    repeat: bool = Field(True, description="Answer every matching request (false: the first one only).")


class Facts(_Strict):
    """What the providers answer. A provider present (even empty) counts as configured and every call to it must
    find its answer here; absent, it is not configured and its optional steps are skipped."""

    aws: list[AwsFact] | None = None
    platform: list[PlatformFact] | None = None


class StepExpectation(_Strict):
    status: StepStatus
    reason: str | None = Field(None, description="Text the skip reason or the error must contain.")


class ActionExpectation(_Strict):
    """A step whose action ran (completed) with at least these arguments (a subset match)."""

    step: str = Field(..., min_length=1, description="Step id; `id.initial` / `id.final` for a notify step of one phase.")
    args: dict[str, Any] = Field(default_factory=dict)


class NotificationExpectation(_Strict):
    """A notification owed, and its deadline as an offset from the incident's awareness."""

    obligation: str = Field(..., min_length=1, description="Obligation id: client:ID, gdpr_authority, nis2_…")
    due: timedelta | None = Field(None, description="Offset from awareness: 24h, 72h, 30d.")
    status: Literal["open", "missed", "met", "met_late"] | None = None

    @field_validator("due", mode="before")
    @classmethod
    def _offset(cls, value: Any) -> Any:
        return value if value is None or isinstance(value, timedelta) else parse_offset(value)


class Expect(_Strict):
    """What the run must do; a key left out is not checked."""

    severity: Severity | None = None
    rule: int | Literal["default", "hint", "operator"] | None = Field(
        None, description="The classification rule that set the severity (its index in classification.rules), or "
                          "where it came from when no rule matched.")
    steps: dict[str, StepStatus | StepExpectation] = Field(
        default_factory=dict, description="Step id (`id.initial` / `id.final` for one phase of a notify step) -> "
                                          "status, or status and reason.")
    actions: list[ActionExpectation] = Field(default_factory=list)
    notifications: list[NotificationExpectation] | None = Field(
        None, description="Every notification owed, no more, no fewer (empty: none is owed).")
    status: IncidentStatus | None = Field(None, description="The incident's status when the run ended.")


class Case(_Strict):
    """One test case of a playbook."""

    name: str = Field(..., min_length=1)
    description: str = ""
    alert: Alert | AlertSample
    severity_hint: Severity | None = Field(None, description="As alert routing would pass it.")
    severity: Severity | None = Field(None, description="An operator's override (irp run --severity).")
    dry_run: bool = Field(False, description="Run every step without side effects.")
    vars: dict[str, VarValue] = Field(
        default_factory=dict, description="This deployment's playbook.vars (log groups, web ACL names…) as an operator "
                                          "sets them, over the playbook's own, for this case only.")
    settings: dict[str, str] = Field(
        default_factory=dict, description="IRP_* settings of the deployment the case stands for (e.g. "
                                          "IRP_AWS_WAF_IP_SET_ARN); none that reaches outside (mail, channels, stores, "
                                          "endpoints, credentials).")
    facts: Facts = Field(default_factory=Facts)
    decisions: list[ScriptedDecision] = Field(
        default_factory=list, description="What people decide and when (the decisions file of irp run --decisions).")
    expect: Expect = Field(default_factory=Expect)

    @field_validator("settings")
    @classmethod
    def _settings_inside(cls, value: dict[str, str]) -> dict[str, str]:
        return _inside(value)


_OUTSIDE = ("SMTP", "NOTIFY", "EVIDENCE", "PLATFORM", "CREDENTIALS", "HTTP", "APPROVAL", "WEBHOOK", "INTAKE",
            "PLAYBOOKS_DIR", "ROUTING")


def _inside(settings: dict[str, str]) -> dict[str, str]:
    for name in settings:
        if not name.startswith("IRP_") or any(word in name for word in _OUTSIDE):
            raise ValueError(f"{name}: a case may set IRP_* settings that reach nothing outside this machine; "
                             f"not those naming {', '.join(_OUTSIDE)}")
    return settings


class LoadedCase(BaseModel):
    """A checked case, where it was read from and where each of its keys is."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    case: Case
    path: Path
    positions: Positions

    @property
    def incident_type(self) -> str:
        return self.path.parent.name

    def where(self, *loc: str | int) -> str:
        line, col = self.positions.find(tuple(loc))
        return f"{self.path}:{line}:{col}"


def load_case(path: Path) -> LoadedCase:
    """Read and check a case file; PlaybookError lists every problem as FILE:LINE:COL."""
    from irp.playbook.loader import load_yaml

    plain, positions, _text, _data = load_yaml(path)
    try:
        case = Case.model_validate(plain)
    except ValidationError as exc:
        problems = schema_problems(exc, Case, str(path), positions)
        raise PlaybookError(sorted(_one_per_place(problems), key=lambda p: (p.line, p.col))) from None
    return LoadedCase(case=case, path=path, positions=positions)


def _one_per_place(problems: list) -> list:
    """`alert` is an alert or a sample: pydantic reports both branches; keep the most useful one per key."""
    seen: dict[tuple[int, int, str], Any] = {}
    for problem in problems:
        path = problem.path.replace(".Alert", "").replace(".AlertSample", "")
        key = (problem.line, problem.col, path)
        if key not in seen:
            seen[key] = type(problem)(problem.file, problem.line, problem.col, path, problem.message)
    return list(seen.values())


def case_json_schema() -> dict[str, Any]:
    """The JSON Schema of case files (committed as playbooks/schema/case.schema.json)."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "case.schema.json",
            **Case.model_json_schema()}
