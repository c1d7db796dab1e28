"""Jinja2 rendering of playbook arguments and conditions, sandboxed and strict.

Only playbook text is ever compiled as a template; alert data reaches templates as values, so
`{{ ... }}` inside an alert is printed as text, never evaluated.
"""

from __future__ import annotations

import re
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, nodes
from jinja2.exceptions import TemplateError
from jinja2.sandbox import SandboxedEnvironment

__all__ = [
    "TemplateError",
    "evaluate",
    "file_environment",
    "referenced_steps",
    "render_message",
    "render_value",
    "syntax_error",
]

_WHOLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)

_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


def _expression(text: str) -> str | None:
    """The inner expression when `text` is exactly one `{{ expression }}`."""
    match = _WHOLE_EXPRESSION.match(text)
    if match and "{{" not in match["expr"] and "}}" not in match["expr"]:
        return match["expr"]
    return None


def evaluate(expression: str, context: dict[str, Any]) -> Any:
    """Evaluate a Jinja expression (a step's `when`, a classification rule) to a Python value."""
    value = _env.compile_expression(expression, undefined_to_none=False)(**context)
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    return value


def render_value(value: Any, context: dict[str, Any]) -> Any:
    """Render every string in `value`; a string that is one `{{ expr }}` keeps the native type."""
    if isinstance(value, str):
        if "{" not in value:
            return value
        expression = _expression(value)
        if expression is not None:
            return evaluate(expression, context)
        return _env.from_string(value).render(**context)
    if isinstance(value, dict):
        return {key: render_value(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render_value(item, context) for item in value]
    return value


def _parse(text: str, as_expression: bool) -> nodes.Template:
    expression = text if as_expression else _expression(text)
    if expression is not None:
        return _env.parse("{{ " + expression + " }}")
    return _env.parse(text)


def syntax_error(text: str, as_expression: bool = False) -> str | None:
    """The syntax error in a template (or expression) as one line, or None when it parses."""
    try:
        _parse(text, as_expression)
    except TemplateSyntaxError as exc:
        return f"template syntax error: {exc.message} (template line {exc.lineno})"
    return None


def referenced_steps(text: str, as_expression: bool = False) -> set[str]:
    """Step ids a template reads through `steps.ID` or `steps['ID']`."""
    try:
        tree = _parse(text, as_expression)
    except TemplateSyntaxError:
        return set()
    found: set[str] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        target = node.node
        if isinstance(target, nodes.Name) and target.name == "steps":
            if isinstance(node, nodes.Getattr):
                found.add(node.attr)
            elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                found.add(node.arg.value)
    return found


def file_environment(folder: str) -> SandboxedEnvironment:
    """A sandboxed, strict environment over a folder of templates; HTML templates are autoescaped."""
    from jinja2 import FileSystemLoader, select_autoescape

    return SandboxedEnvironment(
        loader=FileSystemLoader(folder),
        undefined=StrictUndefined,
        autoescape=select_autoescape(["html", "htm", "html.j2"]),
        keep_trailing_newline=True,
    )


def render_message(folder: str, name: str, context: dict[str, Any]) -> tuple[str, str]:
    """Render a message template to (subject, body); the subject is its `{% set subject = ... %}`."""
    template = file_environment(folder).get_template(name)
    module = template.make_module(context)
    subject = " ".join(str(getattr(module, "subject", "")).split())  # one line: no CR/LF injection
    return subject, str(module)
