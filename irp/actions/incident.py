"""Actions on the incident record (namespace `incident`): scope (§4), severity (§5), personal data and
the notifications due (§7).

Side effects: incident fields (scope, reporter, summary, severity, personal-data facts, obligations),
timeline entries, and obligations/assessment.json archived as evidence.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from irp import templating, vocabulary
from irp.actions.registry import ActionArgs, ActionContext, action
from irp.errors import ActionError
from irp.models import DataCategory, PersonalData
from irp.notifications.obligations import decide
from irp.settings import get_settings
from irp.text import split_list


class ScopeArgs(ActionArgs):
    affected_clients: list[str] = Field(default_factory=list, description="Client ids (list or a,b,c).")
    affected_systems: list[str] = Field(default_factory=list, description="Systems (list or a,b,c).")
    reporter: str | None = Field(None, description="Who reported it.")
    summary: str | None = Field(None, description="One paragraph on what is known.")

    _lists = field_validator("affected_clients", "affected_systems", mode="before")(split_list)


@action
def set_scope(args: ScopeArgs, ctx: ActionContext) -> dict[str, Any]:
    """Record the clients and systems affected, the reporter and a summary.

    Clients read from alert data are recorded as such, unconfirmed: no §7 letter goes to them until a
    responder confirms them (Incident.client_origins); Clients the playbook writes are trusted.
    """
    source = "alert" if "affected_clients" in ctx.from_run_data else "playbook"
    changes: dict[str, Any] = {
        **ctx.incident.with_clients(args.affected_clients, source, by=f"step {ctx.step}"),
        "affected_systems": list(dict.fromkeys([*ctx.incident.affected_systems, *args.affected_systems])),
    }
    if args.reporter is not None:
        changes["reporter"] = args.reporter
    if args.summary is not None:
        changes["summary"] = args.summary
    ctx.update_incident(**changes)
    unconfirmed = [c for c in changes["affected_clients"] if not ctx.incident.client_confirmed(c)]
    if unconfirmed:
        ctx.record(f"Clients named by alert data, not confirmed: {', '.join(unconfirmed)}; §7 letters to them are "
                   f"held until a responder confirms (irp incidents confirm-clients {ctx.incident.id} --clients ... "
                   "--by NAME)", kind="finding", clients=unconfirmed)
    ctx.record(
        f"scope: clients {', '.join(changes['affected_clients']) or 'none known'}; "
        f"systems {', '.join(changes['affected_systems']) or 'none known'}",
        kind="finding",
    )
    return changes


class ClassifyArgs(ActionArgs):
    pass


@action
def classify(args: ClassifyArgs, ctx: ActionContext) -> dict[str, Any]:
    """Set the severity from the playbook's §5 rules (first true rule wins; an operator's choice stands)."""
    incident = ctx.incident
    if incident.severity_source == "operator":
        ctx.record(f"severity {incident.severity.value} kept: set by the operator", kind="classification")
        return {"severity": incident.severity.value, "source": "operator", "reason": incident.severity_reason}
    variables = ctx.template_vars()
    for index, rule in enumerate(ctx.playbook.classification.rules):
        try:
            matched = templating.evaluate(rule.when, variables)
        except Exception as exc:  # a broken rule is reported and skipped: the other rules and the default apply
            ctx.record(f"classification.rules.{index}.when ({rule.when}) cannot be evaluated, rule skipped: {exc}",
                       kind="classification", rule=index)
            continue
        if matched:
            ctx.update_incident(severity=rule.severity, severity_reason=rule.reason, severity_source="rule")
            ctx.record(f"classified {rule.severity.value}: {rule.reason}", kind="classification", rule=index)
            return {"severity": rule.severity.value, "source": "rule", "rule": index, "reason": rule.reason}
    ctx.record(
        f"no classification rule matched; severity stays {incident.severity.value} ({incident.severity_source})",
        kind="classification",
    )
    return {"severity": incident.severity.value, "source": incident.severity_source, "reason": incident.severity_reason}


class PersonalDataArgs(ActionArgs):
    involved: bool = Field(..., description="Whether personal data is involved.")
    categories: list[str] = Field(
        default_factory=list, description="Data categories (list or a,b); synonyms are read as their category "
        "(IRP_VOCABULARY_SYNONYMS), other values are recorded as unclassified for the analyst, never refused.")
    approx_people: int | None = Field(None, ge=0, description="Approximate number of people concerned.")
    approx_records: int | None = Field(None, ge=0, description="Approximate number of records concerned.")
    high_risk: bool = Field(False, description="Likely high risk to people's rights and freedoms.")

    _categories = field_validator("categories", mode="before")(split_list)

    @field_validator("approx_people", "approx_records", mode="before")
    @classmethod
    def _blank_is_unknown(cls, value: Any) -> Any:
        return None if value in ("", None) else value


@action
def assess_personal_data(args: PersonalDataArgs, ctx: ActionContext) -> dict[str, Any]:
    """Record whether personal data is involved, its categories and how many people and records."""
    known, unclassified = vocabulary.data_categories(args.categories)
    facts = PersonalData(**{**args.model_dump(), "categories": known, "unclassified": unclassified})
    ctx.update_incident(personal_data=facts)
    if unclassified:
        ctx.record(f"unclassified data categories {', '.join(map(repr, unclassified))}: not in the vocabulary "
                   f"({', '.join(DataCategory)}); an analyst should classify them (IRP_VOCABULARY_SYNONYMS "
                   "can name them next time)", kind="finding", unclassified=unclassified)
    if facts.involved:
        ctx.record(
            f"personal data involved: {', '.join(facts.categories) or 'categories unknown'}; "
            f"~{facts.approx_people if facts.approx_people is not None else '?'} people, "
            f"~{facts.approx_records if facts.approx_records is not None else '?'} records"
            + ("; high risk" if facts.high_risk else ""),
            kind="finding",
        )
    else:
        ctx.record("no personal data involved", kind="finding")
    return facts.model_dump(mode="json")


class ObligationsArgs(ActionArgs):
    risk: bool | None = Field(
        None, description="Likely risk to people's rights and freedoms (Art. 33(1)); default: personal data involved.")
    high_risk: bool | None = Field(
        None, description="Likely high risk (Art. 34); default: the personal-data assessment.")
    significant: bool = Field(False, description="Significant incident under NIS2 Art. 23(3).")
    gdpr_role: Literal["controller", "processor", ""] = Field(
        "", description="Confluent Digital's role for the data concerned; default: IRP_GDPR_ROLE.")
    language: Literal["fr", "en"] = Field("fr", description="Language of the messages the obligations call for.")


@action
def assess_obligations(args: ObligationsArgs, ctx: ActionContext) -> dict[str, Any]:
    """Decide which notifications are due, to whom and by when (§7; GDPR Art. 33, 34; NIS2 Art. 23)."""
    settings = get_settings()
    incident = ctx.incident
    role = args.gdpr_role or settings.gdpr_role
    if role not in ("controller", "processor"):
        raise ActionError(f"IRP_GDPR_ROLE={role!r}: valid: controller, processor")
    obligations, decisions = decide(
        incident,
        controller=role == "controller",
        for_client=settings.gdpr_notify_for_client,
        risk=incident.personal_data.involved if args.risk is None else args.risk,
        high_risk=incident.personal_data.high_risk if args.high_risk is None else args.high_risk,
        significant=args.significant,
        client_notice_hours=settings.client_notice_hours,
        language=args.language,
    )
    kept = [o for o in incident.obligations if o.id not in {n.id for n in obligations}]
    ctx.update_incident(obligations=[*kept, *obligations])
    assessment = {"aware_at": incident.aware_at.isoformat(), "gdpr_role": role,
                  "notify_for_client": role == "processor" and settings.gdpr_notify_for_client,
                  "decisions": [d.model_dump() for d in decisions],
                  "obligations": [o.model_dump(mode="json") for o in obligations]}
    ctx.archive_json("obligations/assessment.json", assessment, source_system="irp")
    for obligation in obligations:
        ctx.record(f"notification due: {obligation.kind} to {obligation.audience} {obligation.recipient} by "
                   f"{obligation.due_at:%Y-%m-%d %H:%M} UTC ({obligation.basis}; {obligation.clock})",
                   kind="obligation", obligation=obligation.id, due_at=obligation.due_at.isoformat(), gdpr_role=role,
                   notify_for_client=assessment["notify_for_client"])
    not_due = [f"{d.rule} ({d.why})" for d in decisions if not d.due]
    if not_due:  # gdpr_role: the letters take the same legal position (irp/notifications/facts.py)
        ctx.record("not due: " + "; ".join(not_due), kind="obligation", gdpr_role=role,
                   notify_for_client=assessment["notify_for_client"])
    return assessment
