"""The letters as sent: golden files per incident type, language and phase, and one test per fault of issue 18.

Golden files are tests/golden/letters/<type>/<template>.<lang>.<phase>.md, rendered from the realistic
incidents of tests/letter_scenarios.py (fixed clock, fixed ids). A change to a letter shows as a diff:
after checking it reads as a letter a DPO would sign, regenerate with

    IRP_UPDATE_GOLDEN=1 PYTHONPATH=$PWD .venv/bin/python -m pytest -q tests/unit/notifications/test_letters.py
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

import pytest
from letter_scenarios import AWARE, PHASE_AT, SCENARIOS, Scenario, letters, render_letter

from irp.models import PersonalData, Stage
from irp.notifications.facts import fact_entry, letter_facts, measures, number, paris_time

REPO = Path(__file__).resolve().parents[3]
TEMPLATES = REPO / "playbooks" / "templates"
GOLDEN = REPO / "tests" / "golden" / "letters"
UPDATE = os.environ.get("IRP_UPDATE_GOLDEN") == "1"


def golden_cases() -> list[tuple[str, int, str, str]]:
    """(type, letter index, language, golden file name): the first recipient of each template and phase."""
    cases = []
    for name, scenario in SCENARIOS.items():
        seen = set()
        for n, (template, phase, _, _) in enumerate(letters(scenario)):
            if (template, phase) in seen:
                continue
            seen.add((template, phase))
            cases += [(name, n, lang, f"{template}.{lang}.{phase}.md") for lang in ("fr", "en")]
    return cases


def as_file(rendered) -> str:
    return f"Subject: {rendered.subject}\n\n{rendered.text.rstrip()}\n"


@pytest.mark.parametrize(("kind", "n", "language", "file"), golden_cases(),
                         ids=[f"{c[0]}/{c[3]}" for c in golden_cases()])
def test_letters_match_their_golden_files(kind: str, n: int, language: str, file: str) -> None:
    text = as_file(render_letter(SCENARIOS[kind], n, language, TEMPLATES))
    path = GOLDEN / kind / file
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"no golden file {path}: regenerate with IRP_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8"), f"{path} differs: review the diff, then IRP_UPDATE_GOLDEN=1"


def test_every_incident_type_has_golden_letters_in_both_languages() -> None:
    for kind in SCENARIOS:
        files = {p.name for p in (GOLDEN / kind).glob("*.md")}
        assert any(f.endswith(".fr.initial.md") for f in files) and any(f.endswith(".en.initial.md") for f in files)
        assert any(".final.md" in f for f in files), kind


def letter(kind: str, template: str, phase: str = "initial", language: str = "fr",
           scenario: Scenario | None = None) -> str:
    scenario = scenario or SCENARIOS[kind]
    n = next(i for i, (t, p, _, _) in enumerate(letters(scenario)) if t == template and p == phase)
    return render_letter(scenario, n, language, TEMPLATES).text


def external(kind: str, language: str = "fr") -> list[str]:
    scenario = SCENARIOS[kind]
    return [render_letter(scenario, n, language, TEMPLATES).text for n in range(len(letters(scenario)))]


def section(text: str, heading: str) -> str:
    """The lines after `heading` up to the next blank line."""
    start = text.find(heading)
    return "" if start < 0 else text[start:].split("\n\n")[0]


class TestMeasuresAreTrue:
    """« Suspension du compte … (engagée, en cours) » was sent although the suspension was skipped."""

    def test_a_skipped_measure_is_never_listed_as_taken(self) -> None:
        text = letter("account_compromise", "client_notification")
        taken = section(text, "Mesures prises :")
        assert "Fin de toutes les sessions" in taken  # the steps that completed, with their time
        assert "suspension" not in taken.lower()
        assert "suspension du compte" not in text.lower()  # rejected: not taken, not under way either

    def test_a_failed_step_is_in_progress_until_a_person_does_it(self) -> None:
        scenario = SCENARIOS["data_leak"]
        early = measures(scenario.state(AWARE + timedelta(hours=1)), None, "fr")
        assert "pause_feature" not in [m["step"] for m in early["done"]]
        assert "pause_feature" in [m["step"] for m in early["in_progress"]]
        later = measures(scenario.state(AWARE + timedelta(hours=4)), None, "fr")
        done = next(m for m in later["done"] if m["step"] == "pause_feature")
        assert done["at"] == "20/11/2026 à 13 h 30 (heure de Paris)"  # when the person closed it

    def test_a_dry_run_step_changed_nothing(self) -> None:
        scenario = SCENARIOS["malware"]
        incident = scenario.state(AWARE + timedelta(hours=1))
        timeline = [e.model_copy(update={"message": e.message + " (dry run)"}) if e.kind == "step" else e
                    for e in incident.timeline]
        done = measures(incident.model_copy(update={"timeline": timeline}), None, "fr")["done"]
        assert [m["step"] for m in done] == []


class TestOneLegalPosition:
    """The Client letter said « il vous appartient » while the CNIL letter named Confluent Digital controller."""

    def test_controller_letters_agree(self) -> None:
        cnil = letter("data_leak", "authority_notification")
        client = letter("data_leak", "client_notification")
        assert "agissant en qualité de responsable du\ntraitement" in cnil
        assert "il vous appartient" not in client
        assert "Confluent Digital SAS, responsable du traitement des données concernées" in client
        # The initial CNIL letter leaves before the Art. 34 letter: it says they will be informed, not that they are.
        assert "personnes concernées sont informées" not in cnil and "les\ninformera directement" in cnil

    def test_processor_letters_tell_the_client_and_assist_it(self) -> None:
        scenario = Scenario(**{**SCENARIOS["data_leak"].__dict__, "role": "processor"})
        assert {t for t, *_ in letters(scenario)} == {"client_notification", "nis2_early_warning",
                                                     "nis2_incident_notification", "nis2_final_report"}
        client = letter("data_leak", "client_notification", scenario=scenario)
        assert "En notre qualité de sous-traitant" in client and "article 33(2)" in client
        assert "article 28(3)(f)" in client and "En votre qualité de responsable du traitement" in client
        assert "Nous ne notifions pas la CNIL" in client
        english = letter("data_leak", "client_notification", language="en", scenario=scenario)
        assert "As your processor" in english and "Article 28(3)(f)" in english

    def test_a_processor_instructed_by_its_clients_notifies_on_their_behalf(self) -> None:
        scenario = Scenario(**{**SCENARIOS["data_leak"].__dict__, "role": "processor", "for_client": True})
        assert {"authority_notification", "data_subject_communication"} <= {t for t, *_ in letters(scenario)}
        client = letter("data_leak", "client_notification", scenario=scenario)
        assert "En notre qualité de sous-traitant" in client and "Conformément à vos instructions" in client
        assert "notifions cette violation à la CNIL en votre nom" in client and "Nous ne notifions pas" not in client
        cnil = letter("data_leak", "authority_notification", scenario=scenario)
        assert "agissant en qualité de sous-traitant, au nom" in cnil and "au nom du responsable du traitement" in cnil
        people = letter("data_leak", "data_subject_communication", scenario=scenario)
        assert "au nom et pour le compte du\nresponsable du traitement de vos données" in people


class TestArticle33_3a:
    def test_categories_of_data_subjects_are_named(self) -> None:
        cnil = letter("data_leak", "authority_notification")
        assert "Catégories de personnes concernées :\n- appelants" in cnil
        assert "- conseillers des centres d'appels du Client" in cnil

    def test_start_detection_and_awareness_are_three_facts(self) -> None:
        cnil = letter("data_leak", "authority_notification")
        assert "Date de la violation (détection)" not in cnil
        assert "- Début de la violation : 20/11/2026 à 3 h 30 (heure de Paris)." in cnil
        assert "- Détection : 20/11/2026 à 10 h 14 (heure de Paris)." in cnil
        assert "- Prise de connaissance par Confluent Digital SAS : 20/11/2026 à 10 h 30 (heure de Paris)." in cnil

    def test_numbers_are_formatted_the_french_way(self) -> None:
        cnil = letter("data_leak", "authority_notification")
        assert "environ 12\u202f000 personnes et environ 48\u202f000 enregistrements" in cnil
        assert "12000" not in cnil and "48000" not in cnil
        assert "about 12,000 people and about 48,000 records" in letter("data_leak", "authority_notification",
                                                                        language="en")

    def test_times_are_in_paris_with_the_zone_named(self) -> None:
        for text in external("data_leak"):
            assert "UTC" not in text
            assert "(heure de Paris)" in text
        assert paris_time("2026-07-01T08:14:00+00:00") == "01/07/2026 à 10 h 14 (heure de Paris)"  # summer time
        assert paris_time("2026-11-20T09:14:00Z", "en") == "20 November 2026 at 10:14 (Paris time)"


class TestFrench:
    def test_the_alerts_own_text_never_reaches_an_external_letter(self) -> None:
        for language in ("fr", "en"):
            for text in external("account_compromise", language):
                assert "Supervisor account used from an unusual country" not in text
                assert "Login anomaly" not in text

    def test_a_description_a_responder_confirmed_is_used(self) -> None:
        scenario = SCENARIOS["account_compromise"]
        confirmed = ("Le compte d'un superviseur du Client a été utilisé depuis l'étranger pour exporter les "
                     "évaluations de 85 conseillers.")
        incident = scenario.state(PHASE_AT["initial"])
        stated = incident.model_copy(update={"timeline": [*incident.timeline, fact_entry(
            "description", confirmed, by="Alice Durand", language="fr", at=AWARE + timedelta(hours=1))]})
        facts = letter_facts(stated, language="fr", phase="initial", audience="client", now=PHASE_AT["initial"])
        assert facts["description"] == confirmed
        english = letter_facts(stated, language="en", phase="initial", audience="client", now=PHASE_AT["initial"])
        assert english["description"] == ""  # a French text never goes into an English letter: the type's wording
        assert confirmed in render_letter(scenario, 0, "fr", TEMPLATES, incident=stated).text

    def test_the_root_cause_can_be_stated_in_the_letters_language(self) -> None:
        scenario = SCENARIOS["data_leak"]
        incident = scenario.state(PHASE_AT["final"])
        cause = "A key of the export service, written by mistake in a CI log, was used to copy the recordings."
        stated = incident.model_copy(update={"timeline": [*incident.timeline, fact_entry(
            "root_cause", cause, by="Claire Petit (DPO)", language="en", at=AWARE + timedelta(days=11))]})
        english = letter_facts(stated, language="en", phase="final", audience="authority", recipient="anssi",
                               now=PHASE_AT["final"])
        french = letter_facts(stated, language="fr", phase="final", audience="authority", recipient="anssi",
                              now=PHASE_AT["final"])
        assert english["review"]["causes"] == cause and french["review"]["causes"] == scenario.causes

    def test_a_letter_fact_needs_a_known_field_and_who_states_it(self) -> None:
        with pytest.raises(ValueError, match="unknown letter fact 'title'; valid: description"):
            fact_entry("title", "x", by="Alice")
        with pytest.raises(ValueError, match="needs the name of who states it"):
            fact_entry("description", "x", by=" ")

    @pytest.mark.parametrize("kind", ["account_compromise", "malware", "cyberattack"])
    def test_the_preposition_is_repeated(self, kind: str) -> None:
        for text in external(kind):
            for fault in ("confidentialité et l'intégrité", "intégrité et la disponibilité",
                          "disponibilité et l'intégrité"):
                assert fault not in text
        assert "à la confidentialité et à l'intégrité" in letter("account_compromise", "client_notification")

    def test_no_noun_is_repeated_around_a_number(self) -> None:
        for kind in ("account_compromise", "data_leak"):
            for text in external(kind):
                assert "enregistrements : environ" not in text and "personnes : environ" not in text
                assert not re.search(r"(\w+) : environ [\d\u202f ]+ \1", text)
        assert "environ 85 personnes et environ 85 enregistrements" in letter("account_compromise",
                                                                              "client_notification")

    @pytest.mark.parametrize("kind", list(SCENARIOS))
    def test_no_double_brackets(self, kind: str) -> None:
        for language in ("fr", "en"):
            for text in external(kind, language):
                assert ") (" not in text
                # No bracket inside a bracket, but for the law's own numbering: (art. 23(4)(b)).
                nested = re.search(r"\([^()\n]*\((?![0-9a-z]{1,3}\))", text)
                assert nested is None, text[nested.start():nested.start() + 80]

    def test_the_intrusion_letter_does_not_claim_a_blocked_attempt(self) -> None:
        text = letter("intrusion_attempt", "client_notification")
        assert "tentative bloquée" not in text
        assert "Les données citées ont pu être consultées" in text
        assert "blocked attempt" not in letter("intrusion_attempt", "client_notification", language="en")

    def test_the_letter_to_individuals_names_the_controller_and_the_sender(self) -> None:
        text = letter("data_leak", "data_subject_communication")
        assert "Confluent Digital SAS, éditrice de la plateforme CallCenterRate et responsable du traitement" in text
        assert "Ce message vous est adressé par notre délégué à la protection des données" in text

    def test_callers_are_not_told_to_change_a_password_they_do_not_have(self) -> None:
        text = letter("data_leak", "data_subject_communication")  # recordings: callers and agents, no credentials
        assert "mot de passe CallCenterRate" not in text and "Changez votre mot de passe" not in text
        assert "Si vous avez appelé un centre de relation client" in text
        staff = letter("cyberattack", "data_subject_communication")  # credentials of platform users
        assert "changez votre mot de passe à votre prochaine" in staff
        assert "Si vous avez appelé" not in staff

    def test_the_nis2_final_report_states_the_root_cause_and_no_missing_attachment(self) -> None:
        text = letter("data_leak", "nis2_final_report", phase="final")
        assert SCENARIOS["data_leak"].causes in text
        assert "Cause établie par la revue post-incident du 30/11/2026" in text
        assert "jointe" not in text and "joint" not in text
        assert "attached" not in letter("data_leak", "nis2_final_report", phase="final", language="en")


class TestPhases:
    def test_each_notification_says_which_one_it_follows(self) -> None:
        scenario = SCENARIOS["data_leak"]
        first = next(r for r in _sent(scenario) if r.template == "authority_notification")
        update = letter("data_leak", "authority_notification", phase="complementary")
        assert "notification complémentaire (article 33(4) du RGPD)" in update
        assert f"Elle fait suite à notre message {first.id} du {paris_time(first.at)}." in update
        final = letter("data_leak", "client_notification", phase="final")
        assert "notification finale" in final and "Elle fait suite à notre message N-" in final
        warning = next(r for r in _sent(scenario) if r.template == "nis2_early_warning")
        assert f"met à jour notre alerte précoce {warning.id}" in letter("data_leak", "nis2_incident_notification")

    def test_a_letter_rendered_before_anything_was_sent_is_initial(self) -> None:
        text = letter("data_leak", "client_notification")
        assert "Ce premier message rassemble ce que nous savons à ce jour" in text and "fait suite" not in text


def _sent(scenario: Scenario):
    from letter_scenarios import sent_before

    return sent_before(scenario)


def test_numbers_and_subjects_without_personal_data() -> None:
    assert number(48000) == "48\u202f000" and number(48000, "en") == "48,000" and number(None) == ""
    quiet = SCENARIOS["service_unavailability"].state(PHASE_AT["initial"])
    assert quiet.personal_data == PersonalData()
    facts = letter_facts(quiet, language="fr", phase="initial", audience="client", now=PHASE_AT["initial"])
    assert facts["subjects"] == [] and facts["people"] == ""
    assert all(m["stage"] in (Stage.contain.value, Stage.restore.value) for m in facts["measures"]["done"])


@pytest.mark.parametrize("file", ["authority_notification.fr.initial.md", "client_notification.fr.initial.md"])
def test_the_letters_in_the_docs_are_the_golden_ones(file: str) -> None:
    docs = (REPO / "docs" / "notifications.md").read_text(encoding="utf-8")
    assert f"```text\n{(GOLDEN / 'data_leak' / file).read_text(encoding='utf-8')}```" in docs
