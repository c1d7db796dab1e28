"""What starting one run costs the Prefect server on its own, and the floor it sets under a burst.

Before its `detect` task runs, every incident's run needs five requests on the Prefect server, in
this order: the intake creates it, a worker claims it (Pending), the engine reads it, updates its
record and sets it Running. On SQLite the writes among them go through the one write line
(irp/prefect_server.py), so a burst of N incidents cannot have its last `detect` start sooner than N
times their cost, however the rest is ordered. This measures that cost on an idle server (irp's, as
`irp stack` runs it, without workers or intake), one request at a time from one client, and prints
the floor for a burst beside the target of bench/bench_burst.py. With IRP_TEST_POSTGRES_URL (or
--postgres URL) it measures Prefect on PostgreSQL too. Every process it starts is stopped. Usage:

    .venv/bin/python bench/bench_run_start.py [--runs 100] [--burst 100] [--postgres URL]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"

from bench_burst import DETECT_TARGET, fresh_postgres_database, machine_speed  # noqa: E402

STEPS = ("create", "claim (Pending)", "read", "update", "Running")
WRITES = ("create", "claim (Pending)", "update", "Running")


def timed(client: httpx.Client, method: str, path: str, body: dict | None = None) -> tuple[float, dict]:
    """One request, asked again after 50 ms while the server answers 503; its time and its answer."""
    started = time.perf_counter()
    while True:
        response = client.request(method, path, json=body)
        if response.status_code != 503:
            break
        time.sleep(0.05)
    response.raise_for_status()
    return time.perf_counter() - started, response.json() if response.content else {}


def start_runs(api: str, runs: int) -> dict[str, list[float]]:
    """Create and start `runs` runs of one deployment as the intake, a worker and Prefect's engine do."""
    from prefect.client.schemas.actions import DeploymentFlowRunCreate
    from prefect.states import Pending, Running, Scheduled, to_state_create

    alert = json.loads((REPO / "playbooks" / "samples" / "human_error.json").read_text())
    times: dict[str, list[float]] = {step: [] for step in STEPS}
    with httpx.Client(base_url=api, timeout=60) as client:
        deployment = client.get("/deployments/name/human_error/respond").json()
        for index in range(runs):
            body = DeploymentFlowRunCreate(
                parameters={"alert": {**alert, "fingerprint": f"start-{index}"}}, state=to_state_create(Scheduled()),
                tags=["irp-intake"], idempotency_key=f"start-{index}-{time.time_ns()}", enforce_parameter_schema=False,
            ).model_dump(mode="json", exclude_unset=True)
            seconds, run = timed(client, "POST", f"/deployments/{deployment['id']}/create_flow_run", body)
            times["create"].append(seconds)
            path = f"/flow_runs/{run['id']}"
            pending = {"state": to_state_create(Pending()).model_dump(mode="json")}
            times["claim (Pending)"].append(timed(client, "POST", f"{path}/set_state", pending)[0])
            times["read"].append(timed(client, "GET", path)[0])
            times["update"].append(timed(client, "PATCH", path, {"flow_version": run.get("flow_version"),
                                                                  "empirical_policy": run["empirical_policy"]})[0])
            running = {"state": to_state_create(Running()).model_dump(mode="json")}
            times["Running"].append(timed(client, "POST", f"{path}/set_state", running)[0])
    return times


def side(label: str, work: Path, runs: int, burst: int, held: str, extra: dict[str, str]) -> None:
    from irp.stack import Stack, bring_up

    os.environ.update({"PREFECT_HOME": str(work / "prefect"), **extra})
    os.environ.pop("PREFECT_API_URL", None)
    stack = Stack(port=4392, log_dir=work / "log")
    try:
        bring_up(stack, with_intake=False, workers=0)
        time.sleep(2)  # the server's services settle after the deployments
        speed = machine_speed()
        times = start_runs(stack.api_url, runs)
    finally:
        stack.stop()
    medians = {step: statistics.median(values) * 1000 for step, values in times.items()}
    writes = sum(medians[step] for step in WRITES)
    print(f"{label}, {runs} runs started one request at a time (a fixed loop took {speed:.2f} s):", flush=True)
    print("    median ms: " + ", ".join(f"{step} {ms:.1f}" for step, ms in medians.items()), flush=True)
    print(f"    the writes that start one run: {writes:.0f} ms; {burst} runs hold {held} "
          f"≥ {writes * burst / 1000:.1f} s before the last `detect` (target: every `detect` ≤ {DETECT_TARGET:.0f} s "
          f"after its POST)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="Runs to create and start (one at a time).")
    parser.add_argument("--burst", type=int, default=100, help="Incidents of the burst the floor is given for.")
    parser.add_argument("--postgres", default=os.environ.get("IRP_TEST_POSTGRES_URL"),
                        help="PostgreSQL URL of a role that may create databases (default: IRP_TEST_POSTGRES_URL).")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="irp-bench-run-start-"))
    print(f"working folder {work}", flush=True)
    side("SQLite (embedded default)", work / "sqlite", options.runs, options.burst, "the one write line", {})
    if options.postgres:
        side("PostgreSQL", work / "postgres", options.runs, 1000, "the server process's one core", {
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": fresh_postgres_database(options.postgres)})
    else:
        print("PostgreSQL: skipped (set IRP_TEST_POSTGRES_URL or --postgres URL)", flush=True)


if __name__ == "__main__":
    main()
