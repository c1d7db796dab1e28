"""Alert received → first stage task Running, on the local stack, beside plain Prefect `serve`.

Both in one run on the same machine:
  A. the irp stack (Prefect server, irp worker, intake): 20 generic alerts POSTed to the intake
     half a second apart; latency = start of the run's `detect` task − the moment the POST was sent;
  B. plain Prefect: a one-task flow served with `flow.serve()` and default polling; 20
     `run_deployment(timeout=0)` half a second apart; latency = start of its task − the call.
Prints median and p95 of each (target for A: median ≤ 2 s). Usage:

    .venv/bin/python bench/bench_pickup.py [--alerts 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"


SPACING = 2.0  # seconds between alerts: measures pickup, not a queue behind a saturated worker


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def task_starts(api: str, flow_run_ids: list[str], task_prefix: str) -> dict[str, datetime]:
    """Start time of the first task named task_prefix* of each flow run."""
    found: dict[str, datetime] = {}
    deadline = time.monotonic() + 300
    while len(found) < len(flow_run_ids) and time.monotonic() < deadline:
        runs = httpx.post(f"{api}/task_runs/filter", timeout=30, json={
            "flow_runs": {"id": {"any_": flow_run_ids}}, "limit": 200}).json()
        for run in runs:
            if run["name"].startswith(task_prefix) and run.get("start_time"):
                found[run["flow_run_id"]] = datetime.fromisoformat(run["start_time"])
        time.sleep(1)
    return found


def bench_irp(count: int, work: Path) -> list[float]:
    from irp.stack import Stack, bring_up

    os.environ.update(PREFECT_HOME=str(work / "irp-prefect"), IRP_EVIDENCE_URL=f"file://{work / 'evidence'}",
                      IRP_INTAKE_JOURNAL=str(work / "journal.sqlite3"))
    os.environ.pop("PREFECT_API_URL", None)
    stack = Stack(port=4381, intake_port=8781, log_dir=work / "log")
    try:
        bring_up(stack)
        api, intake = stack.api_url, f"http://{stack.host}:{stack.intake_port}"
        sent: dict[str, datetime] = {}
        for index in range(count):
            fingerprint = f"bench-{index}-{time.time_ns()}"
            body = {"title": f"benchmark alert {index}", "fingerprint": fingerprint,
                    "labels": {"incident_type": "human_error", "tenant": "bench"}}
            sent[fingerprint] = datetime.now(UTC)
            response = httpx.post(f"{intake}/alerts/generic", json=body, timeout=30)
            assert response.status_code == 202, response.text
            time.sleep(SPACING)
        deadline = time.monotonic() + 300
        by_fingerprint: dict[str, str] = {}
        while len(by_fingerprint) < count and time.monotonic() < deadline:
            runs = httpx.post(f"{api}/flow_runs/filter", timeout=30, json={"limit": 200}).json()
            for run in runs:
                fingerprint = run["parameters"].get("alert", {}).get("fingerprint")
                if fingerprint in sent:
                    by_fingerprint[fingerprint] = run["id"]
            time.sleep(1)
        starts = task_starts(api, list(by_fingerprint.values()), "detect")
        return [(starts[run_id] - sent[fp]).total_seconds() for fp, run_id in by_fingerprint.items() if run_id in starts]
    finally:
        stack.stop()


SERVED_FLOW = textwrap.dedent('''
    from prefect import flow, task

    @task
    def first():
        return 1

    @flow
    def plain():
        first()

    if __name__ == "__main__":
        plain.serve(name="bench")
''')


def bench_serve(count: int, work: Path) -> list[float]:
    port = 4382
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(work / "serve-prefect"), "PREFECT_API_URL": api}
    env.pop("PREFECT_RUNNER_POLL_FREQUENCY", None)  # default polling
    (work / "served.py").write_text(SERVED_FLOW)
    bin_dir = Path(sys.executable).parent
    server = subprocess.Popen([str(bin_dir / "prefect"), "server", "start", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    served = None
    try:
        while True:
            try:
                if httpx.get(f"{api}/health", timeout=2).is_success:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        served = subprocess.Popen([sys.executable, str(work / "served.py")], env=env, cwd=work,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        while True:
            found = httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()
            if found:
                deployment_id = found[0]["id"]
                break
            time.sleep(0.5)
        time.sleep(2)
        sent: dict[str, datetime] = {}
        for _ in range(count):
            at = datetime.now(UTC)
            response = httpx.post(f"{api}/deployments/{deployment_id}/create_flow_run", json={}, timeout=30)
            assert response.status_code == 201, response.text
            run = response.json()
            sent[run["id"]] = at
            time.sleep(SPACING)
        starts = task_starts(api, list(sent), "first")
        return [(starts[run_id] - at).total_seconds() for run_id, at in sent.items() if run_id in starts]
    finally:
        for process in (served, server):
            if process and process.poll() is None:
                os.killpg(process.pid, 9)
                process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=20)
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="irp-bench-pickup-"))
    print(f"alerts: {options.alerts} (2 s apart), latency to the first stage task Running", flush=True)
    irp = bench_irp(options.alerts, work)
    print(f"irp stack (intake → irp worker):   median {statistics.median(irp):5.2f} s   p95 {p95(irp):5.2f} s   "
          f"(n={len(irp)}; target median <= 2 s)", flush=True)
    serve = bench_serve(options.alerts, work)
    print(f"plain Prefect serve (default poll): median {statistics.median(serve):5.2f} s   p95 {p95(serve):5.2f} s   "
          f"(n={len(serve)})")


if __name__ == "__main__":
    main()
