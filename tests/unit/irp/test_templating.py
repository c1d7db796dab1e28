"""Sandboxed, strict rendering: native values for whole expressions, alert data never evaluated."""

from __future__ import annotations

import pytest
from jinja2.exceptions import SecurityError, UndefinedError

from irp.templating import evaluate, referenced_steps, render_message, render_value, syntax_error

CONTEXT = {
    "alert": {"title": "{{ 7 * 7 }} {% for x in range(3) %}boom{% endfor %}", "labels": {"n": "12"}},
    "incident": {"severity": "critical", "affected_clients": ["acme", "globex"]},
    "steps": {"scope": {"output": {"count": 3}}},
}


class TestRenderValue:
    def test_a_whole_expression_keeps_its_type(self) -> None:
        assert render_value("{{ incident.affected_clients }}", CONTEXT) == ["acme", "globex"]
        assert render_value("{{ steps.scope.output.count + 1 }}", CONTEXT) == 4

    def test_mixed_text_renders_to_a_string(self) -> None:
        assert render_value("clients: {{ incident.affected_clients | join(', ') }}", CONTEXT) == "clients: acme, globex"

    def test_nested_structures_are_rendered(self) -> None:
        assert render_value({"a": ["{{ incident.severity }}", 3]}, CONTEXT) == {"a": ["critical", 3]}

    def test_label_strings_stay_strings(self) -> None:
        assert render_value("{{ alert.labels.n }}", CONTEXT) == "12"

    def test_alert_text_is_data_not_template(self) -> None:
        rendered = render_value("Alert: {{ alert.title }}", CONTEXT)
        assert rendered == "Alert: {{ 7 * 7 }} {% for x in range(3) %}boom{% endfor %}"
        assert render_value("{{ alert.title }}", CONTEXT) == CONTEXT["alert"]["title"]

    def test_undefined_variables_are_errors(self) -> None:
        with pytest.raises(UndefinedError):
            render_value("{{ incident.nope }}", CONTEXT)

    def test_the_sandbox_blocks_attribute_escapes(self) -> None:
        with pytest.raises(SecurityError):
            render_value("{{ ''.__class__.__mro__[1].__subclasses__() }}", CONTEXT)


class TestExpressions:
    def test_evaluate_returns_python_values(self) -> None:
        assert evaluate("incident.severity == 'critical' and incident.affected_clients | length > 1", CONTEXT) is True

    def test_syntax_errors_are_one_line(self) -> None:
        assert syntax_error("{{ x }") == "template syntax error: unexpected '}' (template line 1)"
        assert syntax_error("a ==", as_expression=True).startswith("template syntax error:")
        assert syntax_error("{{ x }}") is None

    def test_step_references_are_found(self) -> None:
        assert referenced_steps("{{ steps.a.output }} {{ steps['b'].status }} {{ other.c }}") == {"a", "b"}


class TestMessages:
    def test_subject_is_one_line_whatever_the_data(self, tmp_path) -> None:
        (tmp_path / "m.md.j2").write_text("{% set subject = 'Incident ' ~ alert.title -%}\nBody {{ alert.title }}\n")
        subject, body = render_message(str(tmp_path), "m.md.j2", {"alert": {"title": "a\r\nBcc: x@evil.test"}})
        assert "\n" not in subject and "\r" not in subject
        assert subject == "Incident a Bcc: x@evil.test"
        assert body == "Body a\r\nBcc: x@evil.test\n"

    def test_html_templates_are_autoescaped(self, tmp_path) -> None:
        (tmp_path / "m.html.j2").write_text("<p>{{ alert.title }}</p>")
        _, body = render_message(str(tmp_path), "m.html.j2", {"alert": {"title": "<script>alert(1)</script>"}})
        assert body == "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"
