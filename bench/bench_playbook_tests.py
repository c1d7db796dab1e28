"""All shipped playbook test cases, offline (irp playbooks test): the time of each and the total against the
30 s target, with the load average (the machine is shared: a busy one stretches every figure). Usage:

    .venv/bin/python bench/bench_playbook_tests.py [--repeat 1]

No Prefect server, no AWS: the cases run through the engine's functions with recorded provider answers, in
one process per CPU (--jobs 1: one after the other).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from irp.playtest.suite import case_files, run_cases  # noqa: E402

TARGET_SECONDS = 30.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="Runs of the whole suite (the median is reported).")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="Processes running cases at once (irp playbooks test's default: one per CPU).")
    args = parser.parse_args()
    files = case_files([], REPO / "playbooks")
    started = time.perf_counter()
    run_cases(files[:1])  # imports, the registry, the first template compilation: counted apart
    warmup = time.perf_counter() - started
    totals, per_case = [], {}
    for _ in range(args.repeat):
        load_before = os.getloadavg()
        started = time.perf_counter()
        results = run_cases(files, jobs=args.jobs)
        totals.append(time.perf_counter() - started)
        for result in results:
            per_case.setdefault(result.path, []).append(result.seconds)
        bad = [r.path for r in results if r.failures or r.broken]
        if bad:
            print(f"failing cases: {', '.join(map(str, bad))}")
    for path, seconds in per_case.items():
        print(f"  {statistics.median(seconds):6.2f} s  {path.relative_to(REPO)}")
    total = statistics.median(totals)
    load = os.getloadavg()
    verdict = "✔" if total < TARGET_SECONDS else "✘"
    busy = sum(statistics.median(s) for s in per_case.values())
    print(f"{len(files)} cases in {args.jobs} process(es): {total:.1f} s (median of {args.repeat}); {busy:.1f} s of case "
          f"time, {busy / len(files):.2f} s per case; "
          f"target < {TARGET_SECONDS:.0f} s {verdict}; first-case warm-up {warmup:.1f} s")
    print(f"load average {load_before[0]:.2f} before, {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} after "
          f"on {os.cpu_count()} CPUs")
    return 0 if total < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
