"""What the schema cannot check in a playbook or a routing file, each found as a located Problem.

Playbooks: action names, step arguments against each action's argument model, template syntax and
variables, references to steps not run before, duplicate ids, and URLs or paths read from alert
data. Notes (not errors) name each step without `approval:` whose target alert data chooses: the
run holds it for an approval unless IRP_ACTION_TARGETS allows the value (irp/engine/targets.py).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jmespath
import jmespath.exceptions
import jmespath.functions
from pydantic import ValidationError

from irp.actions.registry import ActionSpec, get_registry
from irp.models import Stage
from irp.playbook import templates
from irp.playbook.models import LABEL_NAME, Playbook, Routing, Step
from irp.playbook.problems import Loc, Positions, Problem, loc_path, with_input
from irp.settings import get_settings

__all__ = ["TARGET_ARGS", "TEMPLATE_VARIABLES", "jmespath_error", "routing_problems", "semantic_problems", "target_notes"]

TEMPLATE_VARIABLES = ("alert", "dry_run", "incident", "phase", "playbook", "stage", "steps")
# Arguments that say where irp sends a request or which file it reads: never from alert data.
TARGET_ARGS = {
    "url": "where irp sends a request; name a configured URL instead (endpoint: NAME, set in IRP_HTTP_ENDPOINTS)",
    "path": "which local file irp reads; collect a fixed path below IRP_EVIDENCE_COLLECT_ROOTS",
    "query": "what a query does; write the query as a constant and put alert values in `values` (${name})",
}
_ALERT = frozenset({"alert"})


def _template_strings(value: Any, loc: Loc) -> Iterator[tuple[Loc, str]]:
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _template_strings(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _template_strings(item, (*loc, index))


def _is_template(value: Any) -> bool:
    return any("{{" in s or "{%" in s for _, s in _template_strings(value, ()))


def _visible_steps(playbook: Playbook) -> dict[tuple[Stage, int], set[str]]:
    """For each step, the ids of steps certain to have run before it.

    Order: detect, analyse, then notify (initial) beside contain and restore, review, notify (final).
    """
    ids = {stage: [s.id for s in steps] for stage, steps in playbook.stages.items()}
    notify = playbook.stages.notify
    initial = [s.id for s in notify if s.phase != "final"]
    before = {
        Stage.detect: [],
        Stage.analyse: ids[Stage.detect],
        Stage.contain: ids[Stage.detect] + ids[Stage.analyse],
        Stage.restore: ids[Stage.detect] + ids[Stage.analyse] + ids[Stage.contain],
        Stage.review: ids[Stage.detect] + ids[Stage.analyse] + ids[Stage.contain] + ids[Stage.restore] + initial,
    }
    visible: dict[tuple[Stage, int], set[str]] = {}
    for stage, index, step in playbook.steps():
        if stage == Stage.notify:
            earlier = [s.id for s in notify[:index]]
            if step.phase == "final":
                seen = set(before[Stage.review]) | set(ids[Stage.review]) | set(earlier)
            else:
                seen = set(before[Stage.contain]) | {s.id for s in notify[:index] if s.phase != "final"}
        else:
            seen = set(before[stage]) | set(ids[stage][:index])
        visible[(stage, index)] = seen
    return visible


class _Checker:
    """Collects the problems of one playbook file."""

    def __init__(self, file: str, positions: Positions) -> None:
        self.file = file
        self.positions = positions
        self.problems: list[Problem] = []

    def add(self, loc: Loc, message: str) -> None:
        self.problems.append(self.positions.problem(self.file, loc, message))

    def template(self, loc: Loc, text: str, as_expression: bool, visible: set[str] | None) -> None:
        """Syntax, variables and step references of one template."""
        error = templates.syntax_error(text, as_expression)
        if error:
            self.add(loc, error)
            return
        for variable in sorted(templates.variables_read(text, as_expression) - set(TEMPLATE_VARIABLES)):
            self.add(loc, f"unknown variable {variable!r}; available: {', '.join(TEMPLATE_VARIABLES)}")
        if visible is not None:
            for ref in sorted(templates.referenced_steps(text, as_expression) - visible):
                self.add(loc, f"references step {ref!r}, which is not defined before this step"
                         + (f"; steps available here: {', '.join(sorted(visible))}" if visible else ""))

    def step(self, loc: Loc, stage: Stage, step: Step, visible: set[str], registry: dict[str, ActionSpec]) -> None:
        """Everything about one step but its arguments' values."""
        if step.phase and stage != Stage.notify:
            self.add((*loc, "phase"), f"phase is only valid in the notify stage, not in {stage.value}")
        if step.when is not None:
            self.template((*loc, "when"), step.when, True, visible)
        for arg_loc, text in _template_strings(step.args, (*loc, "args")):
            self.template(arg_loc, text, False, visible)
        for name, fix in TARGET_ARGS.items():
            value = step.args.get(name)
            if isinstance(value, str) and not templates.syntax_error(value) and templates.reads_run_data(value, _ALERT):
                self.add((*loc, "args", name), f"takes its value from alert data: an alert may not choose {fix}")
        if step.approval is not None:
            self.approval((*loc, "approval"), step)
        spec = registry.get(step.action)
        if spec is None:
            self.add((*loc, "action"), _unknown_action(step.action, registry))
        else:
            self.args(loc, step, spec)

    def approval(self, loc: Loc, step: Step) -> None:
        """The approval's groups against IRP_APPROVERS, when it is configured."""
        groups = get_settings().approvers
        gate = step.approval
        if not groups or gate is None:
            return
        for key in ("group", "escalate_to"):
            name = getattr(gate, key)
            if name is not None and name not in groups:
                self.add((*loc, key), f"approver group {name!r} is not in IRP_APPROVERS; configured: "
                         f"{', '.join(sorted(groups))}")
        if gate.verified and gate.group in groups and len(groups[gate.group]) < gate.approvers:
            self.add((*loc, "approvers"), f"{gate.approvers} verified approvals needed but group {gate.group!r} has "
                     f"{len(groups[gate.group])} member(s) in IRP_APPROVERS")

    def args(self, loc: Loc, step: Step, spec: ActionSpec) -> None:
        """The step's literal arguments against the action's argument model (templates are checked when rendered)."""
        literal_args = {k: v for k, v in step.args.items() if not _is_template(v)}
        try:
            spec.args_model.model_validate(literal_args)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                key = err["loc"][0] if err["loc"] else None
                if key is None and len(literal_args) < len(step.args):
                    continue  # a whole-model check that depends on templated arguments: checked when rendered
                if err["type"] == "missing" and key in step.args:
                    continue  # given as a template: checked when rendered
                arg_loc = (*loc, "args", *err["loc"]) if err["loc"] else (*loc, "args")
                if err["type"] == "extra_forbidden":
                    valid = ", ".join(spec.args_model.model_fields) or "none"
                    self.add(arg_loc, f"unknown argument {key!r} for action {step.action}; valid arguments: {valid}")
                elif err["type"] == "missing":
                    self.add((*loc, "args"), f"missing argument {key!r} required by action {step.action}")
                else:
                    self.add(arg_loc, with_input(err["msg"], err))


