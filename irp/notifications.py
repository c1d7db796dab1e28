"""Notifications: render a template, send it to the configured recipients, archive both (§7, §12, §14).

`dispatch` is the one path every message takes, from a run (tasks/notify.py), from the deadline
watch (flows/deadlines.py) or from `irp incidents notify`: recipients are looked up in the
configuration by audience and key (a Client id, an authority), never taken from alert data; the
rendered message and each delivery result are archived in the evidence store; a notification past
its deadline goes only with the reasons for the delay (GDPR Art. 33(1)). A message to a Client goes
only when the incident's Client is confirmed (`client_hold`): one named by alert data alone is held,
an unknown one is never mailed; both are left to the caller to report to the internal recipients.

`validate_templates` is what `irp playbooks validate` checks in playbooks/templates/: every message
template renders on sample incidents, sets a subject, and says what the rules require (§7's five
contents in Client letters, Art. 33(3)(a)–(d) in authority notifications, Art. 34(2) to people,
NIS2 Art. 23(4) in the NIS2 reports).
"""

from __future__ import annotations

import re
import secrets as _secrets
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from jinja2 import TemplateNotFound, TemplateSyntaxError
from jinja2.exceptions import TemplateError
from jinja2.sandbox import SandboxedEnvironment

from irp.channels import Message, deliver
from irp.errors import ActionError
from irp.evidence import CollectedBy, EvidenceStore
from irp.models import Delivery, Incident, NotificationRecord, Obligation, utcnow
from irp.obligations import deadlines, late_reasons
from irp.settings import Settings
from irp.templating import file_environment, render_subject_body

__all__ = [
    "Audience",
    "NotificationError",
    "client_hold",
    "Rendered",
    "dispatch",
    "outside_context",
    "recipients_for",
    "render",
    "validate_templates",
]

Audience = Literal["client", "authority", "internal", "data_subjects"]
HTML_LAYOUT = "email.html.j2"
CONTACTS = {"security": "security@confluent-digital.com", "dpo": "dpo@confluent-digital.com"}


class NotificationError(ActionError):
    """Raised when a message cannot be rendered: missing template, template error."""


@dataclass(frozen=True)
class Rendered:
    """A rendered message."""

    subject: str
    text: str
    html: str | None


def _when(value: Any, language: str = "fr") -> str:
    """An ISO timestamp (or datetime) as a readable UTC time: 20/11/2026 09:14 UTC (fr)."""
    if value in (None, ""):
        return "—"
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return f"{moment:%d/%m/%Y %H:%M} UTC" if language == "fr" else f"{moment:%Y-%m-%d %H:%M} UTC"


@lru_cache(maxsize=8)
def _environment(folder: Path) -> SandboxedEnvironment:
    """One environment per folder: compiled templates are cached, and reloaded when a file changes."""
    env = file_environment(str(folder))
    env.filters["when"] = _when
    return env


def render(folder: Path, template: str, language: str, context: dict[str, Any]) -> Rendered:
    """Render `<template>.<language>.md.j2` to a subject, a text body and an HTML alternative (autoescaped)."""
    name = f"{template}.{language}.md.j2"
    env = _environment(folder)
    try:
        subject, text = render_subject_body(env.get_template(name), context)  # bounded; subject on one line
    except TemplateNotFound:
        raise NotificationError(f"no template {name} in {folder}") from None
    except TemplateError as exc:
        raise NotificationError(f"template {name}: {exc}") from None
    if not subject:
        raise NotificationError(f"template {name} sets no subject ({{% set subject = ... %}})")
    html = None
    if (folder / HTML_LAYOUT).is_file():
        try:
            _, html = render_subject_body(env.get_template(HTML_LAYOUT), {"subject": subject, "body": text, "language": language})
        except TemplateError as exc:
            raise NotificationError(f"template {HTML_LAYOUT}: {exc}") from None
    return Rendered(subject, text, html)


