"""The action registry: playbook steps name actions registered here as `namespace.function`.

The namespace is the module's name below irp.actions (`aws.block_ip` is in irp/actions/aws/,
`incident.set_scope` in irp/actions/incident.py): `get_registry()` imports every module of the
package, so a new module needs no list. An action is a function `(args: ArgsModel, ctx) -> output`;
its argument model is the annotation of its first parameter, its summary its docstring's first line.
An argument that names what a state-changing action changes is marked once, next to its type:
`user_id: Annotated[str, Target("platform_user")]` (irp/engine/targets.py says what the engine does with it).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import itertools
import pkgutil
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, Literal, get_args, get_origin, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError

from irp.errors import InvalidArgumentsError, field_errors_text
from irp.evidence import CollectedBy, EvidenceItem, EvidenceStore
from irp.models import Alert, Incident, Stage, TargetKind, TimelineEntry
from irp.playbook.models import Playbook

__all__ = ["ActionArgs", "ActionContext", "ActionSpec", "Target", "action", "catalogue_markdown",
           "get_registry", "preflight", "requires", "template_vars"]

PACKAGE = "irp.actions"  # every module below it is imported by get_registry(); its first name is the namespace

_REGISTRY: dict[str, ActionSpec] = {}
_PREFLIGHTS: dict[str, Callable[[], object]] = {}


class ActionArgs(BaseModel):
    """Base of every argument model: unknown arguments are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Target:
    """Marks an argument as a target: what the action changes, of kind `kind` (a TargetKind).

    The kind may read another argument in braces, e.g. `Target("iam_{principal_type}")`: iam_user or
    iam_role, from that argument's value.
    """

    kind: str

    def resolve(self, args: BaseModel) -> str:
        """The kind of this target for these arguments."""
        return self.kind.format_map(dict(args))

    def kinds(self, model: type[BaseModel]) -> list[str]:
        """Every kind it can resolve to (a braced argument must be a Literal)."""
        names = [name for _, name, _, _ in string.Formatter().parse(self.kind) if name]
        choices = []
        for name in names:
            annotation = model.model_fields[name].annotation
            if get_origin(annotation) is not Literal:
                raise TypeError(f"Target({self.kind!r}): argument {name!r} must be a Literal")
            choices.append([(name, value) for value in get_args(annotation)])
        return [self.kind.format_map(dict(combo)) for combo in itertools.product(*choices)]

    def __str__(self) -> str:
        return self.kind


@dataclass(frozen=True)
class ActionSpec:
    """A registered action; `targets` maps each target argument to its `Target`."""

    name: str
    fn: Callable[..., Any]
    args_model: type[BaseModel]
    summary: str
    targets: dict[str, Target] = field(default_factory=dict)

    @property
    def module(self) -> str:
        return self.fn.__module__

    def parse(self, args: dict[str, Any] | BaseModel) -> BaseModel:
        """`args` validated against the action's model; InvalidArgumentsError lists every problem."""
        try:
            return self.args_model.model_validate(args)
        except ValidationError as exc:
            raise InvalidArgumentsError(f"invalid args for {self.name}: {field_errors_text(exc)}") from None

    def invoke(self, args: dict[str, Any] | BaseModel, ctx: ActionContext) -> tuple[BaseModel, Any]:
        """Run the action: its validated arguments and its output, for steps, undo and the CLI alike.

        InvalidArgumentsError when the arguments do not validate; NotConfiguredError (the integration
        is not configured) and the action's own errors propagate unchanged.
        """
        parsed = self.parse(args)
        return parsed, self.fn(parsed, ctx)


def _namespace(module: str) -> str | None:
    """`aws` for irp.actions.aws.iam, `incident` for irp.actions.incident; None outside the package."""
    inside = module.removeprefix(PACKAGE + ".")
    return inside.split(".")[0] if inside != module else None


def action(fn: Callable[..., Any] | None = None, *, namespace: str | None = None) -> Any:
    """Register the decorated function as the action `namespace.function_name`.

    The namespace is the function's module below irp.actions; code outside the package (a benchmark,
    a test) names it: `@action(namespace="bench")`.
    """

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        space = namespace or _namespace(fn.__module__)
        if not space:
            raise TypeError(f"action {fn.__module__}.{fn.__name__} is defined outside {PACKAGE}: name its namespace, "
                            'e.g. @action(namespace="bench")')
        name = f"{space}.{fn.__name__}"
        first = next(iter(inspect.signature(fn).parameters))
        args_model = get_type_hints(fn)[first]
        if not (isinstance(args_model, type) and issubclass(args_model, BaseModel)):
            raise TypeError(f"action {name}: first parameter must be annotated with a pydantic model")
        summary = (inspect.getdoc(fn) or "").strip().splitlines()
        if not summary:
            raise TypeError(f"action {name}: needs a one-line docstring")
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"action {name} is registered twice ({_REGISTRY[name].module} and {fn.__module__})")
        _REGISTRY[name] = ActionSpec(name, fn, args_model, summary[0], _targets(name, args_model))
        return fn

    return register(fn) if fn is not None else register