def semantic_problems(playbook: Playbook, file: str, positions: Positions) -> list[Problem]:
    """What the schema cannot check: names, arguments, templates, references, ids."""
    registry = get_registry()
    check = _Checker(file, positions)
    if Path(file).stem != playbook.incident_type.value:
        check.add(("incident_type",), f"is {playbook.incident_type.value!r} but the file is named "
                  f"{Path(file).name!r}: a playbook file is named after its incident type")
    for index, rule in enumerate(playbook.classification.rules):
        check.template(("classification", "rules", index, "when"), rule.when, True, set())
    seen: dict[str, Loc] = {}
    visible = _visible_steps(playbook)
    for stage, index, step in playbook.steps():
        loc: Loc = ("stages", stage.value, index)
        if step.id in seen:
            check.add((*loc, "id"), f"duplicate step id {step.id!r}, first defined at {loc_path(seen[step.id])}")
        else:
            seen[step.id] = loc
        check.step(loc, stage, step, visible[(stage, index)], registry)
    return check.problems


def _unknown_action(name: str, registry: dict[str, Any]) -> str:
    """Name the bad action and the valid ones nearest to it."""
    namespace = name.partition(".")[0]
    close = difflib.get_close_matches(name, registry, n=3, cutoff=0.75)
    if close:
        hint = "did you mean " + " or ".join(repr(c) for c in close) + "?"
    elif any(key.startswith(namespace + ".") for key in registry):
        hint = "actions in " + namespace + ": " + ", ".join(sorted(k for k in registry if k.startswith(namespace + ".")))
    else:
        hint = "namespaces: " + ", ".join(sorted({key.partition(".")[0] for key in registry}))
    return f"unknown action {name!r}; {hint} (irp playbooks actions lists them all)"


