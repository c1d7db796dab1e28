"""Playbooks: the YAML language, its pydantic models, and the loader that reports FILE:LINE:COL.

A playbook maps one-to-one onto `Playbook`; unknown keys are errors. `load_playbook` checks the
schema and then everything the schema cannot: action names, step arguments against each action's
argument model, template syntax and variables, references to undefined steps, duplicate ids. It
also notes (not an error) each step without `approval:` whose action changes a target that alert
data chooses: the run holds it for an approval unless IRP_ACTION_TARGETS allows the value.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from jinja2 import meta, nodes
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

from irp import templating
from irp.errors import PlaybookError
from irp.models import IncidentType, PlaybookRef, Severity, Stage

__all__ = [
    "Approval",
    "Classification",
    "LoadedPlaybook",
    "ClassificationRule",
    "Playbook",
    "Problem",
    "Stages",
    "Step",
    "load_playbook",
    "load_playbook_for_run",
    "playbook_json_schema",
    "load_yaml",
    "playbook_path",
]

MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 100_000
TEMPLATE_VARIABLES = ("alert", "dry_run", "incident", "phase", "playbook", "stage", "steps")
# Arguments that say where irp sends a request or which file it reads: never from alert data.
TARGET_ARGS = {
    "url": "where irp sends a request; name a configured URL instead (endpoint: NAME, set in IRP_HTTP_ENDPOINTS)",
    "path": "which local file irp reads; collect a fixed path below IRP_EVIDENCE_COLLECT_ROOTS",
}
SCHEMA_FILE = Path(__file__).resolve().parent.parent / "playbooks" / "schema" / "playbook.schema.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Approval(_Strict):
    """Human approval required before a step runs (policy §6: disruptive measures)."""

    approvers: int = Field(1, ge=1, le=10, description="Distinct people who must approve.")
    timeout_minutes: float = Field(60, gt=0, description="How long to wait for the decisions.")
    on_timeout: Literal["approve", "reject"] = Field(
        "reject", description="Decision applied, with an escalation, when nobody decided in time."
    )


class Step(_Strict):
    """One action of a stage."""

    id: str = Field(..., pattern=r"^[a-z][a-z0-9_]{0,62}$", description="Unique within the playbook.")
    action: str = Field(..., description="Registered action name, e.g. evidence.collect.")
    description: str = Field("", description="What the step does, for responders.")
    args: dict[str, Any] = Field(
        default_factory=dict,
        description="Arguments of the action; strings are Jinja templates over incident, alert, steps.",
    )
    when: str | None = Field(None, description="Jinja expression; the step runs only when it is true.")
    retries: int = Field(0, ge=0, le=10, description="Retries after a failure.")
    retry_delay_seconds: float = Field(2, ge=0, le=3600)
    timeout_seconds: float | None = Field(
        None, gt=0, le=86400, description="Time limit of one attempt; actions also bound their own I/O."
    )
    on_failure: Literal["stop", "continue", "escalate"] = Field(
        "stop", description="stop the run, continue, or escalate to the security team and continue."
    )
    optional: bool = Field(False, description="Skip, recording why, when the integration is not configured.")
    approval: Approval | None = Field(None, description="Require human approval before running.")
    phase: Literal["initial", "final"] | None = Field(
        None, description="notify only: run in the initial or the final notification; both when unset."
    )


class Stages(_Strict):
    """Steps of each stage; stages always run in this order (notify initial runs beside contain)."""

    detect: list[Step] = Field(default_factory=list)
    analyse: list[Step] = Field(default_factory=list)
    contain: list[Step] = Field(default_factory=list)
    restore: list[Step] = Field(default_factory=list)
    notify: list[Step] = Field(default_factory=list)
    review: list[Step] = Field(default_factory=list)

    def items(self) -> Iterator[tuple[Stage, list[Step]]]:
        for stage in Stage:
            yield stage, getattr(self, stage.value)


class ClassificationRule(_Strict):
    """When `when` is true for the incident, its severity is `severity`."""

    when: str = Field(..., description="Jinja expression over incident and alert.")
    severity: Severity
    reason: str = Field(..., min_length=1, description="Why, in the policy's words (§5).")


class Classification(_Strict):
    """Policy §5: rules tried in order, the first true one sets the severity."""

    default: Severity
    rules: list[ClassificationRule] = Field(default_factory=list)


class Playbook(_Strict):
    """A response playbook for one incident type."""

    name: str = Field(..., min_length=1)
    incident_type: IncidentType
    version: str = Field(..., pattern=r"^\d+\.\d+(\.\d+)?$", description="Playbook version, e.g. 1.2.0.")
    policy_version: str = Field(..., description="Date of the policy it implements, e.g. 2026-05-13.")
    owner: str = Field(..., min_length=1, description="Who maintains it.")
    description: str = ""
    classification: Classification
    stages: Stages

    @field_validator("policy_version")
    @classmethod
    def _date(cls, value: str) -> str:
        from datetime import date

        try:
            date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a date like 2026-05-13") from None
        return value

    def steps(self) -> Iterator[tuple[Stage, int, Step]]:
        for stage, steps in self.stages.items():
            for index, step in enumerate(steps):
                yield stage, index, step


@dataclass(frozen=True)
class Problem:
    """One problem in a file, printed as FILE:LINE:COL: key.path: message."""

    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}:{self.col}: {where}{self.message}"


Loc = tuple[str | int, ...]


class _Positions:
    """Line and column (1-based) of every key and item, from ruamel's round-trip nodes."""

    def __init__(self) -> None:
        self.at: dict[Loc, tuple[int, int]] = {(): (1, 1)}

    def find(self, loc: Loc) -> tuple[int, int]:
        while loc not in self.at:
            loc = loc[:-1]
        return self.at[loc]


