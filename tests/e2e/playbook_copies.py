"""Editable copies of the shipped playbooks for end-to-end tests (fixture in tests/e2e/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML


def edit_playbook(folder: Path, incident_type: str, edit: Callable[[Any], None]) -> None:
    """Apply `edit` to the YAML document of one playbook in `folder`, keeping its comments."""
    yaml = YAML()
    path = folder / f"{incident_type}.yaml"
    document = yaml.load(path)
    edit(document)
    yaml.dump(document, path)