def recipients_for(settings: Settings, audience: str, key: str) -> tuple[list[str], str]:
    """The configured recipients of `audience`/`key` and the setting they come from."""
    if audience == "internal":
        return list(settings.notify_internal), "IRP_NOTIFY_INTERNAL"
    if audience == "client":
        return list(settings.notify_clients.get(key, [])), "IRP_NOTIFY_CLIENTS"
    if audience == "authority":
        return list(settings.notify_authorities.get(key, [])), "IRP_NOTIFY_AUTHORITIES"
    found = settings.notify_data_subjects.get(key) or settings.notify_data_subjects.get("*", [])
    return list(found), "IRP_NOTIFY_DATA_SUBJECTS"


def client_hold(incident: Incident, settings: Settings, audience: str, key: str,
                obligation: Obligation | None = None) -> tuple[str, str]:
    """Why a message to Client `key` must not go: ("unknown_client" | "unconfirmed_client", reason), or ("", "")."""
    if audience not in ("client", "data_subjects") or key in ("", "*"):
        return "", ""
    if key not in settings.notify_clients and not (audience == "data_subjects" and key in settings.notify_data_subjects):
        return "unknown_client", (f"no recipient configured for {audience} {key!r} (IRP_NOTIFY_CLIENTS): not a "
                                  "configured Client, never mailed; reported to the internal recipients")
    if incident.client_confirmed(key):
        return "", ""
    send = f"irp incidents notify {incident.id} {obligation.id}" if obligation else "irp incidents notify"
    return "unconfirmed_client", (f"held: awaiting confirmation of the affected Clients ({key!r} was named by alert "
                                  f"data); confirm with: irp incidents confirm-clients {incident.id} --clients {key} "
                                  f"--by NAME, then send with: {send}")


def outside_context(incident: Incident, phase: str) -> dict[str, Any]:
    """The template variables of a message sent outside a run (deadline watch, `irp incidents notify`)."""
    playbook = incident.playbook
    return {
        "incident": incident.model_dump(mode="json"),
        "alert": {},
        "steps": {},
        "playbook": {"name": playbook.name if playbook else "", "version": playbook.version if playbook else "",
                     "incident_type": incident.type.value},
        "stage": "notify",
        "phase": phase,
        "dry_run": False,
    }


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:60] or "x"


def _status(deliveries: list[Delivery]) -> str:
    states = {d.status for d in deliveries}
    if states <= {"sent"} and states:
        return "sent"
    if "sent" in states:
        return "partial"
    if states & {"failed", "refused"}:
        return "failed"
    return "not_sent"