def _plain(node: Any, loc: Loc, positions: _Positions, budget: list[int]) -> Any:
    """Convert ruamel nodes to plain Python, recording positions and bounding alias expansion."""
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooLarge
    if isinstance(node, CommentedMap):
        out = {}
        for key, value in node.items():
            line, col = node.lc.key(key)
            positions.at[(*loc, str(key))] = (line + 1, col + 1)
            out[str(key)] = _plain(value, (*loc, str(key)), positions, budget)
        return out
    if isinstance(node, CommentedSeq):
        out_list = []
        for index, value in enumerate(node):
            line, col = node.lc.item(index)
            positions.at[(*loc, index)] = (line + 1, col + 1)
            out_list.append(_plain(value, (*loc, index), positions, budget))
        return out_list
    if isinstance(node, str):
        return str(node)
    return node


class _TooLarge(Exception):
    pass


_PLAIN_TAGS = {f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "map", "seq", "merge",
                                                        "timestamp")}


def _unsafe_node(root: Node | None) -> tuple[int, int, str, str] | None:
    """(line, col, key path, message) of the first YAML tag the schema does not use or alias that contains
    itself (a recursive `*alias` or `<<:` merge), before anything is constructed from the file."""
    on_path: set[int] = set()
    done: set[int] = set()

    def visit(node: Node, mark: Any, loc: Loc) -> tuple[int, int, str, str] | None:
        if id(node) in on_path:
            return (mark.line + 1, mark.column + 1, _loc_path(loc),
                    "recursive alias: this value refers to a node that contains it (an anchor used inside itself)")
        if id(node) in done:
            return None
        if node.tag not in _PLAIN_TAGS:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            return (node.start_mark.line + 1, node.start_mark.column + 1, _loc_path(loc),
                    f"YAML tag {tag} is not allowed: only plain values are (strings, numbers, booleans, null, "
                    "lists, mappings)")
        on_path.add(id(node))
        if isinstance(node, MappingNode):
            children = [(key, key.start_mark, (*loc, str(key.value))) for key, _ in node.value]
            children += [(value, key.start_mark, (*loc, str(key.value))) for key, value in node.value]
        elif isinstance(node, SequenceNode):
            children = [(item, item.start_mark, (*loc, index)) for index, item in enumerate(node.value)]
        else:
            children = []
        for child, child_mark, child_loc in children:
            found = visit(child, child_mark, child_loc)
            if found:
                return found
        on_path.discard(id(node))
        done.add(id(node))
        return None

    return None if root is None else visit(root, root.start_mark, ())