def _targets(name: str, model: type[BaseModel]) -> dict[str, Target]:
    """The arguments of `model` marked Target, each checked to resolve to known kinds."""
    found = {}
    for arg, info in model.model_fields.items():
        target = next((m for m in info.metadata if isinstance(m, Target)), None)
        if target is None:
            continue
        unknown = [k for k in target.kinds(model) if k not in TargetKind.__members__]
        if unknown:
            raise TypeError(f"action {name}: argument {arg}: unknown target kind {', '.join(unknown)}; "
                            f"known: {', '.join(TargetKind)}")
        found[arg] = target
    return found


def requires(namespace: str, check: Callable[[], object]) -> None:
    """Declare the configuration every action of `namespace` needs: `check` raises NotConfiguredError."""
    _PREFLIGHTS[namespace] = check


def preflight(action_name: str) -> None:
    """Raise NotConfiguredError when the integration of `action_name` is not configured."""
    check = _PREFLIGHTS.get(action_name.partition(".")[0])
    if check is not None:
        check()


@functools.cache
def _import_package() -> None:
    """Import every module below irp.actions: importing a module registers its actions."""
    package = importlib.import_module(PACKAGE)
    for module in pkgutil.walk_packages(package.__path__, PACKAGE + "."):
        importlib.import_module(module.name)


def get_registry() -> dict[str, ActionSpec]:
    """Every registered action by name, every module of irp.actions imported."""
    _import_package()
    return dict(_REGISTRY)


def template_vars(
    incident: Incident,
    alert: Alert,
    steps: dict[str, Any],
    playbook: Playbook,
    stage: Stage,
    phase: str | None,
    dry_run: bool,
) -> dict[str, Any]:
    """The variables every playbook template sees: incident, alert, steps, playbook, stage, phase."""
    return {
        "incident": incident.model_dump(mode="json"),
        "alert": alert.model_dump(mode="json"),
        "steps": {sid: rec.model_dump(mode="json") for sid, rec in steps.items()},
        "playbook": {"name": playbook.name, "version": playbook.version, "incident_type": playbook.incident_type,
                     "vars": playbook.vars},
        "stage": stage.value,
        "phase": phase,
        "dry_run": dry_run,
    }


@dataclass
class ActionContext:
    """What an action may read and do: the incident so far, the evidence store, the timeline."""

    incident: Incident
    alert: Alert
    store: EvidenceStore
    stage: Stage
    step: str
    action: str
    flow_run_id: str = ""
    from_run_data: frozenset[str] = frozenset()  # arguments whose template reads alert, steps or incident
    dry_run: bool = False
    phase: str | None = None
    steps: dict[str, Any] = field(default_factory=dict)
    playbook: Playbook | None = None
    timeline: list[TimelineEntry] = field(default_factory=list)
    updates: dict[str, Any] = field(default_factory=dict)
    evidence: list[EvidenceItem] = field(default_factory=list)

    def template_vars(self) -> dict[str, Any]:
        """The variables templates rendered by this action see (the same as step arguments)."""
        return template_vars(self.incident, self.alert, self.steps, self.playbook, self.stage, self.phase, self.dry_run)

    def archive(
        self,
        name: str,
        data: bytes | IO[bytes],
        *,
        content_type: str = "application/octet-stream",
        source_system: str = "",
        source_time: str | None = None,
    ) -> EvidenceItem:
        """Archive an item for this incident, recording which step collected it."""
        item = self.store.put(
            self.incident.id,
            name,
            data,
            content_type=content_type,
            collected_by=self._collected_by(),
            source_system=source_system,
            source_time=source_time,
        )
        self.evidence.append(item)
        return item

    def archive_json(self, name: str, value: Any, **kwargs: Any) -> EvidenceItem:
        """Archive a JSON document for this incident."""
        item = self.store.put_json(self.incident.id, name, value, collected_by=self._collected_by(), **kwargs)
        self.evidence.append(item)
        return item

    def _collected_by(self) -> CollectedBy:
        return CollectedBy(stage=self.stage.value, step=self.step, action=self.action, flow_run_id=self.flow_run_id)

    def record(self, message: str, kind: str = "note", **data: Any) -> TimelineEntry:
        """Add an entry to the incident timeline."""
        entry = TimelineEntry(kind=kind, message=message, stage=self.stage, step=self.step, data=data)
        self.timeline.append(entry)
        return entry

    def update_incident(self, **changes: Any) -> Incident:
        """Change incident fields (validated); later steps see the new values."""
        merged = self.incident.model_dump() | changes
        self.incident = Incident.model_validate(merged)
        self.updates.update({key: getattr(self.incident, key) for key in changes})
        return self.incident


def catalogue_markdown() -> str:
    """The action catalogue as markdown: one section per action with its arguments."""
    lines = ["| Action | What it does | Arguments |", "|---|---|---|"]
    for name, spec in sorted(get_registry().items()):
        args = []
        for arg, info in spec.args_model.model_fields.items():
            notes = ["required"] if info.is_required() else []
            if arg in spec.targets:
                notes.append(f"target: {'/'.join(spec.targets[arg].kinds(spec.args_model))}")
            shown = f" ({', '.join(notes)})" if notes else ""
            args.append(f"`{arg}`{shown}: {info.description or ''}".strip().rstrip(":"))
        lines.append(f"| `{name}` | {spec.summary} | {'<br>'.join(args) or '—'} |")
    return "\n".join(lines) + "\n"
