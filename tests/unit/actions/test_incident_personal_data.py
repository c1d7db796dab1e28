"""incident.assess_personal_data: categories in the playbooks' words; an unknown one never stops the response."""

from __future__ import annotations

from pathlib import Path

from service_fixtures import make_ctx

from irp.actions.registry import get_registry
from irp.models import DataCategory, Stage


def _assess(tmp_path: Path, categories: str):
    ctx = make_ctx(tmp_path, action="incident.assess_personal_data", step="personal_data", stage=Stage.analyse)
    spec = get_registry()["incident.assess_personal_data"]
    _, output = spec.invoke({"involved": "True", "categories": categories, "approx_people": "120"}, ctx)
    return ctx, output


def test_unknown_categories_are_recorded_as_unclassified_and_known_ones_kept(tmp_path: Path) -> None:
    ctx, output = _assess(tmp_path, "contact, shoe_sizes, Recordings, pii, voice prints")
    facts = ctx.incident.personal_data
    assert facts.involved and facts.approx_people == 120
    assert facts.categories == [DataCategory.contact, DataCategory.call_recordings, DataCategory.identification]
    assert facts.unclassified == ["shoe_sizes", "voice prints"]
    assert output["unclassified"] == ["shoe_sizes", "voice prints"]
    [flag] = [e for e in ctx.timeline if e.data.get("unclassified")]
    assert flag.kind == "finding"
    assert flag.message.startswith("unclassified data categories 'shoe_sizes', 'voice prints': not in the vocabulary")


def test_known_categories_only_flag_nothing(tmp_path: Path) -> None:
    ctx, _ = _assess(tmp_path, "contact,call_recordings")
    assert ctx.incident.personal_data.unclassified == []
    assert not [e for e in ctx.timeline if e.data.get("unclassified")]