def dispatch(
    store: EvidenceStore,
    incident: Incident,
    settings: Settings,
    *,
    template: str,
    language: str,
    audience: str,
    recipient: str,
    phase: str,
    context: dict[str, Any],
    obligation: Obligation | None = None,
    late_reason: str = "",
    dry_run: bool = False,
    collected_by: CollectedBy | None = None,
    now: datetime | None = None,
    extra: dict[str, Any] | None = None,
    archived: list[Any] | None = None,
) -> NotificationRecord:
    """Render, check the deadline, send to the configured recipients, archive; the record says what happened.

    The evidence items written (message, delivery record) are appended to `archived` when given.
    """
    now = now or utcnow()
    due = None
    if obligation is not None:
        due = next((d.due_at for d in deadlines(incident, now) if d.obligation.id == obligation.id), obligation.due_at)
        late_reason = late_reason.strip() or "; ".join(late_reasons(incident, obligation.id))
    late = due is not None and now > due
    variables = {
        **context,
        "recipient": recipient,
        "obligation": obligation.model_dump(mode="json") if obligation else None,
        "notification": {"phase": phase, "late": late, "late_reason": late_reason,
                         "due_at": due.isoformat() if due else None, "sent_at": now.isoformat()},
        "contacts": CONTACTS,
        **(extra or {}),
    }
    rendered = render(settings.playbooks_dir / "templates", template, language, variables)
    record_id = f"N-{now:%Y%m%d%H%M%S}-{_secrets.token_hex(3).upper()}"
    addresses, setting = recipients_for(settings, audience, recipient)
    hold, held_because = client_hold(incident, settings, audience, recipient, obligation)
    reason = ""
    if late and not late_reason:
        deliveries: list[Delivery] = []
        status = "failed"
        reason = (f"late by {_hours(now - due)}: not sent without the reasons for the delay (GDPR Art. 33(1)); "
                  f"record them with: irp incidents deadlines {incident.id} --obligation {obligation.id} "
                  f"--late-reason TEXT, then: irp incidents notify {incident.id} {obligation.id}")
    elif dry_run:
        deliveries, status = [], "dry_run"
        reason = "dry run: rendered, not sent" + (f"; {held_because}" if hold else "")
    elif hold:
        deliveries = [Delivery(channel="none", recipient=recipient, status="not_sent", detail=held_because)]
        status, reason = ("held" if hold == "unconfirmed_client" else "not_sent"), held_because
    elif not addresses:
        deliveries = [Delivery(channel="none", recipient=recipient or audience, status="not_sent",
                               detail=f"not sent: no recipient configured for {audience} {recipient!r} ({setting})")]
        status, reason = "not_sent", deliveries[0].detail
    else:
        message = Message(rendered.subject, rendered.text, rendered.html, reference=f"{incident.id} {record_id}")
        deliveries = deliver(message, addresses, settings)
        status = _status(deliveries)
        if status != "sent":
            reason = "; ".join(f"{d.recipient}: {d.status} {d.detail}".strip() for d in deliveries
                               if d.status != "sent")
    folder = f"notifications/{_safe(phase)}"
    stem = f"{template}.{language}"  # a second message under the same name gets a numbered name (store)
    item = store.put(incident.id, f"{folder}/{stem}.md", f"Subject: {rendered.subject}\n\n{rendered.text}".encode(),
                     content_type="text/markdown; charset=utf-8", collected_by=collected_by, source_system="irp")
    record = NotificationRecord(
        id=record_id, at=now, phase=phase, audience=audience, recipient=recipient, template=template,
        language=language, subject=rendered.subject, obligation=obligation.id if obligation else None,
        status=status, reason=reason, hold=hold, late_reason=late_reason if late else "", deliveries=deliveries,
        evidence=item.name,
    )
    delivery = store.put_json(incident.id, f"{folder}/{stem}.delivery.json", record.model_dump(mode="json"),
                              collected_by=collected_by, source_system="irp")
    if archived is not None:
        archived.extend([item, delivery])
    return record


def _hours(delta: Any) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


# ---- template checks (irp playbooks validate) -------------------------------------------------

