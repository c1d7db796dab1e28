"""The bounds of irp's templates: numbers, text and lists a template may build, and its time budget.

Used by the sandbox (irp/templating/__init__.py): operators, calls of str methods, str.format and `%`,
and jinja's filters are checked before they build a value too large; every loop, call and operator
checks the clock.
"""

from __future__ import annotations

import operator
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from functools import reduce, wraps
from typing import Any

from jinja2 import Environment
from jinja2.exceptions import TemplateError
from jinja2.filters import make_attrgetter, sync_do_join
from jinja2.nodes import EvalContext
from jinja2.sandbox import SandboxedEscapeFormatter, SandboxedFormatter
from jinja2.utils import Namespace, pass_environment, pass_eval_context

MAX_INT = 10**100
MAX_STRING = 1024 * 1024
MAX_ITEMS = 100_000
MAX_SECONDS = 10.0
_MAX_INT_BITS = MAX_INT.bit_length()


class ExpressionError(TemplateError):
    """Raised when Python fails inside a template (a division by zero, a type mismatch, ...)."""


class ExpressionTooLargeError(ExpressionError):
    """Raised when a template would build a number, a string or a list past the bounds."""

    def __init__(self, what: str) -> None:
        super().__init__(f"expression too large: {what}")


class ExpressionTimeoutError(ExpressionError):
    """Raised when rendering runs past its time budget."""


# --- the time budget ------------------------------------------------------------------------

_deadline: ContextVar[tuple[float, float] | None] = ContextVar("irp_template_deadline", default=None)


def _tick() -> None:
    """Fail when the rendering in progress is past its deadline (called by loops, calls, operators)."""
    budget = _deadline.get()
    if budget is not None and time.monotonic() > budget[0]:
        raise ExpressionTimeoutError(
            f"still running after {budget[1]:g} s: the time limit of a template is the step's "
            f"timeout_seconds, at most {MAX_SECONDS:g} s"
        )


@contextmanager
def _bounded(timeout: float | None) -> Iterator[None]:
    """Run a rendering within its time budget, every failure raised as a TemplateError."""
    seconds = MAX_SECONDS if timeout is None else min(timeout, MAX_SECONDS)
    outer = _deadline.get()
    deadline = time.monotonic() + seconds
    token = _deadline.set(min(outer, (deadline, seconds)) if outer else (deadline, seconds))
    try:
        yield
    except TemplateError:
        raise
    except MemoryError:
        raise ExpressionTooLargeError("out of memory") from None
    except RecursionError:
        raise ExpressionError("nested too deeply (recursion)") from None
    except Exception as exc:
        raise ExpressionError(_shorten(f"{type(exc).__name__}: {exc}")) from None
    finally:
        _deadline.reset(token)


def _shorten(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


# --- sizes ----------------------------------------------------------------------------------


def _text_size(value: Any, limit: int = MAX_STRING) -> int:
    """About how many characters `str(value)` has (at least); stops counting once past `limit`."""
    if isinstance(value, str | bytes):
        return len(value)
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item) + 2
        elif isinstance(item, int):
            total += item.bit_length() * 3 // 10 + 1
        elif isinstance(item, range):
            total += 2 + 8 * len(item)
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + 2 * len(item)
            stack.extend(item)
        elif isinstance(item, Mapping):
            total += 2 + 4 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, Namespace):
            stack.append(object.__getattribute__(item, "_Namespace__attrs"))
        else:
            total += 4
    return total


def _describe(value: Any) -> str:
    """A short description of an operand, for messages."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**15:
        return f"a {value.bit_length() * 3 // 10 + 1}-digit number"
    if isinstance(value, str) and len(value) > 20:
        return f"a string of {len(value)} characters"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)} items"
    return repr(value) if isinstance(value, int | float | str | type(None)) else type(value).__name__


def _too_large(what: str, size: int, limit: int, unit: str) -> ExpressionTooLargeError:
    return ExpressionTooLargeError(f"{what} would make {size} {unit}; at most {limit} are allowed")


def _check_text(value: Any, what: str = "the value") -> Any:
    """`value` when it prints to at most MAX_STRING characters."""
    if _text_size(value) > MAX_STRING:
        raise ExpressionTooLargeError(f"{what} prints to more than {MAX_STRING} characters")
    return value


def _check_result(value: Any, what: str) -> Any:
    """`value` when the number, string or list an operator or filter built is within the bounds."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise ExpressionTooLargeError(f"{what} gives {_describe(value)}; integers are limited to ±10**100")
    if isinstance(value, list | tuple) and len(value) > MAX_ITEMS:
        raise _too_large(what, len(value), MAX_ITEMS, "items")
    if isinstance(value, str | bytes | list | tuple | Mapping):
        _check_text(value, f"{what} gives a value that")
    return value


