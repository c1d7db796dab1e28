"""The message templates' checks (`irp playbooks validate`): each renders on sample incidents, sets a subject,
and says what the rules require (§7's five contents in Client letters, Art. 33(3)(a)–(d) in authority
notifications with the categories of data subjects and the numbers, Art. 34(2) to people, NIS2 Art. 23(4) in
the NIS2 reports); no external message prints the alert's own text (title, description) unconfirmed.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import TemplateSyntaxError

from irp.models import ActionItem, Alert, Incident, IncidentType, PersonalData, Severity, Stage, TimelineEntry
from irp.notifications.facts import letter_facts, number
from irp.notifications.letters import CONTACTS, HTML_LAYOUT, NotificationError, letter_environment, render

__all__ = ["ALERT_TEXT", "INTERNAL", "REQUIRED", "SUBJECTS_LINE", "sample_contexts", "validate_templates"]

# Templates whose messages stay inside Confluent Digital (§14): they may quote the alert.
INTERNAL = ("internal_alert", "internal_escalation")
# Art. 33(3)(a): the categories of data subjects, a line each letter about personal data has.
SUBJECTS_LINE = {"fr": "Catégories de personnes concernées", "en": "Categories of data subjects"}
SUBJECTS_REQUIRED = ("authority_notification", "client_notification")
# The samples' alert text: it must not reach an external message unless a responder confirmed it.
ALERT_TEXT = ("Sample alert title 7f3a", "Sample alert description 7f3a")

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


def sample_contexts(language: str = "fr") -> list[tuple[str, dict[str, Any]]]:
    """Contexts covering the branches templates take: with and without personal data, each phase, late."""
    aware = datetime.fromisoformat("2026-11-20T09:30:00+00:00")
    title, description = ALERT_TEXT
    alert = Alert(title=title, description=description, observed_at=aware, labels={"tenant": "acme"})
    steps = [TimelineEntry(at=aware, kind="step", stage=Stage.contain, step="block_src",
                           message="step block_src (aws.block_ip) completed"),
             TimelineEntry(at=aware, kind="step", stage=Stage.contain, step="suspend_client",
                           message="step suspend_client (platform.suspend_account) skipped: approval rejected")]
    base = Incident(
        id="INC-20261120-ABCDEF", type=IncidentType.data_leak, severity=Severity.critical,
        severity_reason="Fuite importante de données (§5)", title=title, summary=description,
        detected_at=aware, aware_at=aware, affected_clients=["acme"], affected_systems=["recordings-store"],
        personal_data=PersonalData(involved=True, categories=["call_recordings", "identification"],
                                   approx_people=1234, approx_records=5678, high_risk=True),
        actions=[ActionItem(id="A1", title="Revoke the credentials", owner="oncall", stage=Stage.contain,
                            status="closed", step="cut_access", closed_at=aware),
                 ActionItem(id="A2", title="Fix the access path", owner="oncall", stage=Stage.restore,
                            step="fix_and_reopen")],
        timeline=steps,
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
            "facts": letter_facts(incident, language=language, phase=phase, audience="client", recipient="acme",
                                  now=aware),
            "escalation": {"kind": "missed", "obligation": None, "due_at": aware.isoformat(), "remaining": "-1.0 h",
                           "reason": "sample", "deadlines": []},
            "triage": {"incident_id": incident.id, "title": "Sample alert", "source": "eventbridge",
                       "severity": "critical" if late else None, "labels": {"tenant": "acme"},
                       "opened_at": aware.isoformat(), "flow_run_id": "", "fingerprint": "eb-sample"},
            **({"timed_out_hours": 24} if late else {}),
            "summary": {"unrouted": [{"source": "eventbridge", "title": "Sample alert", "count": 3,
                                      "last_seen": aware.isoformat()}] if late else [],
                        "triage_pending": [{"incident_id": incident.id, "title": "Sample alert",
                                            "opened_at": aware.isoformat()}], "problems": ["sample"] if late else []},
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
    env = letter_environment(folder)
    contexts = {language: sample_contexts(language) for language in ("fr", "en")}
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
        external = match["name"] not in INTERNAL
        for label, context in contexts.get(match["lang"], contexts["fr"]):
            try:
                rendered = render(folder, match["name"], match["lang"], context)
            except NotificationError as exc:
                line = _error_line(exc)
                problems.append(Problem(file, line, 1, "", f"does not render ({label}): {exc}"))
                break
            if label.startswith("personal data, initial"):
                first_text = rendered.text
            quoted = [text for text in ALERT_TEXT if text in rendered.text or text in rendered.subject]
            if external and quoted:
                problems.append(Problem(file, 1, 1, "", f"prints the alert's own text ({label}): "
                                                        f"« {quoted[0]} »; an external message says what a "
                                                        "responder confirmed (facts.description) or the type's "
                                                        "own wording, never the alert's title or description"))
                break
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
        if match["name"] == "authority_notification" and \
                not all(number(n, match["lang"]) in first_text for n in (1234, 5678)):
            problems.append(Problem(file, 1, 1, "", f"misses {source_name}(a): the approximate numbers of people "
                                                    f"and records concerned do not appear (formatted as "
                                                    f"« {number(1234, match['lang'])} »)"))
        line = SUBJECTS_LINE.get(match["lang"])
        if match["name"] in SUBJECTS_REQUIRED and line and line.lower() not in first_text.lower():
            problems.append(Problem(file, 1, 1, "", f"misses GDPR Art. 33(3)(a) content « categories of data "
                                                    f"subjects »: no line '{line}' in the rendered message"))
    return problems


def _error_line(exc: Exception) -> int:
    match = re.search(r"line (\d+)", str(exc))
    return int(match[1]) if match else 1


def measure_notes(folder: Path, playbooks: list[tuple[Path, Any]]) -> list[Any]:
    """Notes (not problems) for the measure steps of `playbooks` that the letters of `folder` do not word:
    a letter then names such a measure by its title, which may not be in the letter's language."""
    from irp.playbook.problems import Problem

    notes: list[Problem] = []
    env = letter_environment(folder)
    texts = {}
    for language in ("fr", "en"):
        try:
            module = env.get_template(f"_texts.{language}.j2").module
            texts[language] = (dict(module.measure_labels), dict(module.action_labels))  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 (a broken or missing _texts file is validate_templates' problem)
            continue
    for file, playbook in playbooks:
        for stage in ("contain", "restore", "review"):
            for n, step in enumerate(getattr(playbook.stages, stage)):
                if not (step.action == "response.assign_action" or step.action.startswith(("aws.", "platform."))):
                    continue
                missing = [language for language, (steps, actions) in texts.items()
                           if f"{playbook.incident_type}.{step.id}" not in steps and step.id not in steps
                           and step.action not in actions]
                if missing:
                    notes.append(Problem(str(file), 1, 1, f"stages.{stage}.{n}",
                                         f"note: measure step {step.id!r} has no wording in "
                                         f"{', '.join(f'_texts.{lang}.j2' for lang in missing)} (measure_labels): "
                                         "external letters name it by its title"))
    return notes
