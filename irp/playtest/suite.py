"""The playbook test suite: find the cases, run each, and say what of each playbook no case exercised."""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from irp.errors import IrpError, PlaybookError
from irp.models import IncidentType
from irp.playbook.cases import LoadedCase, load_case
from irp.playbook.loader import load_playbook, load_yaml
from irp.playtest.runner import CaseError, Outcome, check, run_case

__all__ = ["CaseResult", "case_files", "coverage", "run_cases"]

CONDITION_FALSE = "condition is false"


@dataclass
class CaseResult:
    """One case file: its failures (broken: it could not be read or run as written) and the run's outcome."""

    path: Path
    loaded: LoadedCase | None = None
    outcome: Outcome | None = None
    failures: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)
    seconds: float = 0.0


def case_files(paths: Iterable[Path], playbooks_dir: Path) -> list[Path]:
    """The case files under `paths`: case files, folders of them, or playbooks (their cases in tests/<type>/)."""
    found: list[Path] = []
    for path in list(paths) or [playbooks_dir / "tests"]:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*.yaml") if p.is_file()))
        elif path.suffix == ".yaml" and path.stem in {t.value for t in IncidentType} and "tests" not in path.parts:
            found.extend(sorted((path.parent / "tests" / path.stem).glob("*.yaml")))
        else:
            found.append(path)
    return list(dict.fromkeys(found))


def run_cases(files: Iterable[Path], record: bool = False, jobs: int = 1) -> list[CaseResult]:
    """Run every case, in `jobs` processes; a broken case is reported and the others still run."""
    files = list(files)
    if jobs <= 1 or len(files) <= 1 or record:
        return [_run_one(path, record) for path in files]
    from irp.actions.registry import get_registry

    get_registry()  # found once here, inherited by every worker
    with ProcessPoolExecutor(min(jobs, len(files)), mp_context=get_context("fork")) as pool:
        return list(pool.map(_run_one, files, [record] * len(files)))


def _run_one(path: Path, record: bool = False) -> CaseResult:
    result = CaseResult(path)
    started = time.perf_counter()
    try:
        result.loaded = load_case(path)
        result.outcome = run_case(result.loaded, record=record)
        result.failures = check(result.loaded, result.outcome)
    except PlaybookError as exc:
        result.broken = [str(p) for p in exc.problems] or [str(exc)]
    except CaseError as exc:
        result.broken = [str(exc)]
    except IrpError as exc:  # what the run itself refused (its playbook, its store): this case's, not the suite's
        result.broken = [f"{path}:1:1: cannot be run: {exc}"]
    result.seconds = time.perf_counter() - started
    return result


@dataclass
class Gap:
    """Something of a playbook no case exercised, and where it is written."""

    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


def coverage(playbook: Path, outcomes: list[Outcome]) -> list[Gap]:
    """The steps, `when:` sides and classification rules of `playbook` that none of `outcomes` exercised.

    A step is exercised when a run reached it with its condition true (it ran, failed, or found its
    integration not configured); a `when:` side when a run evaluated it so; a rule when it set the severity.
    """
    loaded = load_playbook(playbook)
    _plain, positions, _text, _data = load_yaml(playbook)
    records = [r for o in outcomes for r in o.steps.values()]
    gaps = []
    for stage, index, step in loaded.playbook.steps():
        loc = ("stages", stage.value, index)
        mine = [r for r in records if r.id == step.id]
        reached = [r for r in mine if not r.reason.startswith(CONDITION_FALSE)]
        line, col = positions.find(loc)
        where = f"{playbook}:{line}:{col}"
        if not reached and step.when is None:
            gaps.append(Gap(where, f"step {step.id} ({stage.value}) never ran"))
        if step.when is not None:
            if not reached:
                gaps.append(Gap(where, f"step {step.id}: when never true: {step.when}"))
            if not any(r.reason.startswith(CONDITION_FALSE) for r in mine):
                gaps.append(Gap(where, f"step {step.id}: when never false: {step.when}"))
    fired = {o.rule for o in outcomes}
    for index, rule in enumerate(loaded.playbook.classification.rules):
        if index not in fired:
            line, col = positions.find(("classification", "rules", index))
            gaps.append(Gap(f"{playbook}:{line}:{col}", f"classification.rules.{index} never set the severity "
                                                        f"({rule.severity.value}: {rule.when})"))
    return gaps