def _width(value: Any, what: str) -> int:
    width = value if isinstance(value, int) else len(value) if isinstance(value, str) else 0
    if width > MAX_STRING:
        raise _too_large(what, width, MAX_STRING, "characters")
    return width


# --- operators ------------------------------------------------------------------------------

_BINOPS: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
    "//": operator.floordiv, "%": operator.mod, "**": operator.pow,
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _binop(op: str, left: Any, right: Any) -> Any:
    """`left op right`, refused before it is computed when its result would be out of bounds."""
    _tick()
    what = f"{_describe(left)} {op} {_describe(right)}"
    if op == "**" and _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
        if (abs(left).bit_length() - 1) * right > _MAX_INT_BITS:
            raise ExpressionTooLargeError(f"{what} is larger than 10**100, the largest integer allowed")
    elif op == "*" and _is_int(left) and _is_int(right):
        if left.bit_length() + right.bit_length() > _MAX_INT_BITS + 1:
            raise ExpressionTooLargeError(f"{what} is larger than 10**100, the largest integer allowed")
    elif op == "*":
        sequence, times = (left, right) if isinstance(left, str | list | tuple) else (right, left)
        if isinstance(sequence, str | list | tuple) and _is_int(times) and times > 1:
            if isinstance(sequence, list | tuple) and len(sequence) * times > MAX_ITEMS:
                raise _too_large(what, len(sequence) * times, MAX_ITEMS, "items")
            _check_size(what, _text_size(sequence) * times)
    elif op == "+" and isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
        _check_size(what, _text_size(left) + _text_size(right))
    elif op == "%" and isinstance(left, str):
        _check_percent(left, right, what)
    return _check_result(_BINOPS[op](left, right), what)


def _check_size(what: str, size: int) -> None:
    if size > MAX_STRING:
        raise _too_large(what, size, MAX_STRING, "characters")


_PERCENT = re.compile(r"%(?:\((?P<key>[^)]*)\))?[#0 +\-]*(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d+))?[hlL]?(?P<kind>.)",
                      re.DOTALL)


def _check_percent(text: str, args: Any, what: str) -> None:
    """Refuse a `%` formatting whose widths or arguments would make the result too large."""
    positional = args if isinstance(args, tuple) else (args,)
    mapping = args if isinstance(args, Mapping) else {}
    size, index = len(text), 0

    def take() -> Any:
        nonlocal index
        index += 1
        return positional[index - 1] if index <= len(positional) else None

    for match in _PERCENT.finditer(text):
        if match["kind"] == "%":
            continue
        for part in (match["width"], match["precision"]):
            if part == "*":
                given = take()
                size += abs(given) if _is_int(given) else 0
            elif part:
                size += int(part) if len(part) < 10 else MAX_STRING + 1
        size += _text_size(mapping.get(match["key"]) if match["key"] is not None else take())
        _check_size(what, size)


class _BoundedFormatter(SandboxedFormatter):
    """str.format in the sandbox, refusing widths and fields that would make the result too large."""

    _size = 0

    def vformat(self, format_string: str, args: Any, kwargs: Any) -> str:
        self._size = len(format_string)
        return super().vformat(format_string, args, kwargs)

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        _check_text(value, "a formatted field")
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> Any:
        numbers = [int(n) if len(n) < 10 else MAX_STRING + 1 for n in re.findall(r"\d+", format_spec)]
        self._size += max(numbers, default=0) + _text_size(value)
        _check_size("str.format", self._size)
        return super().format_field(value, format_spec)


class _BoundedEscapeFormatter(_BoundedFormatter, SandboxedEscapeFormatter):
    pass


# --- calls: str methods that amplify --------------------------------------------------------

