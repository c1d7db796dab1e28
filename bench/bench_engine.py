"""Engine overhead per action versus a plain Prefect flow running the same number of no-op tasks.

Both run in this process, against the same Prefect server, alternately, several times; the script
prints both medians and their ratio (target ≤ 1.2). Usage:

    .venv/bin/python bench/bench_engine.py [--steps 30] [--repeat 5]

Uses PREFECT_API_URL when set, else starts a temporary local server (prefect_test_harness).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from ruamel.yaml import YAML  # noqa: E402

from irp.actions.registry import ActionArgs, ActionContext, action  # noqa: E402


class NoopArgs(ActionArgs):
    pass


@action(namespace="bench")
def noop(args: NoopArgs, ctx: ActionContext) -> None:
    """Do nothing (benchmark only)."""


@task(cache_policy=NO_CACHE)
def noop_task(i: int) -> None:
    return None


@flow
def plain(n: int) -> None:
    for i in range(n):
        noop_task(i)


def write_playbook(folder: Path, steps: int) -> None:
    """A data_leak playbook whose stages hold `steps` no-op steps in all."""
    stages = ["detect", "analyse", "contain", "restore", "notify", "review"]
    playbook = {
        "name": "bench", "incident_type": "data_leak", "version": "1.0.0", "policy_version": "2026-05-13",
        "owner": "bench", "classification": {"default": "minor"},
        "stages": {stage: [] for stage in stages},
    }
    for i in range(steps):
        stage = stages[i % len(stages)]
        playbook["stages"][stage].append({"id": f"s{i}", "action": "bench.noop"})
    YAML().dump(playbook, folder / "data_leak.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="irp-bench-"))
    os.environ["IRP_PLAYBOOKS_DIR"] = str(work / "playbooks")
    os.environ["IRP_EVIDENCE_URL"] = f"file://{work / 'evidence'}"
    (work / "playbooks").mkdir()
    write_playbook(work / "playbooks", options.steps)

    from prefect.testing.utilities import prefect_test_harness

    from flows.incidents import data_leak
    from irp.models import Alert

    alert = Alert(title="benchmark alert")
    server = nullcontext() if os.environ.get("PREFECT_API_URL") else prefect_test_harness(server_startup_timeout=180)
    with server:
        plain(2)  # warm up both paths
        data_leak(alert=alert)
        engine_times, plain_times = [], []
        for _ in range(options.repeat):
            start = time.perf_counter()
            data_leak(alert=alert)
            engine_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            plain(options.steps)
            plain_times.append(time.perf_counter() - start)
    engine, bare = statistics.median(engine_times), statistics.median(plain_times)
    print(f"steps per run:            {options.steps} (repeat {options.repeat}, medians)")
    print(f"irp engine run:           {engine:.3f} s  ({engine / options.steps * 1000:.1f} ms per action)")
    print(f"plain Prefect flow:       {bare:.3f} s  ({bare / options.steps * 1000:.1f} ms per task)")
    print(f"ratio engine / plain:     {engine / bare:.2f}  (target <= 1.2)")


if __name__ == "__main__":
    main()
