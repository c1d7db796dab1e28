"""Scripted people for tests whose subject is not the lifecycle: every stage ended by a responder.

Runs that are not deployments end where they wait for people (irp/engine/waits.py); a test that
checks what a whole response did passes EVERYONE_AGREES as the run's `decisions`.
"""

from __future__ import annotations

from irp.engine.script import Script

EVERYONE_AGREES = Script.model_validate({"decisions": [
    {"at": "1m", "by": "test responder", "advance": "detect", "note": "detection checked"},
    {"at": "2m", "by": "test responder", "advance": "analyse", "note": "analysis done"},
    {"at": "3m", "by": "test responder", "advance": "contain", "note": "contained"},
    {"at": "4m", "by": "test responder", "advance": "restore", "note": "service and data checked"},
    {"at": "5m", "by": "test reviewer", "review": {"causes": "established by the test"}},
    {"at": "6m", "by": "test DPO", "advance": "notify", "note": "notifications handled outside irp"},
]})
