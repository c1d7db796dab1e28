"""Parsing of list values written as text (settings, action arguments, credentials): "a, b,,c"."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["split_list"]


def split_list(value: Any, separators: str = ",") -> Any:
    """A list, or a string of items separated by any of `separators`, as its items: stripped, non-empty, each
    once, in order; None is []. Any other value is returned as is, for the caller's validation to refuse."""
    if value is None:
        return []
    if isinstance(value, str):
        value = re.split(f"[{re.escape(separators)}]", value)
    elif not isinstance(value, list):
        return value
    return list(dict.fromkeys(str(item).strip() for item in value if str(item).strip()))
