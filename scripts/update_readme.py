"""Regenerate the README's generated tables (actions, settings): .venv/bin/python scripts/update_readme.py"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _block(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.DOTALL)


def settings_markdown() -> str:
    """The configuration table, one row per IRP_ setting."""
    from pydantic_core import PydanticUndefined

    from irp.settings import REPO_ROOT, Settings

    lines = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, info in Settings.model_fields.items():
        default = info.default_factory() if info.default is PydanticUndefined and info.default_factory else info.default
        shown = "—" if default in (None, "", [], {}) else str(default).replace(str(REPO_ROOT), "<repo>")
        description = (info.description or "").replace("|", "\\|")
        lines.append(f"| `IRP_{name.upper()}` | `{shown}` | {description} |")
    return "\n".join(lines) + "\n"


def readme_with_tables(text: str) -> str:
    from irp.actions.registry import catalogue_markdown

    text = _block("actions").sub(lambda m: m[1] + catalogue_markdown() + m[2], text)
    return _block("settings").sub(lambda m: m[1] + settings_markdown() + m[2], text)


if __name__ == "__main__":
    sys.path.insert(0, str(README.parent))
    README.write_text(readme_with_tables(README.read_text()))
