"""Targets an alert may aim at: what a step changes, who chose it, and what configuration allows.

An alert is data, never authority: it may describe what happened, not choose what irp changes.
A target (an argument marked `Target` in irp/actions/registry.py) is *chosen by alert data* when the
playbook's template for it reads run data: `alert`, `steps` or `incident`, that is anything but
constants and configuration (`playbook`, `stage`, `phase`, `dry_run`). The check is static, on
the template's Jinja AST (irp/playbook/templates.py), and conservative: a step's output or an
incident field may come from the alert, so both count, and so does a template that does not
parse. A default the action fills in (e.g. IRP_AWS_WAF_IP_SET_ARN) is configuration.

Before a step whose action has targets runs, the engine (irp/engine/stages.py) asks `judge`:
- a target IRP_ACTION_TARGETS denies (under its kind or its action) is protected: the step fails
  with the reason and its on_failure applies, whatever the approval and whoever chose it;
- a target chosen by alert data that no allow pattern matches holds the step for an approval
  (its own `approval:`, or one person with the playbook defaults when it has none);
- otherwise the step runs.
The rules themselves (patterns, kinds, actions) are irp/actions/target_rules.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from irp.actions.registry import ActionSpec
from irp.actions.target_rules import SETTING, allowed, protected_by
from irp.playbook.templates import reads_run_data

__all__ = ["TargetValue", "Verdict", "judge", "targets_of"]


@dataclass(frozen=True)
class TargetValue:
    """One thing a step would change: which argument, of what kind, the value, and who chose it."""

    arg: str
    kind: str
    value: str
    from_alert: bool

    def __str__(self) -> str:
        shown = self.value if len(self.value) <= 120 else self.value[:117] + "..."
        return f"{self.arg} {shown!r} ({self.kind})"


@dataclass(frozen=True)
class Verdict:
    """What `judge` decided: `refused` when a target is protected, `held` when an approval is needed."""

    targets: list[TargetValue] = field(default_factory=list)
    refused: str = ""
    held: str = ""


def targets_of(spec: ActionSpec, raw_args: dict[str, Any], parsed: BaseModel) -> list[TargetValue]:
    """The targets of a step: its parsed target arguments, each marked with whether alert data chose it."""
    found = []
    for arg, target in spec.targets.items():
        value = getattr(parsed, arg)
        if value is None:
            continue
        kind = target.resolve(parsed)
        from_alert = reads_run_data(raw_args[arg]) if arg in raw_args else False
        for item in value if isinstance(value, list) else [value]:
            found.append(TargetValue(arg, kind, str(item), from_alert))
    return found


def judge(spec: ActionSpec, raw_args: dict[str, Any], parsed: BaseModel) -> Verdict:
    """Refuse a step that would change a protected target; hold one whose alert-chosen targets are not allowed."""
    targets = targets_of(spec, raw_args, parsed)
    for target in targets:
        rule = protected_by(spec.name, target.kind, target.value)
        if rule:
            return Verdict(targets, refused=f"refused: {target} is protected ({rule}): never changed "
                                            "automatically, approval or not")
    unlisted = [t for t in targets if t.from_alert and not allowed(spec.name, t.kind, t.value)]
    if not unlisted:
        return Verdict(targets)
    why = "; ".join(f"{t} comes from alert data and no {SETTING} allow pattern covers it" for t in unlisted)
    return Verdict(targets, held=f"held for approval: {why}")
