"""Regenerate the README's action catalogue from the registry: .venv/bin/python scripts/update_readme.py"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"(<!-- actions:start -->\n).*?(<!-- actions:end -->)", re.DOTALL)


def readme_with_catalogue(text: str) -> str:
    from tasks.registry import catalogue_markdown

    return BLOCK.sub(lambda m: m[1] + catalogue_markdown() + m[2], text)


if __name__ == "__main__":
    sys.path.insert(0, str(README.parent))
    README.write_text(readme_with_catalogue(README.read_text()))