def load_yaml(path: Path) -> tuple[Any, _Positions, str, bytes]:
    """Parse a YAML file; raise PlaybookError with one FILE:LINE:COL problem when it cannot be read."""
    name = str(path)

    def fail(message: str, line: int = 1, col: int = 1) -> PlaybookError:
        return PlaybookError([Problem(name, line, col, "", message)])

    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise fail(f"file is {size} bytes; a playbook may be at most {MAX_FILE_BYTES} bytes")
        data = path.read_bytes()
    except FileNotFoundError:
        raise fail("no such file") from None
    except IsADirectoryError:
        raise fail("is a directory, not a YAML file") from None
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(f"not UTF-8 text (byte {exc.start}); a playbook is a YAML text file") from None
    if "\x00" in text:
        raise fail("contains NUL bytes; a playbook is a YAML text file")
    positions = _Positions()
    try:
        yaml = YAML(typ="rt")
        node = yaml.compose(text)
        unsafe = _unsafe_node(node)
        document = None if node is None or unsafe else yaml.constructor.construct_document(node)
        plain = _plain(document, (), positions, [MAX_NODES])
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = " ".join(part for part in (exc.context, exc.problem) if part)
        raise fail(f"YAML syntax error: {message}", line, col) from None
    except YAMLError as exc:
        raise fail(f"YAML error: {exc}") from None
    except _TooLarge:
        raise fail(f"more than {MAX_NODES} nodes after expanding aliases") from None
    except RecursionError:
        raise fail("nested too deeply") from None
    except Exception as exc:  # what ruamel did not foresee is still this file's problem, not an internal error
        raise fail(f"cannot be read as YAML: {type(exc).__name__}: {exc}") from None
    if unsafe:
        line, col, where, message = unsafe
        raise PlaybookError([Problem(name, line, col, where, message)])
    if plain is None:
        raise fail("file is empty; expected a mapping with the keys of the schema")
    if not isinstance(plain, dict):
        kind = {list: "a list", str: "a string"}.get(type(plain), type(plain).__name__)
        raise fail(f"expected a mapping at the top level, got {kind}")
    return plain, positions, text, data


def _loc_path(loc: Loc) -> str:
    return ".".join(str(part) for part in loc)


def _model_at(model: Any, loc: Loc) -> type[BaseModel] | None:
    """The model class that sits at `loc` under `model`, to list its valid keys."""
    current: Any = model
    for part in loc:
        while get_origin(current) in (Union, Annotated) or type(current).__name__ == "UnionType":
            current = next(a for a in get_args(current) if a is not type(None))
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif get_origin(current) in (list, dict):
            current = get_args(current)[-1]
        else:
            return None
    while get_origin(current) is Union or type(current).__name__ == "UnionType":
        current = next(a for a in get_args(current) if a is not type(None))
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def schema_problems(
    error: ValidationError, root: type[BaseModel], file: str, positions: _Positions, prefix: Loc = ()
) -> list[Problem]:
    """Rewrite pydantic errors as Problems located in the file."""
    problems = []
    for err in error.errors(include_url=False):
        loc = (*prefix, *err["loc"])
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            parent = _model_at(root, err["loc"][:-1])
            valid = ", ".join(parent.model_fields) if parent else ""
            message = f"unknown key {err['loc'][-1]!r}" + (f"; valid keys: {valid}" if valid else "")
        elif err["type"] == "missing":
            message = "required key is missing"
        else:
            message = _with_input(message, err)
        line, col = positions.find(loc)
        problems.append(Problem(file, line, col, _loc_path(loc), message))
    return problems


