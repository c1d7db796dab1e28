"""Targets an alert may aim at: what a step changes, who chose it, and what configuration allows.

An alert is data, never authority: it may describe what happened, not choose what irp changes.
A target (an argument marked `Target` in tasks/registry.py) is *chosen by alert data* when the
playbook's template for it reads run data: `alert`, `steps` or `incident`, that is anything but
constants and configuration (`playbook`, `stage`, `phase`, `dry_run`). The check is static, on
the template's Jinja AST (irp/playbook/templates.py), and conservative: a step's output or an
incident field may come from the alert, so both count, and so does a template that does not parse. A default the action
fills in (e.g. IRP_AWS_WAF_IP_SET_ARN) is configuration.

Before a step whose action has targets runs, the engine (irp/engine/stages.py) asks `judge`:
- a target IRP_ACTION_TARGETS denies (under its kind or its action) is protected: the step fails
  with the reason and its on_failure applies, whatever the approval and whoever chose it;
- a target chosen by alert data that no allow pattern matches holds the step for an approval
  (its own `approval:`, or one person with the playbook defaults when it has none);
- otherwise the step runs.
Patterns are globs matched without regard to case; for cidr, a value is allowed when it lies
inside an allowed range and protected when it overlaps a denied one.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from irp.errors import ConfigurationError, ProtectedTargetError
from irp.playbook.templates import reads_run_data
from irp.settings import TargetRule, get_settings
from tasks.registry import ActionSpec, get_registry

__all__ = ["TargetValue", "Verdict", "check_protected", "judge", "targets_of"]

SETTING = "IRP_ACTION_TARGETS"


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


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _matches(kind: str, value: str, pattern: str, *, deny: bool) -> bool:
    """Does `pattern` cover `value`? cidr: inside the range (allow) or overlapping it (deny); else a glob."""
    if kind == "cidr":
        net, rng = _network(value), _network(pattern)
        if net is not None and rng is not None:
            return net.version == rng.version and (net.overlaps(rng) if deny else net.subnet_of(rng))
    return fnmatch.fnmatchcase(value.casefold(), pattern.casefold())


def _rules(action: str, kind: str) -> list[tuple[str, TargetRule]]:
    """The IRP_ACTION_TARGETS rules for a target of `kind` changed by `action`: per kind, then per action."""
    configured = get_settings().action_targets
    registry = get_registry()
    for key in configured:
        if "." in key and not (key in registry and registry[key].targets):
            with_targets = ", ".join(sorted(name for name, spec in registry.items() if spec.targets))
            raise ConfigurationError(f"{SETTING}: {key!r} is not an action with targets; actions with targets: "
                                     f"{with_targets}")
    return [(key, configured[key]) for key in (kind, action) if key in configured]


def _protected(action: str, kind: str, value: str) -> str:
    """The rule that protects `value` from `action`, as text, or ''."""
    for key, rule in _rules(action, kind):
        for pattern in rule.deny:
            if _matches(kind, value, pattern, deny=True):
                return f'{SETTING}["{key}"] denies {pattern!r}'
    return ""


def check_protected(action: str, kind: str, value: str) -> None:
    """Raise ProtectedTargetError when `value` is protected; for targets an action finds itself (a key's owner)."""
    rule = _protected(action, kind, value)
    if rule:
        raise ProtectedTargetError(f"refused: {kind} {value!r} is protected ({rule}): never changed automatically, "
                                   "approval or not")


def _allowed(action: str, target: TargetValue) -> bool:
    return any(_matches(target.kind, target.value, pattern, deny=False)
               for _, rule in _rules(action, target.kind) for pattern in rule.allow)


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
        rule = _protected(spec.name, target.kind, target.value)
        if rule:
            return Verdict(targets, refused=f"refused: {target} is protected ({rule}): never changed "
                                            "automatically, approval or not")
    unlisted = [t for t in targets if t.from_alert and not _allowed(spec.name, t)]
    if not unlisted:
        return Verdict(targets)
    why = "; ".join(f"{t} comes from alert data and no {SETTING} allow pattern covers it" for t in unlisted)
    return Verdict(targets, held=f"held for approval: {why}")
