"""Message templates: every shipped one renders and says what the rules require; alert data stays inert."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from irp.notifications import render
from irp.notifications.checks import sample_contexts, validate_templates

REPO = Path(__file__).resolve().parents[3]
TEMPLATES = REPO / "playbooks" / "templates"
KINDS = ["client_notification", "client_service_notice", "authority_notification", "data_subject_communication",
         "nis2_early_warning", "nis2_incident_notification", "nis2_final_report", "internal_alert",
         "internal_escalation"]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    copy = tmp_path / "templates"
    shutil.copytree(TEMPLATES, copy)
    return copy


def test_every_shipped_template_is_valid() -> None:
    assert [str(p) for p in validate_templates(TEMPLATES)] == []


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("language", ["fr", "en"])
def test_every_kind_exists_in_french_and_english(kind: str, language: str) -> None:
    assert (TEMPLATES / f"{kind}.{language}.md.j2").is_file()


class TestRequiredContents:
    def test_a_client_template_missing_a_section_7_content_fails(self, folder: Path) -> None:
        path = folder / "client_notification.fr.md.j2"
        path.write_text(path.read_text().replace("## Impacts potentiels identifiés", "## Impacts"))
        problems = [str(p) for p in validate_templates(folder)]
        assert problems == [f"{path}:1:1: misses policy §7 content « les impacts potentiels identifiés »: "
                            "no heading 'Impacts potentiels identifiés' in the rendered message"]

    def test_a_section_hidden_behind_a_condition_is_found_missing(self, folder: Path) -> None:
        path = folder / "client_notification.en.md.j2"
        hidden = "{% if incident.severity == 'minor' %}## Recommendations{% endif %}"
        text = path.read_text().replace("## Recommendations", hidden)
        path.write_text(text)
        assert any("« recommendations »" in str(p) for p in validate_templates(folder))

    def test_an_authority_template_missing_the_dpo_fails_on_art_33_3_b(self, folder: Path) -> None:
        path = folder / "authority_notification.en.md.j2"
        text = path.read_text().replace("## (b) Data protection officer\n", "").replace("{{ contacts.dpo }}", "us")
        path.write_text(text)
        problems = [str(p) for p in validate_templates(folder)]
        assert any("GDPR Art. 33(3) content « (b) name and contact details" in p for p in problems)
        assert any("misses GDPR Art. 33(3)(b): the DPO's contact" in p for p in problems)

    def test_an_authority_template_without_the_numbers_fails_on_art_33_3_a(self, folder: Path) -> None:
        path = folder / "authority_notification.fr.md.j2"
        path.write_text(path.read_text().replace("{{ t.people(f) }}", "des personnes"))
        assert any("33(3)(a): the approximate numbers" in str(p) for p in validate_templates(folder))

    def test_syntax_and_undefined_variables_are_reported_with_their_file(self, folder: Path) -> None:
        (folder / "client_notification.fr.md.j2").write_text("{% set subject = 'x' %}\n{% if %}\n")
        (folder / "nis2_early_warning.en.md.j2").write_text("{% set subject = 'x' %}{{ incident.nope }}\n")
        problems = [str(p) for p in validate_templates(folder)]
        assert f"{folder}/client_notification.fr.md.j2:2:1: template syntax error: Expected an expression, " \
               "got 'end of statement block'" in problems
        assert any(p.startswith(f"{folder}/nis2_early_warning.en.md.j2:1:1: does not render") and "nope" in p
                   for p in problems)

    def test_a_template_without_subject_fails(self, folder: Path) -> None:
        (folder / "internal_alert.en.md.j2").write_text("Hello\n")
        assert any("sets no subject" in str(p) for p in validate_templates(folder))

    def test_the_cli_fails_on_a_broken_template(self, folder: Path, tmp_path: Path) -> None:
        import subprocess
        import sys

        playbooks = tmp_path
        shutil.copy(REPO / "playbooks" / "data_leak.yaml", playbooks / "data_leak.yaml")
        path = folder / "client_notification.fr.md.j2"
        path.write_text(path.read_text().replace("## Recommandations", "## Conseils"))
        result = subprocess.run([sys.executable, "-m", "irp.cli", "playbooks", "validate", str(playbooks)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 1
        assert "misses policy §7 content « les recommandations éventuelles »" in result.stdout
        assert "Traceback" not in result.stderr


INJECTION = ("{{ 7 * 7 }}{% raw %}x{% endraw %} <script>alert(1)</script> <img src=x onerror=alert(2)>"
             "\r\nBcc: evil@x.example")


class TestInjection:
    def context(self) -> dict:
        context = sample_contexts()[0][1]
        context["incident"] = {**context["incident"], "title": INJECTION, "summary": INJECTION,
                               "affected_systems": [INJECTION]}
        return context

    @pytest.mark.parametrize("kind", KINDS)
    def test_alert_data_is_printed_never_evaluated(self, kind: str) -> None:
        rendered = render(TEMPLATES, kind, "fr", self.context())
        assert "49" not in rendered.text.replace("1234", "")  # {{ 7 * 7 }} was not evaluated
        if "INJECTION" in rendered.text or "<script>" in rendered.text:
            assert "{{ 7 * 7 }}" in rendered.text

    @pytest.mark.parametrize("kind", KINDS)
    def test_subjects_are_one_line(self, kind: str) -> None:
        rendered = render(TEMPLATES, kind, "en", self.context())
        assert "\r" not in rendered.subject and "\n" not in rendered.subject

    def test_the_html_alternative_escapes_markup(self) -> None:
        rendered = render(TEMPLATES, "internal_alert", "fr", self.context())
        assert "<script>" in rendered.text  # the text part is plain text
        assert "<script>" not in rendered.html and "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered.html
        assert "<img" not in rendered.html


class TestMeasureWording:
    def test_every_shipped_measure_step_has_wording_in_both_languages(self) -> None:
        from irp.notifications.checks import measure_notes
        from irp.playbook.loader import load_playbook

        loaded = [(p, load_playbook(p).playbook) for p in sorted((REPO / "playbooks").glob("*.yaml"))
                  if p.name != "routing.yaml"]
        assert [str(n) for n in measure_notes(TEMPLATES, loaded)] == []

    def test_a_measure_step_without_wording_gets_a_note_naming_it(self) -> None:
        from irp.notifications.checks import measure_notes
        from irp.playbook.loader import load_playbook

        path = REPO / "playbooks" / "data_leak.yaml"
        playbook = load_playbook(path).playbook
        step = playbook.stages.contain[0].model_copy(update={"id": "rotate", "action": "response.assign_action"})
        edited = playbook.model_copy(update={"stages": playbook.stages.model_copy(
            update={"contain": [step, *playbook.stages.contain[1:]]})})
        assert [str(n) for n in measure_notes(TEMPLATES, [(path, edited)])] == [
            f"{path}:1:1: stages.contain.0: note: measure step 'rotate' has no wording in _texts.fr.j2, "
            "_texts.en.j2 (measure_labels): external letters name it by its title"]
