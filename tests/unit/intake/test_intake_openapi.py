"""The committed OpenAPI document is the one the service serves."""

from __future__ import annotations

import json
from pathlib import Path

from irp.intake.app import SOURCES, openapi_spec

COMMITTED = Path(__file__).resolve().parents[3] / "docs" / "openapi.json"


def test_committed_spec_is_current() -> None:
    committed = json.loads(COMMITTED.read_text())
    assert committed == json.loads(json.dumps(openapi_spec())), (
        "docs/openapi.json is stale: regenerate with `irp webhook --openapi > docs/openapi.json`")


def test_every_source_documents_its_body_and_errors() -> None:
    spec = openapi_spec()
    for source in SOURCES.values():
        operation = spec["paths"][source.path]["post"]
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.rsplit("/", 1)[1] in spec["components"]["schemas"]
        assert {"202", "401", "413", "422"} <= set(operation["responses"])
