"""Jinja2 rendering of playbook arguments, conditions and messages: sandboxed, strict and bounded.

Only playbook and message-template text is ever compiled as a template; alert data reaches
templates as values, so `{{ ... }}` inside an alert is printed as text, never evaluated.

A template cannot exhaust the worker that renders it (every bound raises a TemplateError):
- integers computed by `+ - * / // % **` stay within ±10**100 (MAX_INT), checked before a
  power or a product is computed: `10 ** (10 ** 9)` fails at once;
- what a template builds (by `*`, `+`, `~`, `%`, `format`, `join`, `center`, `indent`, ...)
  prints to at most MAX_STRING characters, lists built by `*`/`+` hold at most MAX_ITEMS items,
  `range()` gives at most MAX_ITEMS numbers, a rendered template is at most MAX_STRING characters;
- rendering stops after its time budget (the step's `timeout_seconds`, at most MAX_SECONDS):
  every loop iteration, call and operator checks the clock;
- any other failure of Python inside a template (division by zero, a type mismatch, recursion)
  is raised as an ExpressionError, a TemplateError too.
Templates are also immutable: list and dict methods that modify their object are refused.
The checks themselves are in bounds.py; this module is the environment and the API.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache, update_wrapper
from types import BuiltinMethodType, MethodType
from typing import Any

from jinja2 import StrictUndefined, Template, Undefined, nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from irp.templating.bounds import (
    _BINOPS,
    MAX_INT,
    MAX_ITEMS,
    MAX_SECONDS,
    MAX_STRING,
    ExpressionError,
    ExpressionTimeoutError,
    ExpressionTooLargeError,
    _binop,
    _bounded,
    _bounded_filter,
    _BoundedEscapeFormatter,
    _BoundedFormatter,
    _check_method,
    _check_size,
    _check_text,
    _join,
    _range,
    _sum,
    _text_size,
    _tick,
)

__all__ = [
    "MAX_INT",
    "MAX_ITEMS",
    "MAX_SECONDS",
    "MAX_STRING",
    "ExpressionError",
    "ExpressionTimeoutError",
    "ExpressionTooLargeError",
    "TemplateError",
    "evaluate",
    "file_environment",
    "parse",
    "render_message",
    "render_subject_body",
    "render_value",
]


# --- the environment ------------------------------------------------------------------------


class _OutputBuffer(list[str]):
    """The output of a block set, macro or filter block, at most MAX_STRING characters."""

    size = 0

    def _grow(self, parts: Iterable[Any]) -> None:
        self.size += sum(len(part) for part in parts if isinstance(part, str))
        if self.size > MAX_STRING:
            raise ExpressionTooLargeError(f"the rendered text is longer than {MAX_STRING} characters")

    def append(self, part: str) -> None:
        self._grow((part,))
        super().append(part)

    def extend(self, parts: Iterable[str]) -> None:
        parts = tuple(parts)
        self._grow(parts)
        super().extend(parts)


class _BoundedCodeGenerator(CodeGenerator):
    """jinja's code generator, with a clock check in every loop iteration, `~` size-checked and
    output buffers bounded."""

    def buffer(self, frame: Frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.output_buffer()")

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        tick = nodes.ExprStmt(nodes.Call(nodes.EnvironmentAttribute("tick"), [], [], None, None), lineno=node.lineno)
        node.body = [tick, *node.body]
        super().visit_For(node, frame)

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        else:
            join = "markup_join" if frame.eval_ctx.autoescape else "str_join"
        self.write(f"{join}(environment.concat_parts((")
        for part in node.nodes:
            self.visit(part, frame)
            self.write(", ")
        self.write(")))")


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox every irp template renders in: strict, immutable, bounded (see the module)."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset(_BINOPS)

    def __init__(self, **options: Any) -> None:
        super().__init__(undefined=StrictUndefined, keep_trailing_newline=True, finalize=_finalize, **options)
        self.globals["range"] = _range
        self.globals.pop("lipsum", None)
        self.filters.update({name: _bounded_filter(name, function) for name, function in self.filters.items()})
        self.filters.update(join=_join, sum=_sum)

    def tick(self) -> None:
        """Called by the generated code at every loop iteration."""
        _tick()

    @staticmethod
    def output_buffer() -> list[str]:
        """Where the generated code collects a block's output."""
        return _OutputBuffer()

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        return _binop(operator, left, right)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _tick()
        return super().call(context, obj, *_check_method(obj, args, kwargs), **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if not (isinstance(value, MethodType | BuiltinMethodType) and value.__name__ in ("format", "format_map")
                and isinstance(value.__self__, str)):
            return None
        text: str = value.__self__
        formatter = (_BoundedEscapeFormatter(self, escape=text.escape) if isinstance(text, Markup)
                     else _BoundedFormatter(self))
        as_map = value.__name__ == "format_map"

        def bounded(*args: Any, **kwargs: Any) -> str:
            if as_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                args, kwargs = (), args[0]
            return type(text)(formatter.vformat(text, args, kwargs))

        return update_wrapper(bounded, value)

    @staticmethod
    def concat_parts(parts: tuple[Any, ...]) -> tuple[Any, ...]:
        """The operands of `~`, when their text fits in MAX_STRING characters."""
        _check_size("~", sum(_text_size(part) for part in parts))
        return parts

    @staticmethod
    def concat(parts: Iterable[str]) -> str:  # type: ignore[override]
        """Join rendered output, at most MAX_STRING characters."""
        out, size = [], 0
        for part in parts:
            size += len(part)
            if size > MAX_STRING:
                raise ExpressionTooLargeError(f"the rendered text is longer than {MAX_STRING} characters")
            out.append(part)
        return "".join(out)


def _finalize(value: Any) -> Any:
    """What `{{ ... }}` prints, when it prints to at most MAX_STRING characters."""
    return _check_text(value, "an output")


_env = BoundedEnvironment(autoescape=False)

_WHOLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)