def _with_input(message: str, err: Any) -> str:
    """Append the offending value when it is short enough to quote."""
    value = err.get("input")
    if isinstance(value, str | int | float | bool) and len(repr(value)) <= 60:
        return f"{message}, got {value!r}"
    return message


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


def semantic_problems(playbook: Playbook, file: str, positions: _Positions) -> list[Problem]:
    """What the schema cannot check: names, arguments, templates, references, ids."""
    from irp.actions.registry import get_registry

    registry = get_registry()
    problems: list[Problem] = []

    def add(loc: Loc, message: str) -> None:
        line, col = positions.find(loc)
        problems.append(Problem(file, line, col, _loc_path(loc), message))

    def check_template(loc: Loc, text: str, as_expression: bool, visible: set[str] | None) -> None:
        error = templating.syntax_error(text, as_expression)
        if error:
            add(loc, error)
            return
        for variable in sorted(_undeclared(text, as_expression) - set(TEMPLATE_VARIABLES)):
            add(loc, f"unknown variable {variable!r}; available: {', '.join(TEMPLATE_VARIABLES)}")
        if visible is not None:
            for ref in sorted(templating.referenced_steps(text, as_expression) - visible):
                add(loc, f"references step {ref!r}, which is not defined before this step"
                    + (f"; steps available here: {', '.join(sorted(visible))}" if visible else ""))

    expected = Path(file).stem
    if expected != playbook.incident_type.value:
        add(("incident_type",), f"is {playbook.incident_type.value!r} but the file is named "
            f"{Path(file).name!r}: a playbook file is named after its incident type")
    for index, rule in enumerate(playbook.classification.rules):
        check_template(("classification", "rules", index, "when"), rule.when, True, set())

    seen: dict[str, Loc] = {}
    visible = _visible_steps(playbook)
    for stage, index, step in playbook.steps():
        loc: Loc = ("stages", stage.value, index)
        if step.id in seen:
            add((*loc, "id"), f"duplicate step id {step.id!r}, first defined at {_loc_path(seen[step.id])}")
        else:
            seen[step.id] = loc
        if step.phase and stage != Stage.notify:
            add((*loc, "phase"), f"phase is only valid in the notify stage, not in {stage.value}")
        if step.when is not None:
            check_template((*loc, "when"), step.when, True, visible[(stage, index)])
        for arg_loc, text in _template_strings(step.args, (*loc, "args")):
            check_template(arg_loc, text, False, visible[(stage, index)])
        for name, fix in TARGET_ARGS.items():
            if isinstance(step.args.get(name), str) and _reads_alert(step.args[name]):
                add((*loc, "args", name), f"takes its value from alert data: an alert may not choose {fix}")
        spec = registry.get(step.action)
        if spec is None:
            add((*loc, "action"), _unknown_action(step.action, registry))
            continue
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
                    add(arg_loc, f"unknown argument {key!r} for action {step.action}; valid arguments: {valid}")
                elif err["type"] == "missing":
                    add((*loc, "args"), f"missing argument {key!r} required by action {step.action}")
                else:
                    add(arg_loc, _with_input(err["msg"], err))
    return problems


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


def _reads_alert(text: str) -> bool:
    """Whether a template reads the `alert` variable, in any form (alert.labels.x, alert['labels'], a filter)."""
    try:
        tree = templating._parse(text, False)
    except templating.TemplateError:
        return False  # reported as a syntax error
    return any(node.name == "alert" and node.ctx == "load" for node in tree.find_all(nodes.Name))


def _undeclared(text: str, as_expression: bool) -> set[str]:
    tree = templating._parse(text, as_expression)
    return meta.find_undeclared_variables(tree)


