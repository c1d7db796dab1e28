"""What a playbook template reads, found on its Jinja AST without rendering it.

Syntax errors, the variables and steps it reads, and whether run data (alert, steps, incident)
chooses its value: the playbook checks and the engine's target rule (irp/engine/targets.py) ask here.
"""

from __future__ import annotations

from typing import Any

from jinja2 import TemplateSyntaxError, meta, nodes

from irp.templating import parse

__all__ = ["CONFIGURATION", "referenced_steps", "reads_run_data", "syntax_error", "variables_read"]

# Template variables a deployment or the playbook sets; every other variable is run data.
CONFIGURATION = frozenset({"playbook", "stage", "phase", "dry_run"})


def syntax_error(text: str, as_expression: bool = False) -> str | None:
    """The syntax error in a template (or expression) as one line, or None when it parses."""
    try:
        parse(text, as_expression)
    except TemplateSyntaxError as exc:
        return f"template syntax error: {exc.message} (template line {exc.lineno})"
    return None


def variables_read(text: str, as_expression: bool = False) -> set[str]:
    """The context variables a template reads; raises TemplateSyntaxError when it does not parse."""
    return meta.find_undeclared_variables(parse(text, as_expression))


def referenced_steps(text: str, as_expression: bool = False) -> set[str]:
    """Step ids a template reads through `steps.ID` or `steps['ID']`."""
    try:
        tree = parse(text, as_expression)
    except TemplateSyntaxError:
        return set()
    found: set[str] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        target = node.node
        if isinstance(target, nodes.Name) and target.name == "steps":
            if isinstance(node, nodes.Getattr):
                found.add(node.attr)
            elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                found.add(node.arg.value)
    return found


def reads_run_data(value: Any, variables: frozenset[str] | None = None) -> bool:
    """True when a step argument, as the playbook writes it, reads run data.

    Run data is `variables` when given (e.g. {"alert"}), else any variable but CONFIGURATION: alert,
    steps, incident (a step's output or an incident field may come from the alert). `value` is a
    template or dicts and lists of them; a template that does not parse counts.
    """
    if isinstance(value, dict):
        return any(reads_run_data(item, variables) for item in value.values())
    if isinstance(value, list):
        return any(reads_run_data(item, variables) for item in value)
    if not isinstance(value, str) or "{" not in value:
        return False  # a constant: rendering leaves it as written
    try:
        names = variables_read(value)
    except TemplateSyntaxError:
        return True
    return bool(names & variables if variables is not None else names - CONFIGURATION)
