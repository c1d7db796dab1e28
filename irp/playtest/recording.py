"""`irp playbooks test --record`: write what a run observed into its case file, for a person to review."""

from __future__ import annotations

from pathlib import Path

from ruamel.yaml import YAML

from irp.playtest.runner import Outcome, observed

__all__ = ["write_observed"]


def write_observed(path: Path, outcome: Outcome) -> None:
    """Replace the case's `expect` (its `actions` kept) and the facts of the providers that answered with what the
    run did; comments stay."""
    yaml = YAML(typ="rt")
    yaml.width = 130
    document = yaml.load(path.read_text(encoding="utf-8"))
    for provider, facts in outcome.recorded_facts.items():
        if facts:
            document.setdefault("facts", {})[provider] = facts
    kept = (document.get("expect") or {}).get("actions")  # chosen by a person: a recording does not pick them
    document["expect"] = observed(outcome)
    if kept:
        document["expect"]["actions"] = kept
    with path.open("w", encoding="utf-8") as handle:
        yaml.dump(document, handle)
