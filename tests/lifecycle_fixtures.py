"""Scripted people for tests whose subject is not the lifecycle: every gate approved, every stage ended.

Runs that are not deployments end where they wait for people (irp/engine/waits.py), and a gated step
pauses for the Prefect UI when a server is there; a test that checks what a whole response did passes
EVERYONE_AGREES as the run's `decisions`: two people approve every gated step of the shipped
playbooks, then a responder ends each stage.
"""

from __future__ import annotations

from pathlib import Path

from irp.engine.script import Script
from irp.playbook.loader import load_playbook

PLAYBOOKS = Path(__file__).resolve().parents[1] / "playbooks"


def _gated_steps() -> list[str]:
    steps = set()
    for path in PLAYBOOKS.glob("*.yaml"):
        if path.name == "routing.yaml":
            continue
        steps |= {step.id for _, _, step in load_playbook(path).playbook.steps() if step.approval is not None}
    return sorted(steps)


_APPROVALS = [{"at": "30s", "by": who, "approve": step, "note": "approved by the test"}
              for step in _gated_steps() for who in ("test approver", "second test approver")]
GATES_APPROVED = Script.model_validate({"decisions": _APPROVALS})  # the gates only: the run still waits for people
EVERYONE_AGREES = Script.model_validate({"decisions": [
    *_APPROVALS,
    {"at": "1m", "by": "test responder", "advance": "detect", "note": "detection checked"},
    {"at": "2m", "by": "test responder", "advance": "analyse", "note": "analysis done"},
    {"at": "3m", "by": "test responder", "advance": "contain", "note": "contained"},
    {"at": "4m", "by": "test responder", "advance": "restore", "note": "service and data checked"},
    {"at": "5m", "by": "test reviewer", "review": {"causes": "established by the test"}},
    {"at": "6m", "by": "test DPO", "advance": "notify", "note": "notifications handled outside irp"},
]})