# What each kind of template must say, per language: (the rule's words, a heading the message has).
REQUIRED: dict[str, tuple[str, dict[str, list[tuple[str, str]]]]] = {
    "client_notification": ("policy §7", {
        "fr": [("la nature de l'incident", "Nature de l'incident"),
               ("les catégories de données concernées", "Catégories de données concernées"),
               ("les impacts potentiels identifiés", "Impacts potentiels identifiés"),
               ("les mesures correctives mises en œuvre", "Mesures correctives mises en œuvre"),
               ("les recommandations éventuelles", "Recommandations")],
        "en": [("the nature of the incident", "Nature of the incident"),
               ("the categories of data concerned", "Categories of data concerned"),
               ("the potential impacts identified", "Potential impacts identified"),
               ("the corrective measures taken", "Corrective measures taken"),
               ("recommendations", "Recommendations")],
    }),
    "authority_notification": ("GDPR Art. 33(3)", {
        "fr": [("(a) nature de la violation, catégories et nombre approximatif de personnes et d'enregistrements",
                "Nature de la violation"),
               ("(b) nom et coordonnées du délégué à la protection des données", "Délégué à la protection des données"),
               ("(c) conséquences probables de la violation", "Conséquences probables"),
               ("(d) mesures prises ou envisagées", "Mesures prises ou envisagées")],
        "en": [("(a) nature of the breach, categories and approximate number of people and records",
                "Nature of the breach"),
               ("(b) name and contact details of the data protection officer", "Data protection officer"),
               ("(c) likely consequences of the breach", "Likely consequences"),
               ("(d) measures taken or proposed", "Measures taken or proposed")],
    }),
    "data_subject_communication": ("GDPR Art. 34(2)", {
        "fr": [("nature de la violation, en termes clairs", "Ce qui s'est passé"),
               ("(b) coordonnées du délégué à la protection des données", "Qui contacter"),
               ("(c) conséquences probables", "Conséquences possibles pour vous"),
               ("(d) mesures prises et conseils", "Ce que nous avons fait")],
        "en": [("nature of the breach, in clear language", "What happened"),
               ("(b) contact details of the data protection officer", "Who to contact"),
               ("(c) likely consequences", "What this may mean for you"),
               ("(d) measures taken and advice", "What we have done")],
    }),
    "nis2_early_warning": ("NIS2 Art. 23(4)(a)", {
        "fr": [("acte illicite ou malveillant suspecté", "Acte illicite ou malveillant"),
               ("impact transfrontière", "Impact transfrontière")],
        "en": [("suspected unlawful or malicious act", "Unlawful or malicious act"),
               ("cross-border impact", "Cross-border impact")],
    }),
    "nis2_incident_notification": ("NIS2 Art. 23(4)(b)", {
        "fr": [("évaluation initiale : gravité et impact", "Évaluation initiale"),
               ("indicateurs de compromission", "Indicateurs de compromission")],
        "en": [("initial assessment: severity and impact", "Initial assessment"),
               ("indicators of compromise", "Indicators of compromise")],
    }),
    "nis2_final_report": ("NIS2 Art. 23(4)(d)", {
        "fr": [("(i) description détaillée, gravité et impact", "Description détaillée"),
               ("(ii) type de menace ou cause profonde", "Cause profonde"),
               ("(iii) mesures d'atténuation", "Mesures d'atténuation"),
               ("(iv) impact transfrontière", "Impact transfrontière")],
        "en": [("(i) detailed description, severity and impact", "Detailed description"),
               ("(ii) type of threat or root cause", "Root cause"),
               ("(iii) mitigation measures", "Mitigation measures"),
               ("(iv) cross-border impact", "Cross-border impact")],
    }),
}

_TEMPLATE_NAME = re.compile(r"^(?P<name>[a-z0-9_]+)\.(?P<lang>[a-z]{2})\.md\.j2$")