def _expression(text: str) -> str | None:
    """The inner expression when `text` is exactly one `{{ expression }}`."""
    match = _WHOLE_EXPRESSION.match(text)
    if match and "{{" not in match["expr"] and "}}" not in match["expr"]:
        return match["expr"]
    return None


@lru_cache(maxsize=2048)
def _compiled_expression(expression: str) -> Any:
    """A playbook's expressions are few and evaluated in every run: compiled once (Jinja templates are thread-safe)."""
    return _env.compile_expression(expression, undefined_to_none=False)


@lru_cache(maxsize=2048)
def _compiled_template(text: str) -> Template:
    return _env.from_string(text)


def _evaluate(expression: str, context: dict[str, Any]) -> Any:
    value = _compiled_expression(expression)(**context)
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    return _check_text(value, "the expression's value")


def evaluate(expression: str, context: dict[str, Any], timeout: float | None = None) -> Any:
    """Evaluate a Jinja expression (a step's `when`, a classification rule) to a Python value.

    `timeout`: seconds it may take (at most MAX_SECONDS, the default).
    """
    with _bounded(timeout):
        return _evaluate(expression, context)


def _render(value: Any, context: dict[str, Any]) -> Any:
    if isinstance(value, str):
        if "{" not in value:
            return value
        expression = _expression(value)
        if expression is not None:
            return _evaluate(expression, context)
        return _compiled_template(value).render(**context)
    if isinstance(value, dict):
        return {key: _render(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [_render(item, context) for item in value]
    return value


def render_value(value: Any, context: dict[str, Any], timeout: float | None = None) -> Any:
    """Render every string in `value`; a string that is one `{{ expr }}` keeps the native type.

    `timeout`: seconds the whole rendering may take (at most MAX_SECONDS, the default).
    """
    with _bounded(timeout):
        return _render(value, context)


def parse(text: str, as_expression: bool = False) -> nodes.Template:
    """The Jinja AST of a template (or of an expression); raises TemplateSyntaxError (irp/playbook/templates.py reads it)."""
    expression = text if as_expression else _expression(text)
    if expression is not None:
        return _env.parse("{{ " + expression + " }}")
    return _env.parse(text)


def file_environment(folder: str) -> BoundedEnvironment:
    """A bounded environment over a folder of templates; HTML templates are autoescaped."""
    from jinja2 import FileSystemLoader, select_autoescape

    return BoundedEnvironment(loader=FileSystemLoader(folder), autoescape=select_autoescape(["html", "htm", "html.j2"]))


def render_subject_body(template: Template, context: dict[str, Any], timeout: float | None = None) -> tuple[str, str]:
    """Render a message template to (subject, body), bounded; the subject is its `{% set subject = ... %}`,
    on one line (no CR/LF injection)."""
    with _bounded(timeout):
        ctx = template.new_context(context)
        body = template.environment.concat(template.root_render_func(ctx))  # type: ignore[attr-defined]
        subject = _check_text(ctx.get_exported().get("subject", ""), "the subject")
        return " ".join(str(subject).split()), body


def render_message(folder: str, name: str, context: dict[str, Any]) -> tuple[str, str]:
    """Render the message template `name` of `folder` to (subject, body)."""
    return render_subject_body(file_environment(folder).get_template(name), context)