def target_notes(playbook: Playbook, file: str, positions: _Positions) -> list[Problem]:
    """Steps without approval whose targets alert data chooses: held at run time unless configured (tasks/targets.py).

    Notes, not errors: the engine holds such a step safely, and a deployment may allow the values
    (IRP_ACTION_TARGETS); the note tells the author which steps will wait for a person.
    """
    from irp.actions.registry import get_registry
    from tasks.targets import reads_run_data

    registry = get_registry()
    notes = []
    for stage, index, step in playbook.steps():
        spec = registry.get(step.action)
        if spec is None or step.approval is not None:
            continue
        for arg, target in spec.targets.items():
            if arg in step.args and reads_run_data(step.args[arg]):
                loc: Loc = ("stages", stage.value, index, "args", arg)
                line, col = positions.find(loc)
                kinds = "/".join(target.kinds(spec.args_model))
                notes.append(Problem(file, line, col, _loc_path(loc),
                                     f"note: {step.action} changes this target ({kinds}) and alert data chooses its value, with "
                                     f"no approval: the run holds the step for one unless IRP_ACTION_TARGETS allows "
                                     f"the value (add approval: to always ask, or a constant target)"))
    return notes


@dataclass(frozen=True)
class LoadedPlaybook:
    """A checked playbook, the reference a run records, the exact bytes it was read from, and its notes."""

    playbook: Playbook
    ref: PlaybookRef
    source: bytes
    notes: tuple[Problem, ...] = ()


def load_playbook(path: Path) -> LoadedPlaybook:
    """Load and fully check a playbook; raise PlaybookError listing every problem."""
    plain, positions, _text, data = load_yaml(path)
    file = str(path)
    try:
        playbook = Playbook.model_validate(plain)
    except ValidationError as exc:
        raise PlaybookError(sorted(schema_problems(exc, Playbook, file, positions), key=lambda p: (p.line, p.col))) from None
    problems = semantic_problems(playbook, file, positions)
    if problems:
        raise PlaybookError(sorted(problems, key=lambda p: (p.line, p.col)))
    ref = PlaybookRef(
        name=playbook.name,
        version=playbook.version,
        policy_version=playbook.policy_version,
        path=file,
        sha256=hashlib.sha256(data).hexdigest(),
    )
    return LoadedPlaybook(playbook, ref, data, tuple(target_notes(playbook, file, positions)))


_CHECKED: dict[str, tuple[str, int, LoadedPlaybook]] = {}  # path -> (sha256, registry size, playbook)


def load_playbook_for_run(path: Path) -> LoadedPlaybook:
    """`load_playbook`, parsing and checking only when the file's bytes changed since this process last did.

    A run still reads the file when it starts, so an edited playbook applies to the next run; an
    unchanged one skips the YAML parse and the template checks (0.1–0.5 s on the 2-core machine).
    Each run gets its own copy of the checked playbook.
    """
    from irp.actions.registry import get_registry

    try:
        data = path.read_bytes()
    except OSError:
        return load_playbook(path)  # reports the problem as FILE:LINE:COL
    key, digest, actions = str(path), hashlib.sha256(data).hexdigest(), len(get_registry())
    cached = _CHECKED.get(key)
    if cached is None or cached[:2] != (digest, actions):
        loaded = load_playbook(path)
        if loaded.ref.sha256 == digest:  # not rewritten between the two reads
            _CHECKED[key] = (digest, actions, loaded)
    else:
        loaded = cached[2]
    return LoadedPlaybook(loaded.playbook.model_copy(deep=True), loaded.ref, loaded.source)


def playbook_path(playbooks_dir: Path, incident_type: IncidentType) -> Path:
    """Where the playbook of an incident type lives."""
    return playbooks_dir / f"{IncidentType(incident_type).value}.yaml"


def playbook_json_schema() -> dict[str, Any]:
    """The JSON Schema of playbooks, for editors (yaml-language-server) and `irp playbooks schema`."""
    schema = Playbook.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "playbook.schema.json",
        **schema,
    }
