"""A burst of distinct alerts on the local stack: how soon each response starts and when its automatic part ends.

N distinct alerts (default 100, five incident types in turn) are POSTed to the intake as fast as one
client can. For each incident it reads from the Prefect server: the POST → the run created → its
`detect` task Running → the automatic part done (the run's first wait for a person — Suspended at a
stage or Paused at a gate — or its end), and prints the median, p95 and max of each, the count of
"database is locked" errors the server logged and of 503 answers the clients received (each one
retried), and the load average while it ran. Targets (this machine): every `detect` Running within
10 s of its POST, every automatic part done within 30 s of the first POST.

With IRP_TEST_POSTGRES_URL (or --postgres URL: a role allowed to create databases) it runs the same
against a Prefect server on PostgreSQL, in a fresh database, with --postgres-alerts alerts (1,000).
Every process it starts is stopped at the end, even on error or Ctrl-C. Usage:

    .venv/bin/python bench/bench_burst.py [--alerts 100] [--postgres URL] [--postgres-alerts 1000] [--compare]
                                          [--summary-only]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"

from bench_pickup import LoadSampler, _cpu_ticks, _wait, guarded, p95  # noqa: E402

TYPES = ("human_error", "technical_failure", "service_unavailability", "intrusion_attempt", "data_leak")
DETECT_TARGET, DONE_TARGET = 10.0, 30.0
SETTLED = ("PAUSED", "COMPLETED", "FAILED", "CRASHED", "CANCELLED")  # waiting for a person, or ended


def _at(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def alert(index: int, stamp: int) -> dict:
    incident_type = TYPES[index % len(TYPES)]
    labels = {"incident_type": incident_type, "tenant": f"bench-{index % 7}", "service": f"svc-{index}"}
    if incident_type == "data_leak":
        labels["data_categories"] = "contact_data"
    return {"title": f"burst alert {index}", "fingerprint": f"burst-{stamp}-{index}", "labels": labels}


def find_runs(api: str, fingerprints: set[str], deadline: float) -> dict[str, dict]:
    """The flow run of each fingerprint (by its alert parameter), until all are found or the deadline."""
    found: dict[str, dict] = {}
    while len(found) < len(fingerprints) and time.monotonic() < deadline:
        offset = 0
        while True:
            try:
                page = httpx.post(f"{api}/flow_runs/filter", timeout=60, json={
                    "flow_runs": {"tags": {"all_": ["irp-intake"]}}, "limit": 200, "offset": offset}).json()
            except httpx.HTTPError:
                break
            for run in page:
                fingerprint = (run.get("parameters") or {}).get("alert", {}).get("fingerprint")
                if fingerprint in fingerprints:
                    found[fingerprint] = run
            if len(page) < 200:
                break
            offset += 200
        if len(found) < len(fingerprints):
            time.sleep(1)
    return found


def first_wait_or_end(api: str, run_id: str) -> datetime | None:
    """When the run first waited for a person (a Paused-type state) or ended, from its state history."""
    try:
        states = httpx.get(f"{api}/flow_run_states/", params={"flow_run_id": run_id}, timeout=60).json()
    except httpx.HTTPError:
        return None
    marks = [_at(s["timestamp"]) for s in states if s["type"] in SETTLED]
    return min(marks) if marks else None


def detect_starts(api: str, run_ids: list[str], deadline: float) -> dict[str, datetime]:
    """When each run's `detect` task started; the server records task runs from their events, a little late
    under load, so until all are found or the deadline."""
    found: dict[str, datetime] = {}
    while True:
        _detect_starts(api, [run_id for run_id in run_ids if run_id not in found], found)
        if len(found) == len(run_ids) or time.monotonic() > deadline:
            return found
        time.sleep(2)


def _detect_starts(api: str, run_ids: list[str], found: dict[str, datetime]) -> None:
    for start in range(0, len(run_ids), 100):
        try:
            runs = httpx.post(f"{api}/task_runs/filter", timeout=60, json={
                "flow_runs": {"id": {"any_": run_ids[start:start + 100]}},
                "task_runs": {"name": {"like_": "detect"}}, "limit": 200}).json()
        except httpx.HTTPError:
            continue
        for run in runs:
            if run["name"].startswith("detect") and run.get("start_time"):
                found[run["flow_run_id"]] = _at(run["start_time"])


def settle(api: str, runs: dict[str, dict]) -> dict[str, datetime]:
    """When each run first waited for a person or ended (read from its state history)."""
    done: dict[str, datetime] = {}
    for run in runs.values():
        if (at := first_wait_or_end(api, run["id"])) is not None:
            done[run["id"]] = at
    return done


def wait_settled(api: str, count: int, deadline: float) -> None:
    """Until `count` intake runs wait for a person or have ended: one COUNT a second, so that measuring
    does not load the server it measures (the timestamps are read from the state history afterwards)."""
    query = {"flow_runs": {"tags": {"all_": ["irp-intake"]}, "state": {"type": {"any_": list(SETTLED)}}}}
    while time.monotonic() < deadline:
        try:
            if httpx.post(f"{api}/flow_runs/count", json=query, timeout=60).json() >= count:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)


def count_in_logs(log_dir: Path, text: str) -> int:
    total = 0
    for log in log_dir.glob("*.log"):
        try:
            total += log.read_text(errors="replace").count(text)
        except OSError:
            pass
    return total


def write_line(log_dir: Path) -> str | None:
    """What the server's write line (SQLite) served, from its last report (irp/prefect_server.py): the writes
    that create a run (rank 0) or start it (rank 1: claim, the engine's update, Running), and the others."""
    try:
        reports = re.findall(r"by rank \(writes, seconds\): (.*)", (log_dir / "prefect-server.log").read_text(errors="replace"))
    except OSError:
        return None
    if not reports:
        return None
    ranks = [(int(n), float(s)) for n, s in re.findall(r"\d: (\d+) ([\d.]+)", reports[-1])]
    starting = [sum(n for n, _ in ranks[:2]), sum(s for _, s in ranks[:2])]
    other = [sum(n for n, _ in ranks[2:]), sum(s for _, s in ranks[2:])]
    runs = ranks[0][0]  # runs created (incidents' and reviews')
    return (f"write line: the {starting[0]} writes that create or start the {runs} runs held it {starting[1]:.1f} s "
            f"({1000 * starting[1] / max(runs, 1):.0f} ms per run), the {other[0]} others {other[1]:.1f} s")


def machine_speed() -> float:
    """CPU seconds a fixed pure-Python loop takes here now: this shared machine's speed drifts by half within
    an hour, so CPU figures of two runs compare only beside this one."""
    started, total = time.process_time(), 0
    for number in range(5_000_000):
        total += number
    return time.process_time() - started


def stack_cpu(stack) -> dict[str, float]:
    """CPU seconds (user + system) each process of the stack has used so far, by its name in the stack."""
    ticks, hz = _cpu_ticks(), os.sysconf("SC_CLK_TCK")
    return {name: ticks.get(process.pid, ("", 0))[1] / hz for name, process in stack.processes}


def describe_cpu(before: dict[str, float], after: dict[str, float], incidents: int) -> str:
    """Where the CPU went during the burst: per process of the stack, and per incident."""
    used = {name: after[name] - before.get(name, 0.0) for name in after}
    parts = ", ".join(f"{name} {seconds:.1f}" for name, seconds in used.items())
    total = sum(used.values())
    return (f"CPU used by the stack during the burst: {total:.1f} s ({total / max(incidents, 1):.2f} s per incident): "
            f"{parts}")


def summary(name: str, values: list[float]) -> str:
    if not values:
        return f"{name}: none"
    return f"{name}: median {statistics.median(values):6.2f}  p95 {p95(values):6.2f}  max {max(values):6.2f}"


def burst(label: str, count: int, work: Path, env: dict[str, str], wait: float, per_incident: bool,
          plain_server: bool = False) -> bool:
    """One side: bring the stack up with `env`, post `count` alerts, report; True when the targets are met.
    `plain_server`: the stack around a plain `prefect server start` instead of irp's (irp/prefect_server.py)."""
    from irp.stack import Stack, bring_up

    os.environ.update(env)
    os.environ.pop("PREFECT_API_URL", None)
    stack = Stack(port=4391, intake_port=8791, log_dir=work / "log")
    if plain_server:
        stack.start("prefect-server", [str(Path(sys.executable).parent / "prefect"), "server", "start",
                                       "--host", stack.host, "--port", str(stack.port)])
        os.environ["PREFECT_API_URL"] = f"http://{stack.host}:{stack.port}/api"
    load = LoadSampler()
    sent: dict[str, datetime] = {}
    acks: list[float] = []
    runs: dict[str, dict] = {}
    detect: dict[str, datetime] = {}
    done: dict[str, datetime] = {}
    busy = 0.0
    cpu: tuple[dict[str, float], dict[str, float]] | None = None
    speed = 0.0
    try:
        bring_up(stack)
        api, intake = stack.api_url, f"http://{stack.host}:{stack.intake_port}"
        workers = sum(1 for name, _ in stack.processes if name.startswith("worker"))
        _wait(f"{workers} irp workers", lambda: len(httpx.post(f"{api}/work_pools/irp/workers/filter", json={},
                                                              timeout=10).json()) >= workers, 180)
        time.sleep(2)
        stamp = time.time_ns()
        bodies = [alert(i, stamp) for i in range(count)]
        speed = machine_speed()
        cpu_before = stack_cpu(stack)
        with load:
            with httpx.Client(timeout=30) as client:
                for body in bodies:
                    sent[body["fingerprint"]] = datetime.now(UTC)
                    response = client.post(f"{intake}/alerts/generic", json=body)
                    acks.append((datetime.now(UTC) - sent[body["fingerprint"]]).total_seconds())
                    if response.status_code != 202:
                        raise RuntimeError(f"the intake answered {response.status_code}: {response.text[:300]}")
            posted = (max(sent.values()) - min(sent.values())).total_seconds()
            print(f"{label}: {count} alerts posted in {posted:.2f} s (202 median {statistics.median(acks) * 1000:.0f} ms)",
                  flush=True)
            deadline = time.monotonic() + wait
            wait_settled(api, count, deadline)  # then read every run once: measuring must not load the server
            cpu = (cpu_before, stack_cpu(stack))
            runs = find_runs(api, set(sent), deadline)
            done = settle(api, runs)
            metrics = httpx.get(f"{intake}/metrics", timeout=10).text
            busy = next((float(line.split()[-1]) for line in metrics.splitlines()
                         if line.startswith("irp_intake_run_busy_retries_total")), 0.0)
        detect = detect_starts(api, [run["id"] for run in runs.values()], time.monotonic() + 120)
    except BaseException as exc:  # report what was measured, then stop
        print(f"{label}: stopped early ({type(exc).__name__}: {exc}); logs in {stack.log_dir}", flush=True)
        if isinstance(exc, KeyboardInterrupt):
            stack.stop()
            raise
    finally:
        stack.stop()
    first = min(sent.values()) if sent else datetime.now(UTC)
    created, started, finished, rows = [], [], [], []
    for fingerprint, at in sent.items():
        run = runs.get(fingerprint)
        c = (_at(run["created"]) - at).total_seconds() if run else None
        d = (detect[run["id"]] - at).total_seconds() if run and run["id"] in detect else None
        f = (done[run["id"]] - at).total_seconds() if run and run["id"] in done else None
        created += [c] if c is not None else []
        started += [d] if d is not None else []
        finished += [f] if f is not None else []
        rows.append((fingerprint.rsplit("-", 1)[1], run["name"] if run else "(no run)", c, d, f))
    if per_incident:
        print("    alert  incident run                              created  detect  done   (s after its POST)")
        for index, name, c, d, f in rows:
            cells = " ".join(f"{v:7.2f}" if v is not None else "      —" for v in (c, d, f))
            print(f"    {index:>5}  {name[:40]:<40} {cells}")
    print("    " + summary("POST → run created       ", created), flush=True)
    print("    " + summary("POST → detect Running    ", started), flush=True)
    print("    " + summary("POST → automatic part done", finished), flush=True)
    last_done = max(done.values()) if done else None
    whole = (last_done - first).total_seconds() if last_done else None
    lock_errors = count_in_logs(stack.log_dir, "Encountered retryable exception in request")
    print(f"    runs: {len(runs)} of {count} created, {len(started)} reached detect, {len(finished)} reached their "
          f"first wait or end; last automatic part done {whole:.1f} s after the first POST" if whole is not None
          else f"    runs: {len(runs)} of {count} created, none done", flush=True)
    print(f"    server lock errors ('database is locked', each answered 503 and retried by its client): "
          f"{lock_errors}, of which run creations the intake asked again at once: {busy:.0f}", flush=True)
    print(f"    {load.describe()}", flush=True)
    if line := write_line(stack.log_dir):
        print(f"    {line}", flush=True)
    if cpu:
        print(f"    {describe_cpu(*cpu, len(runs))}; a fixed loop took {speed:.2f} s before, "
              f"{machine_speed():.2f} s after", flush=True)
    detect_ok = len(started) == count and max(started) <= DETECT_TARGET
    done_ok = len(finished) == count and whole is not None and whole <= DONE_TARGET
    print(f"    target: every detect Running ≤ {DETECT_TARGET:.0f} s after its POST: "
          f"{'✔' if detect_ok else '✘'} (max {max(started) if started else float('nan'):.2f} s); "
          f"all automatic parts done ≤ {DONE_TARGET:.0f} s: {'✔' if done_ok else '✘'}", flush=True)
    return detect_ok and done_ok


def fresh_postgres_database(url: str) -> str:
    """CREATE a database for this run; returns its URL (asyncpg driver, as Prefect wants it)."""
    import asyncpg

    name = f"irp_burst_{int(time.time())}"

    async def create() -> None:
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()

    asyncio.run(create())
    base = url.rsplit("/", 1)[0]
    return f"{base}/{name}".replace("postgresql://", "postgresql+asyncpg://", 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=100)
    parser.add_argument("--postgres", default=os.environ.get("IRP_TEST_POSTGRES_URL"),
                        help="PostgreSQL URL of a role that may create databases (default: IRP_TEST_POSTGRES_URL).")
    parser.add_argument("--postgres-alerts", type=int, default=1000)
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--wait", type=float, default=600, help="Longest wait for the runs of one side (s).")
    parser.add_argument("--summary-only", action="store_true", help="Leave out the line per incident.")
    parser.add_argument("--compare", action="store_true",
                        help="Also run the SQLite side around a plain `prefect server start`.")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="irp-bench-burst-"))

    def side(name: str, **extra: str) -> tuple[Path, dict[str, str]]:
        folder = work / name
        return folder, {"PREFECT_SERVER_LOG_RETRYABLE_ERRORS": "true", "PREFECT_HOME": str(folder / "prefect"),
                        "IRP_EVIDENCE_URL": f"file://{folder / 'evidence'}",
                        "IRP_INTAKE_JOURNAL": str(folder / "journal.sqlite3"), **extra}

    def measure() -> None:
        if not options.skip_sqlite:
            burst(f"SQLite (embedded default), {options.alerts} alerts", options.alerts, *side("sqlite"),
                  options.wait, not options.summary_only)
        if options.compare:
            burst(f"SQLite, plain `prefect server start`, {options.alerts} alerts", options.alerts,
                  *side("sqlite-plain"), options.wait, not options.summary_only, plain_server=True)
        if options.postgres:
            burst(f"PostgreSQL, {options.postgres_alerts} alerts", options.postgres_alerts, *side(
                "postgres", PREFECT_SERVER_DATABASE_CONNECTION_URL=fresh_postgres_database(options.postgres)),
                options.wait * 3, not options.summary_only)
        else:
            print("PostgreSQL: skipped (set IRP_TEST_POSTGRES_URL or --postgres URL)", flush=True)

    guarded(work, measure)


if __name__ == "__main__":
    main()
