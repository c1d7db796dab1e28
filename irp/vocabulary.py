"""The words playbooks read (data categories, severities) and the synonyms sources use for them.

Synonyms come from SYNONYMS below, extended or overridden by IRP_VOCABULARY_SYNONYMS; matching
ignores case, spaces, '-' and '_'. A value that is neither a word nor a synonym is kept as it came,
as unclassified: the run records it for the analyst and goes on (never a failure).
"""

from __future__ import annotations

import re
from typing import Literal

from irp.models import DataCategory, Severity
from irp.settings import get_settings

__all__ = ["KINDS", "SYNONYMS", "Kind", "data_categories", "severity", "synonyms"]

Kind = Literal["data_categories", "severity"]
KINDS: dict[str, type[DataCategory] | type[Severity]] = {"data_categories": DataCategory, "severity": Severity}

SYNONYMS: dict[str, dict[str, str]] = {
    "data_categories": {
        "pii": "identification", "identity": "identification", "names": "identification",
        "email": "contact", "emails": "contact", "phone": "contact", "address": "contact",
        "passwords": "credentials", "password": "credentials", "tokens": "credentials", "secrets": "credentials",
        "recordings": "call_recordings", "audio": "call_recordings",
        "transcripts": "call_transcripts",
        "ratings": "performance_ratings", "scores": "performance_ratings",
        "payment": "financial", "iban": "financial", "bank": "financial", "card": "financial",
        "ip_addresses": "technical_identifiers", "ip": "technical_identifiers", "device_ids": "technical_identifiers",
        "health": "special_category", "biometric": "special_category",
    },
    # §5 has three levels; sources say more (ASFF labels, GuardDuty bands, PagerDuty, syslog).
    "severity": {
        "informational": "minor", "info": "minor", "low": "minor", "warning": "minor",
        "medium": "major", "moderate": "major", "error": "major",
        "high": "critical", "fatal": "critical", "emergency": "critical",
    },
}


def _key(value: str) -> str:
    return re.sub(r"[\s_-]+", "_", value.strip().lower())


def synonyms(kind: Kind) -> dict[str, str]:
    """Synonym (normalised) -> word, the shipped ones overridden by IRP_VOCABULARY_SYNONYMS."""
    words = KINDS[kind]
    table = {_key(k): v for k, v in SYNONYMS[kind].items()}
    table.update({_key(k): v for k, v in get_settings().vocabulary_synonyms.get(kind, {}).items()})
    table.update({_key(w.value): w.value for w in words})
    return table


def data_categories(values: list[str]) -> tuple[list[DataCategory], list[str]]:
    """(categories of the vocabulary, in order and once each; the other values, unclassified, as given)."""
    table = synonyms("data_categories")
    known: dict[DataCategory, None] = {}
    unknown: dict[str, None] = {}
    for value in values:
        word = table.get(_key(value))
        if word is None:
            if value.strip():
                unknown[value.strip()] = None
        else:
            known[DataCategory(word)] = None
    return list(known), list(unknown)


def severity(value: str) -> Severity | None:
    """The §5 severity a source's word means, or None when it is not in the vocabulary."""
    word = synonyms("severity").get(_key(value))
    return Severity(word) if word else None