def target_notes(playbook: Playbook, file: str, positions: Positions) -> list[Problem]:
    """Steps without approval whose targets alert data chooses: held at run time unless configured.

    Notes, not errors: the engine holds such a step safely (irp/engine/targets.py), and a deployment
    may allow the values (IRP_ACTION_TARGETS); the note tells the author which steps will wait for a person.
    """
    registry = get_registry()
    notes = []
    for stage, index, step in playbook.steps():
        spec = registry.get(step.action)
        if spec is None or step.approval is not None:
            continue
        for arg, target in spec.targets.items():
            if arg in step.args and templates.reads_run_data(step.args[arg]):
                kinds = "/".join(target.kinds(spec.args_model))
                notes.append(positions.problem(
                    file, ("stages", stage.value, index, "args", arg),
                    f"note: {step.action} changes this target ({kinds}) and alert data chooses its value, with "
                    f"no approval: the run holds the step for one unless IRP_ACTION_TARGETS allows "
                    f"the value (add approval: to always ask, or a constant target)"))
    return notes


# --- routing.yaml ----------------------------------------------------------------------------


def _regexes(routing: Routing) -> list[tuple[tuple, str]]:
    found: list[tuple[tuple, str]] = []
    for index, route in enumerate(routing.routes):
        for label, pattern in route.labels_regex.items():
            found.append((("routes", index, "labels_regex", label), pattern))
        if route.title_regex is not None:
            found.append((("routes", index, "title_regex"), route.title_regex))
    return found


def routing_problems(routing: Routing, file: str, positions: Positions) -> list[Problem]:
    """What the schema cannot check in a routing file: unique names, one incident type, labels, regexes."""
    problems: list[Problem] = []

    def add(loc: tuple, message: str) -> None:
        problems.append(positions.problem(file, loc, message))

    seen: dict[str, int] = {}
    for index, route in enumerate(routing.routes):
        if route.name in seen:
            add(("routes", index, "name"), f"duplicate route name {route.name!r} (first at routes.{seen[route.name]})")
        seen.setdefault(route.name, index)
        if (route.incident_type is None) == (route.incident_type_label is None):
            add(("routes", index), "set exactly one of incident_type and incident_type_label")
        extra = [label for label in (route.incident_type_label, route.severity_label) if label]
        for label in [*route.labels, *route.labels_regex, *(route.group_by or []), *extra]:
            if not re.match(LABEL_NAME, label):
                add(("routes", index), f"invalid label name {label!r}: use letters, digits, '_', '.' and '-'")
        for label, expression in route.map.items():
            if not re.match(LABEL_NAME, label):
                add(("routes", index, "map", label), f"invalid label name {label!r}: use letters, digits, '_', '.' "
                    "and '-'")
            error = jmespath_error(expression)
            if error:
                add(("routes", index, "map", label), f"invalid JMESPath expression {expression!r}: {error}")
    for loc, pattern in _regexes(routing):
        try:
            re.compile(pattern)
        except re.error as exc:
            add(loc, f"invalid regular expression {pattern!r}: {exc}")
    return problems


def jmespath_error(expression: str) -> str | None:
    """What is wrong with a JMESPath expression (syntax, unknown function), or None."""
    try:
        parsed = jmespath.compile(expression).parsed
    except jmespath.exceptions.LexerError as exc:
        return f"unexpected {exc.token_value!r} at column {exc.lex_position} (an unclosed quote or a character " \
               "JMESPath does not use)"
    except jmespath.exceptions.ParseError as exc:
        if exc.token_type is None:  # the expression ends before it is complete
            return f"incomplete expression at column {exc.lex_position}"
        return f"unexpected {exc.token_value!r} at column {exc.lex_position}"
    except jmespath.exceptions.JMESPathError as exc:  # the lexer: an unknown character, an unclosed quote
        return " ".join(str(exc).split())
    stack = [parsed]
    while stack:
        node = stack.pop()
        if node.get("type") == "function_expression" and node["value"] not in _JMESPATH_FUNCTIONS:
            return f"unknown function {node['value']}(); valid: {', '.join(sorted(_JMESPATH_FUNCTIONS))}"
        stack.extend(child for child in node.get("children", []) if isinstance(child, dict))
    return None


_JMESPATH_FUNCTIONS = frozenset(jmespath.functions.Functions.FUNCTION_TABLE)
