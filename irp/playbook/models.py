"""The playbook and routing languages as pydantic models: what a YAML file may say, field by field.

Unknown keys are errors. The JSON schemas of both files (playbooks/schema/*.json) come from here.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from irp.models import AlertSource, IncidentType, Severity, Stage

__all__ = [
    "Approval",
    "Classification",
    "ClassificationRule",
    "DefaultRoute",
    "Playbook",
    "Route",
    "Routing",
    "Stages",
    "Step",
    "playbook_json_schema",
    "playbook_path",
    "routing_json_schema",
]

ROUTE_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
LABEL_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$"


VarValue = str | int | float | bool | list[str]  # playbook.vars values: plain constants


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Approval(_Strict):
    """Human approval required before a step runs (policy §6: disruptive measures)."""

    group: str | None = Field(
        None, pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        description="Approver group of IRP_APPROVERS paged with personal signed links when the step waits.")
    approvers: int = Field(1, ge=1, le=10, description="Distinct people who must approve.")
    escalate_to: str | None = Field(
        None, pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        description="Group of IRP_APPROVERS paged at the timeout, before on_timeout applies.")
    timeout_minutes: float = Field(60, gt=0, description="How long to wait for the decisions.")
    on_timeout: Literal["approve", "reject"] = Field(
        "reject", description="Decision applied, with an escalation, when nobody decided in time."
    )
    verified: bool = Field(
        False, description="Count only decisions made through a signed link (a verified identity), not names "
                           "typed in the Prefect UI; needs `group`.")

    @model_validator(mode="after")
    def _verified_needs_a_group(self) -> Approval:
        if self.verified and self.group is None:
            raise ValueError("verified: true needs a group: only its members get the signed links that verify who "
                             "decides")
        return self


class Step(_Strict):
    """One action of a stage."""

    id: str = Field(..., pattern=r"^[a-z][a-z0-9_]{0,62}$", description="Unique within the playbook.")
    action: str = Field(..., description="Registered action name, e.g. evidence.collect.")
    description: str = Field("", description="What the step does, for responders.")
    args: dict[str, Any] = Field(
        default_factory=dict,
        description="Arguments of the action; strings are Jinja templates over incident, alert, steps.",
    )
    when: str | None = Field(None, description="Jinja expression; the step runs only when it is true.")
    retries: int = Field(0, ge=0, le=10, description="Retries after a failure.")
    retry_delay_seconds: float = Field(2, ge=0, le=3600)
    timeout_seconds: float | None = Field(
        None, gt=0, le=86400, description="Time limit of one attempt; actions also bound their own I/O."
    )
    on_failure: Literal["stop", "continue", "escalate"] = Field(
        "stop", description="stop the run, continue, or escalate to the security team and continue."
    )
    optional: bool = Field(False, description="Skip, recording why, when the integration is not configured.")
    approval: Approval | None = Field(None, description="Require human approval before running.")
    phase: Literal["initial", "final"] | None = Field(
        None, description="notify only: run in the initial or the final notification; both when unset."
    )


class Stages(_Strict):
    """Steps of each stage; stages always run in this order (notify initial runs beside contain)."""

    detect: list[Step] = Field(default_factory=list)
    analyse: list[Step] = Field(default_factory=list)
    contain: list[Step] = Field(default_factory=list)
    restore: list[Step] = Field(default_factory=list)
    notify: list[Step] = Field(default_factory=list)
    review: list[Step] = Field(default_factory=list)

    def items(self) -> Iterator[tuple[Stage, list[Step]]]:
        for stage in Stage:
            yield stage, getattr(self, stage.value)


class ClassificationRule(_Strict):
    """When `when` is true for the incident, its severity is `severity`."""

    when: str = Field(..., description="Jinja expression over incident and alert.")
    severity: Severity
    reason: str = Field(..., min_length=1, description="Why, in the policy's words (§5).")


class Classification(_Strict):
    """Policy §5: rules tried in order, the first true one sets the severity."""

    default: Severity
    rules: list[ClassificationRule] = Field(default_factory=list)


class Playbook(_Strict):
    """A response playbook for one incident type."""

    name: str = Field(..., min_length=1)
    incident_type: IncidentType
    version: str = Field(..., pattern=r"^\d+\.\d+(\.\d+)?$", description="Playbook version, e.g. 1.2.0.")
    policy_version: str = Field(..., description="Date of the policy it implements, e.g. 2026-05-13.")
    owner: str = Field(..., min_length=1, description="Who maintains it.")
    description: str = ""
    vars: dict[str, VarValue] = Field(
        default_factory=dict,
        description="Constants of this deployment the steps read as playbook.vars.NAME (log groups, trail or "
                    "web ACL names...): configuration, never alert data; a step whose `when` tests an unset one is "
                    "skipped.",
    )
    classification: Classification
    stages: Stages

    @field_validator("policy_version")
    @classmethod
    def _date(cls, value: str) -> str:
        try:
            date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a date like 2026-05-13") from None
        return value

    def steps(self) -> Iterator[tuple[Stage, int, Step]]:
        for stage, steps in self.stages.items():
            for index, step in enumerate(steps):
                yield stage, index, step


# --- routing.yaml ----------------------------------------------------------------------------


class Route(_Strict):
    """Alerts matching every matcher open an incident of `incident_type`."""

    name: str = Field(..., pattern=ROUTE_NAME, description="Unique name, shown on the incident and in metrics.")
    description: str = Field("", description="Why this route exists, for the people who maintain it.")
    source: AlertSource | list[AlertSource] | None = Field(
        None, description="Only alerts from this source (or these sources); any source when absent.")
    labels: dict[str, str] = Field(
        default_factory=dict, description="Label equals value; an empty value matches a missing label.")
    labels_regex: dict[str, str] = Field(
        default_factory=dict, description="Label fully matches the regular expression (Python syntax).")
    title_regex: str | None = Field(None, description="The title contains a match of the regular expression.")
    incident_type: IncidentType | None = Field(None, description="The playbook that responds (policy §2).")
    incident_type_label: str | None = Field(
        None, description="Take the incident type from this label instead (e.g. a SIEM rule's category); "
                          "the route matches only when the label holds a valid incident type.")
    severity: Severity | None = Field(None, description="Initial severity hint passed to the run (policy §5).")
    map: dict[str, str] = Field(
        default_factory=dict, description="Labels set from the alert's source document, each a JMESPath expression "
        "(e.g. access_key: detail.resource.accessKeyDetails.accessKeyId); the matchers above see them; a label the "
        "source set is kept; null sets nothing; lists are joined with ','. Data, like every label: never `clients`.")
    severity_label: str | None = Field(
        None, description="Take the severity hint from this label, read through the severity vocabulary "
                          "(IRP_VOCABULARY_SYNONYMS: HIGH -> critical…); `severity` when it holds another value.")
    group_by: list[str] | None = Field(
        None, description="Labels whose values group alerts into one incident; default: one incident per "
                          "alert fingerprint.")
    clients: list[str] = Field(
        default_factory=list, description="The Clients every alert this route matches concerns, as the administrator "
        "states them: trusted for §7 letters (an alert's own tenant label is not). Match on what authenticates the "
        "sender, e.g. an SNS topic or an alert source owned by one Client.")

    def sources(self) -> set[AlertSource] | None:
        if self.source is None:
            return None
        return set(self.source) if isinstance(self.source, list) else {self.source}


class DefaultRoute(_Strict):
    """Where alerts go that no route matches; without it they are recorded as unrouted."""

    incident_type: IncidentType
    severity: Severity | None = None


class Routing(_Strict):
    """The routing file."""

    version: Literal[1] = Field(..., description="Format version of this file: 1.")
    routes: list[Route] = Field(default_factory=list, description="Tried in order; the first match wins.")
    default: DefaultRoute | None = Field(None, description="Route for alerts no route matches.")



def playbook_path(playbooks_dir: Path, incident_type: IncidentType) -> Path:
    """Where the playbook of an incident type lives."""
    return playbooks_dir / f"{IncidentType(incident_type).value}.yaml"


def playbook_json_schema() -> dict[str, Any]:
    """The JSON Schema of playbooks, for editors (yaml-language-server) and `irp playbooks schema`."""
    schema = Playbook.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "playbook.schema.json",
        **schema,
    }


def routing_json_schema() -> dict:
    """The JSON Schema of routing.yaml (committed as playbooks/schema/routing.schema.json)."""
    schema = Routing.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "irp alert routing (playbooks/routing.yaml)"
    return schema
