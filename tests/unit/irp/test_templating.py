"""Sandboxed, strict rendering: native values for whole expressions, alert data never evaluated."""

from __future__ import annotations

import time

import pytest
from jinja2.exceptions import SecurityError, UndefinedError

from irp.playbook.templates import referenced_steps, syntax_error
from irp.templating import (
    ExpressionTimeoutError,
    ExpressionTooLargeError,
    TemplateError,
    evaluate,
    render_message,
    render_value,
)

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


def _timed(call, *args, **kwargs):
    """(the exception `call` raised, seconds it took)."""
    started = time.monotonic()
    with pytest.raises(TemplateError) as raised:
        call(*args, **kwargs)
    return raised.value, time.monotonic() - started


class TestBounds:
    """A playbook expression cannot exhaust the worker: a bound exceeded fails at once, with a clear message."""

    @pytest.mark.parametrize("expression", [
        "'a' * 10**10",
        "10 ** (10 ** 9) > 1",
        "2 ** 1000",
        "(10 ** 60) * (10 ** 60)",
        "range(10 ** 9) | list",
        "'x' * 10**6 * 10**3",
        "[1] * 10**6",
        "['a' * 10**6] * 100000",
        "'a' * 10**6 ~ 'b' * 10**6",
        "'a' * 10**6 + 'b' * 10**6",
        "'%*d' % (10**9, 1)",
        "'%999999999d' % 1",
        "('%(a)s' * 1000) % {'a': 'x' * 10**4}",
        "'%s' | format('x') ~ '%999999999s' | format('y')",
        "'{:999999999}'.format(1)",
        "'{:{w}}'.format(1, w=10**9)",
        "'{0}{0}{0}{0}'.format('x' * 10**6)",
        "'x' | center(10**9)",
        "'x'.ljust(10**9)",
        "'x\\ty'.expandtabs(10**9)",
        "(1).to_bytes(10**9, 'big')",
        "('a' * 10**5) | replace('', 'b' * 10**5)",
        "('a' * 10**5).replace('a', 'b' * 10**5)",
        "('a\\n' * 10**5) | indent(100)",
        "('a ' * 10**5) | wordwrap(1, wrapstring='-' * 100)",
        "[1] | batch(100000, 'x' * 1000) | list",
        "range(100000) | map('string') | map('center', 1000) | list",
        "range(100000) | map('string') | map('center', 1000) | join",
        "('x' * 10**6).join(['a', 'b', 'c'])",
        "[[1] * 100000] * 100",
    ])
    def test_expression_bombs_fail_at_once(self, expression: str) -> None:
        error, seconds = _timed(evaluate, expression, CONTEXT)
        assert isinstance(error, ExpressionTooLargeError), error
        assert str(error).startswith("expression too large: ")
        assert seconds < 1

    def test_messages_say_what_is_too_large(self) -> None:
        assert str(_timed(evaluate, "10 ** (10 ** 9) > 1", CONTEXT)[0]) == (
            "expression too large: 10 ** 1000000000 is larger than 10**100, the largest integer allowed")
        assert str(_timed(evaluate, "'a' * 10**10", CONTEXT)[0]) == (
            "expression too large: 'a' * 10000000000 would make 10000000000 characters; at most 1048576 are allowed")
        assert str(_timed(evaluate, "range(10**9)", CONTEXT)[0]) == (
            "expression too large: range(1000000000) would make 1000000000 items; at most 100000 are allowed")

    @pytest.mark.parametrize("template", [
        "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
        "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}",
        "{% set ns = namespace(l=[1]) %}{% for i in range(60) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l }}",
        "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
        "{% set x %}{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}{% endset %}{{ x | length }}",
        "{% macro m() %}{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}{% endmacro %}{{ m() | length }}",
        "{{ alert.title * 100000 }}",
    ])
    def test_template_bombs_fail_at_once(self, template: str) -> None:
        error, seconds = _timed(render_value, template, CONTEXT)
        assert isinstance(error, ExpressionTooLargeError), error
        assert seconds < 2

    def test_values_within_the_bounds_are_computed(self) -> None:
        assert evaluate("2 ** 300 + 1", CONTEXT) == 2**300 + 1
        assert evaluate("'ab' * 3 ~ '!'", CONTEXT) == "ababab!"
        assert evaluate("[0] * 3 + [1]", CONTEXT) == [0, 0, 0, 1]
        assert evaluate("'%5d|%-3s|%.2f' % (42, 'a', 1.5)", CONTEXT) == "   42|a  |1.50"
        assert evaluate("'{:>4}{}'.format('x', 1)", CONTEXT) == "   x1"
        assert evaluate("range(10) | sum", CONTEXT) == 45
        assert evaluate("[[1], [2]] | sum(start=[])", CONTEXT) == [1, 2]
        assert evaluate("'x' | center(5) ~ ('a\nb' | indent(2))", CONTEXT) == "  x  a\n  b"
        assert evaluate("'a-b' | replace('-', '+') ~ 'a-b'.replace('-', '')", CONTEXT) == "a+bab"
        assert evaluate("range(100000) | map('string') | join | length", CONTEXT) == 488890
        assert evaluate("('x' * 10**6) | length", CONTEXT) == 10**6

    def test_rendering_stops_at_its_time_limit(self) -> None:
        loops = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
        error, seconds = _timed(render_value, loops, CONTEXT, timeout=0.5)
        assert isinstance(error, ExpressionTimeoutError)
        assert str(error) == ("still running after 0.5 s: the time limit of a template is the step's "
                              "timeout_seconds, at most 10 s")
        assert 0.5 <= seconds < 1.5
        calls = "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}"
        assert isinstance(_timed(render_value, calls, CONTEXT, timeout=0.5)[0], ExpressionTimeoutError)

    def test_python_failures_are_template_errors(self) -> None:
        assert str(_timed(evaluate, "1 / 0", CONTEXT)[0]) == "ZeroDivisionError: division by zero"
        assert str(_timed(evaluate, "1 + 'a'", CONTEXT)[0]).startswith("TypeError: unsupported operand")
        recursion = _timed(render_value, "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", CONTEXT)[0]
        assert str(recursion) == "nested too deeply (recursion)"

    def test_templates_cannot_modify_values(self) -> None:
        with pytest.raises(SecurityError):
            evaluate("incident.affected_clients.append('x')", CONTEXT)
        assert CONTEXT["incident"]["affected_clients"] == ["acme", "globex"]

    def test_message_templates_are_bounded_too(self, tmp_path) -> None:
        (tmp_path / "m.md.j2").write_text("{% set subject = 'x' %}{% for i in range(100000) %}{{ 'y' * 100 }}{% endfor %}")
        with pytest.raises(ExpressionTooLargeError):
            render_message(str(tmp_path), "m.md.j2", {})
        (tmp_path / "n.md.j2").write_text("{% set subject = 'x' * 10**9 %}")
        with pytest.raises(ExpressionTooLargeError):
            render_message(str(tmp_path), "n.md.j2", {})