def sample_contexts() -> list[tuple[str, dict[str, Any]]]:
    """Contexts covering the branches templates take: with and without personal data, each phase, late."""
    from irp.models import ActionItem, Alert, IncidentType, PersonalData, Severity, Stage

    aware = datetime.fromisoformat("2026-11-20T09:30:00+00:00")
    alert = Alert(title="Sample alert", observed_at=aware, labels={"tenant": "acme"})
    base = Incident(
        id="INC-20261120-ABCDEF", type=IncidentType.data_leak, severity=Severity.critical,
        severity_reason="Fuite importante de données (§5)", title="Sample incident", summary="Sample summary.",
        detected_at=aware, aware_at=aware, affected_clients=["acme"], affected_systems=["recordings-store"],
        personal_data=PersonalData(involved=True, categories=["call_recordings", "identification"],
                                   approx_people=1234, approx_records=5678, high_risk=True),
        actions=[ActionItem(id="A1", title="Revoke the credentials", owner="oncall", stage=Stage.contain,
                            status="closed"),
                 ActionItem(id="A2", title="Fix the access path", owner="oncall", stage=Stage.restore)],
    )
    quiet = base.model_copy(update={"type": IncidentType.service_unavailability, "severity": Severity.minor,
                                    "personal_data": PersonalData(), "actions": [], "affected_clients": []})
    playbook = {"name": "Sample", "version": "1.0.0", "incident_type": "data_leak"}

    def context(incident: Incident, phase: str, late: bool) -> dict[str, Any]:
        return {
            "incident": incident.model_dump(mode="json"), "alert": alert.model_dump(mode="json"), "steps": {},
            "playbook": playbook, "stage": "notify", "phase": phase, "dry_run": False, "recipient": "acme",
            "obligation": None, "contacts": CONTACTS,
            "notification": {"phase": phase, "late": late, "late_reason": "sample reason" if late else "",
                             "due_at": aware.isoformat(), "sent_at": aware.isoformat()},
            "escalation": {"kind": "missed", "obligation": None, "due_at": aware.isoformat(), "remaining": "-1.0 h",
                           "reason": "sample", "deadlines": []},
        }

    return [("personal data, initial", context(base, "initial", False)),
            ("personal data, final, late", context(base, "final", True)),
            ("no personal data, no Client", context(quiet, "initial", False)),
            ("no personal data, final", context(quiet, "final", False))]


def validate_templates(folder: Path) -> list[Any]:
    """Every problem of the message templates in `folder`, as irp.playbook.problems.Problem (FILE:LINE:COL)."""
    from irp.playbook.problems import Problem

    problems: list[Problem] = []
    if not folder.is_dir():
        return problems
    env = _environment(folder)
    contexts = sample_contexts()
    for path in sorted(folder.glob("*.j2")):
        file = str(path)
        try:
            source = path.read_text(encoding="utf-8")
            env.parse(source)
        except UnicodeDecodeError:
            problems.append(Problem(file, 1, 1, "", "not UTF-8 text"))
            continue
        except TemplateSyntaxError as exc:
            problems.append(Problem(file, exc.lineno or 1, 1, "", f"template syntax error: {exc.message}"))
            continue
        match = _TEMPLATE_NAME.match(path.name)
        if path.name.startswith("_") or path.name == HTML_LAYOUT or not match:
            continue
        first_text = None
        for label, context in contexts:
            try:
                rendered = render(folder, match["name"], match["lang"], context)
            except NotificationError as exc:
                line = _error_line(exc)
                problems.append(Problem(file, line, 1, "", f"does not render ({label}): {exc}"))
                break
            if label.startswith("personal data, initial"):
                first_text = rendered.text
        rule = REQUIRED.get(match["name"])
        if rule is None or first_text is None:
            continue
        source_name, per_language = rule
        required = per_language.get(match["lang"])
        if required is None:
            problems.append(Problem(file, 1, 1, "", f"no {source_name} checks for language {match['lang']!r}; "
                                                    f"valid: {', '.join(per_language)}"))
            continue
        headings = [line.lower() for line in first_text.splitlines() if line.lstrip().startswith("#")]
        for content, heading in required:
            if not any(heading.lower() in line for line in headings):
                problems.append(Problem(file, 1, 1, "", f"misses {source_name} content « {content} »: "
                                                        f"no heading '{heading}' in the rendered message"))
        if match["name"] in ("authority_notification", "data_subject_communication") and \
                CONTACTS["dpo"] not in first_text:
            problems.append(Problem(file, 1, 1, "", f"misses {source_name}(b): the DPO's contact "
                                                    f"{CONTACTS['dpo']} does not appear"))
        if match["name"] == "authority_notification" and not all(n in first_text for n in ("1234", "5678")):
            problems.append(Problem(file, 1, 1, "", f"misses {source_name}(a): the approximate numbers of people "
                                                    "and records concerned do not appear"))
    return problems


def _error_line(exc: Exception) -> int:
    match = re.search(r"line (\d+)", str(exc))
    return int(match[1]) if match else 1
