"""Problems in a YAML file, each printed as FILE:LINE:COL: key.path: message.

Pydantic's errors are rewritten here with the line and column of the key they are about, so every
check of playbooks and routing files reports the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

__all__ = ["Loc", "Positions", "Problem", "loc_path", "schema_problems", "with_input"]


@dataclass(frozen=True)
class Problem:
    """One problem in a file, printed as FILE:LINE:COL: key.path: message."""

    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}:{self.col}: {where}{self.message}"


Loc = tuple[str | int, ...]


class Positions:
    """Line and column (1-based) of every key and item, from ruamel's round-trip nodes."""

    def __init__(self) -> None:
        self.at: dict[Loc, tuple[int, int]] = {(): (1, 1)}

    def find(self, loc: Loc) -> tuple[int, int]:
        while loc not in self.at:
            loc = loc[:-1]
        return self.at[loc]

    def problem(self, file: str, loc: Loc, message: str) -> Problem:
        """A problem about the key or item at `loc` (or its nearest parent in the file)."""
        line, col = self.find(loc)
        return Problem(file, line, col, loc_path(loc), message)


def loc_path(loc: Loc) -> str:
    """A location as people write it: stages.detect.0.args."""
    return ".".join(str(part) for part in loc)


def _model_at(model: Any, loc: Loc) -> type[BaseModel] | None:
    """The model class that sits at `loc` under `model`, to list its valid keys."""
    current: Any = model
    for part in loc:
        while get_origin(current) in (Union, Annotated) or type(current).__name__ == "UnionType":
            current = next(a for a in get_args(current) if a is not type(None))
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif get_origin(current) in (list, dict):
            current = get_args(current)[-1]
        else:
            return None
    while get_origin(current) is Union or type(current).__name__ == "UnionType":
        current = next(a for a in get_args(current) if a is not type(None))
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def schema_problems(
    error: ValidationError, root: type[BaseModel], file: str, positions: Positions, prefix: Loc = ()
) -> list[Problem]:
    """Rewrite pydantic errors as Problems located in the file."""
    problems = []
    for err in error.errors(include_url=False):
        loc = (*prefix, *err["loc"])
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            parent = _model_at(root, err["loc"][:-1])
            valid = ", ".join(parent.model_fields) if parent else ""
            message = f"unknown key {err['loc'][-1]!r}" + (f"; valid keys: {valid}" if valid else "")
        elif err["type"] == "missing":
            message = "required key is missing"
        else:
            message = with_input(message, err)
        problems.append(positions.problem(file, loc, message))
    return problems


def with_input(message: str, err: Any) -> str:
    """Append the offending value when it is short enough to quote."""
    value = err.get("input")
    if isinstance(value, str | int | float | bool) and len(repr(value)) <= 60:
        return f"{message}, got {value!r}"
    return message
