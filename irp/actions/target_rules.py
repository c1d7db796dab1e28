"""IRP_ACTION_TARGETS: which targets configuration protects from every change, and which alert data may choose.

Rules are keyed by target kind (e.g. "iam_user") or by action (e.g. "aws.block_ip"), each with
`deny` and `allow` patterns: globs matched without regard to case; for cidr, a value is allowed
when it lies inside an allowed range and protected when it overlaps a denied one. The engine
applies them before a step runs (irp/engine/targets.py); an action applies `check_protected` to a
target it finds itself (a key's owner).
"""

from __future__ import annotations

import fnmatch
import ipaddress

from irp.actions.registry import get_registry
from irp.errors import ConfigurationError, ProtectedTargetError
from irp.settings import TargetRule, get_settings

__all__ = ["SETTING", "allowed", "check_protected", "protected_by"]

SETTING = "IRP_ACTION_TARGETS"


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


def protected_by(action: str, kind: str, value: str) -> str:
    """The rule that protects `value` from `action`, as text, or ''."""
    for key, rule in _rules(action, kind):
        for pattern in rule.deny:
            if _matches(kind, value, pattern, deny=True):
                return f'{SETTING}["{key}"] denies {pattern!r}'
    return ""


def check_protected(action: str, kind: str, value: str) -> None:
    """Raise ProtectedTargetError when `value` is protected; for targets an action finds itself (a key's owner)."""
    rule = protected_by(action, kind, value)
    if rule:
        raise ProtectedTargetError(f"refused: {kind} {value!r} is protected ({rule}): never changed automatically, "
                                   "approval or not")


def allowed(action: str, kind: str, value: str) -> bool:
    """Whether an allow pattern of IRP_ACTION_TARGETS lets alert data choose `value` for `action`."""
    return any(_matches(kind, value, pattern, deny=False)
               for _, rule in _rules(action, kind) for pattern in rule.allow)