def _check_method(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Refuse a str (or bytes, int) method call that would build too large a value; the args to call it with."""
    owner, name = getattr(method, "__self__", None), getattr(method, "__name__", "")
    what = f"{type(owner).__name__}.{name}"
    first = args[0] if args else next(iter(kwargs.values()), None)
    if _is_int(owner) and name == "to_bytes":
        _width(first if first is not None else 1, what)
    if not isinstance(owner, str | bytes):
        return args
    if name in ("center", "ljust", "rjust", "zfill"):
        _width(first, what)
    elif name == "expandtabs":
        tab = b"\t" if isinstance(owner, bytes) else "\t"
        _check_size(what, len(owner) + owner.count(tab) * _width(8 if first is None else first, what))  # type: ignore[arg-type]
    elif name == "replace" and len(args) >= 2:
        _check_size(what, _replaced_size(owner, *args[:3]))
    elif name == "join" and args:
        return (_joined(args[0], owner, what), *args[1:])
    elif name == "translate" and isinstance(first, Mapping):
        _check_size(what, len(owner) * max((_text_size(v) for v in first.values()), default=1))
    return args


def _replaced_size(text: str | bytes, old: Any, new: Any, count: Any = -1) -> int:
    """Length of `text.replace(old, new, count)`, without building it."""
    found = len(text) + 1 if not old else text.count(old)
    if _is_int(count) and count >= 0:
        found = min(found, count)
    return len(text) + found * (_text_size(new) - _text_size(old))


def _joined(items: Iterable[Any], separator: Any, what: str) -> list[Any]:
    """`items` as a list, when joining them with `separator` makes at most MAX_STRING characters."""
    out, size, step = [], 0, len(str(separator))
    for item in items:
        _tick()
        size += _text_size(item) + step
        _check_size(what, size - step)
        out.append(item)
    return out


def _range(*args: int) -> range:
    """range(), at most MAX_ITEMS numbers."""
    numbers = range(*args)
    if len(numbers) > MAX_ITEMS:
        raise _too_large(f"range({', '.join(map(str, args))})", len(numbers), MAX_ITEMS, "items")
    return numbers


# --- filters --------------------------------------------------------------------------------

# Filters that turn their input into text: the input must print to at most MAX_STRING characters,
# and so must the result.
_TEXT_FILTERS = {
    "capitalize", "center", "e", "escape", "forceescape", "format", "indent", "lower", "pprint", "replace",
    "safe", "string", "striptags", "title", "tojson", "trim", "truncate", "upper", "urlencode", "urlize",
    "wordcount", "wordwrap", "xmlattr",
}
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def _check_filter_args(name: str, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse the arguments of a filter that would make its result too large."""
    what = f"the {name} filter"

    def arg(index: int, key: str, default: Any = None) -> Any:
        return args[index] if len(args) > index else kwargs.get(key, default)

    size = _text_size(value)
    if name in _TEXT_FILTERS and size > MAX_STRING:
        raise ExpressionTooLargeError(f"the input of {what} prints to more than {MAX_STRING} characters")
    if name == "center":
        _width(arg(0, "width", 80), what)
    elif name == "indent":
        lines = sum(str(value).count(c) for c in _LINE_BREAKS) + 1
        _check_size(what, size + lines * _width(arg(0, "width", 4), what))
    elif name == "wordwrap":
        _check_size(what, size + size * len(str(arg(2, "wrapstring") or "\n")))
    elif name == "replace" and len(args) >= 2:
        _check_size(what, _replaced_size(str(value), *args[:3]))
    elif name == "urlize":
        _check_size(what, 4 * size + (size // 4 + 1) * (_text_size(arg(2, "target")) + _text_size(arg(3, "rel"))))
    elif name == "format":
        _check_percent(str(value), kwargs or args, what)
    elif name in ("batch", "slice"):
        count = arg(0, "linecount" if name == "batch" else "slices", 1)
        if _is_int(count) and count > MAX_ITEMS:
            raise _too_large(what, count, MAX_ITEMS, "items")
        _check_size(what, _text_size(arg(1, "fill_with")) * max(count, 0) if _is_int(count) else 0)


def _bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` (a jinja filter) with its arguments checked before and, for text, its result after."""
    passes_state, text = hasattr(function, "jinja_pass_arg"), name in _TEXT_FILTERS

    @wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        state, (value, *rest) = (args[:1], args[1:]) if passes_state else ((), args)
        if text or name in ("batch", "slice"):
            _check_filter_args(name, value, tuple(rest), kwargs)
        result = function(*state, value, *rest, **kwargs)
        if name == "map" and rest and isinstance(rest[0], str):
            return _bounded_items(result, f"the map filter applying {rest[0]}")
        return _check_result(result, f"the {name} filter") if text else result

    return bounded


def _bounded_items(items: Iterable[Any], what: str) -> Iterator[Any]:
    """`items`, as long as all of them together print to at most MAX_STRING characters."""
    size = 0
    for item in items:
        _tick()
        size += _text_size(item)
        _check_size(what, size)
        yield item


@pass_eval_context
def _join(eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: str | int | None = None) -> str:
    """jinja's join, refused when the joined text would be too large."""
    if attribute is not None:
        value = map(make_attrgetter(eval_ctx.environment, attribute), value)
    return sync_do_join(eval_ctx, _joined(value, d, "the join filter"), d)


@pass_environment
def _sum(environment: Environment, iterable: Iterable[Any], attribute: str | int | None = None, start: Any = 0) -> Any:
    """jinja's sum, each addition bounded like `+`."""
    if attribute is not None:
        iterable = map(make_attrgetter(environment, attribute), iterable)
    return reduce(lambda total, item: _binop("+", total, item), iterable, start)
