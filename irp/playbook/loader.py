"""Reading playbook and routing files: YAML with FILE:LINE:COL positions, then the models, then the checks.

The YAML is read as plain data only: a tag the schema does not use or a recursive alias or merge is
refused before anything is built from it, and sizes are bounded. `load_playbook` raises one
PlaybookError listing every problem of the file (irp/playbook/validation.py finds those the schema cannot).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

from irp.actions.registry import get_registry
from irp.errors import PlaybookError
from irp.models import PlaybookRef
from irp.playbook.models import Playbook, Routing
from irp.playbook.problems import Loc, Positions, Problem, loc_path, schema_problems
from irp.playbook.validation import routing_problems, semantic_problems, target_notes

__all__ = ["LoadedPlaybook", "load_playbook", "load_playbook_for_run", "load_routing", "load_routing_file", "load_yaml",
           "validate_routing"]

MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 100_000


def _plain(node: Any, loc: Loc, positions: Positions, budget: list[int]) -> Any:
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
            return (mark.line + 1, mark.column + 1, loc_path(loc),
                    "recursive alias: this value refers to a node that contains it (an anchor used inside itself)")
        if id(node) in done:
            return None
        if node.tag not in _PLAIN_TAGS:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            return (node.start_mark.line + 1, node.start_mark.column + 1, loc_path(loc),
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


def load_yaml(path: Path) -> tuple[Any, Positions, str, bytes]:
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
    positions = Positions()
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


def load_routing_file(path: Path) -> tuple[Routing | None, list[Problem], str]:
    """(routing, problems, SHA-256 of the bytes read; "" when the file could not be read)."""
    try:
        document, positions, _text, data = load_yaml(path)
    except PlaybookError as exc:
        return None, list(exc.problems), ""
    digest = hashlib.sha256(data).hexdigest()
    try:
        routing = Routing.model_validate(document)
    except ValidationError as exc:
        return None, schema_problems(exc, Routing, str(path), positions), digest
    return routing, routing_problems(routing, str(path), positions), digest


def validate_routing(path: Path) -> list[Problem]:
    """Every problem of a routing file, each printed as FILE:LINE:COL: key.path: message; [] when valid."""
    return load_routing_file(path)[1]


def load_routing(path: Path) -> Routing:
    """Read and check a routing file; PlaybookError lists every problem."""
    routing, problems, _digest = load_routing_file(path)
    if problems or routing is None:
        raise PlaybookError(problems)
    return routing
