"""Alert received → first stage task Running, on the local stack, beside plain Prefect `serve`.

Both in one run on the same machine:
  A. the irp stack (Prefect server, irp workers, intake): generic alerts POSTed to the intake
     2 s apart; latency = start of the run's `detect` task − the moment the POST was sent;
  B. plain Prefect: a one-task flow served with `flow.serve()` and default polling; as many
     `create_flow_run` calls 2 s apart; latency = start of its task − the call.
Prints median and p95 of each (target for A: median ≤ 2 s), where the time went (POST → run
created → Pending → Running → first task Running) and the machine's load while measuring.
Every wait is bounded and every process it starts is stopped at the end, even on error or Ctrl-C;
a side that does not finish reports what it measured. Usage:

    .venv/bin/python bench/bench_pickup.py [--alerts 20] [--spacing 2] [--skip-serve]

Targets of issue 22 (pickup tail): `--alerts 50 --spacing 1`, p95 ≤ 1 s and max ≤ 2 s.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"


SPACING = 2.0  # seconds between alerts: measures pickup, not a queue behind a saturated worker
WAIT = 180.0  # longest wait for the runs of one side to reach their first task


class LoadSampler:
    """Samples the 1-minute load average and CPU pressure every second while measuring."""

    def __init__(self) -> None:
        self.loads: list[float] = []
        self.pressure: list[float] = []
        self.io: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.loads.append(os.getloadavg()[0])
            for kind, values in (("cpu", self.pressure), ("io", self.io)):
                try:  # "some avg10=…": share of time some task waited for a CPU (for I/O)
                    line = Path(f"/proc/pressure/{kind}").read_text().splitlines()[0]
                    values.append(float(line.split()[1].split("=")[1]))
                except (OSError, IndexError, ValueError):
                    pass
            self._stop.wait(1.0)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def describe(self) -> str:
        if not self.loads:
            return "load: not sampled"
        text = (f"load avg (1 min) {statistics.mean(self.loads):.2f} mean, {max(self.loads):.2f} max "
                f"on {os.cpu_count()} cores")
        if self.pressure:
            text += f"; CPU pressure (some, avg10) {statistics.mean(self.pressure):.0f}% mean, {max(self.pressure):.0f}% max"
        if self.io:
            text += f"; I/O pressure {statistics.mean(self.io):.0f}% mean, {max(self.io):.0f}% max"
        return text


def _cpu_ticks() -> dict[int, tuple[str, int]]:
    ticks = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        ticks[int(stat.parent.name)] = (name, int(fields[11]) + int(fields[12]))  # utime + stime
    return ticks


def other_load(seconds: float = 2.0) -> str:
    """The processes using the most CPU over the next few seconds (none of them started by this benchmark)."""
    before = _cpu_ticks()
    time.sleep(seconds)
    after = _cpu_ticks()
    hz = os.sysconf("SC_CLK_TCK")
    busy = sorted(((ticks - before[pid][1]) / hz / seconds * 100, name) for pid, (name, ticks) in after.items()
                  if pid in before and pid != os.getpid())
    shown = [f"{name} {share:.0f}%" for share, name in reversed(busy) if share >= 5][:6]
    return "busiest processes: " + (", ".join(shown) or "none above 5% of a core")


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def task_starts(api: str, flow_run_ids: list[str], task_prefix: str, deadline: float) -> dict[str, datetime]:
    """Start time of the first task named task_prefix* of each flow run, until found or the deadline."""
    found: dict[str, datetime] = {}
    while flow_run_ids:
        waiting = [run_id for run_id in flow_run_ids if run_id not in found]
        try:  # an incident run has ~20 task runs: ask only for the first one's name, and only of runs still waiting
            runs = httpx.post(f"{api}/task_runs/filter", timeout=30, json={
                "flow_runs": {"id": {"any_": waiting}}, "task_runs": {"name": {"like_": task_prefix}},
                "limit": 200}).json()
        except httpx.HTTPError:
            runs = []
        for run in runs:
            if run["name"].startswith(task_prefix) and run.get("start_time"):
                found[run["flow_run_id"]] = datetime.fromisoformat(run["start_time"])
        if len(found) == len(flow_run_ids) or time.monotonic() > deadline:
            break
        time.sleep(1)
    return found


def run_phases(api: str, flow_run_ids: list[str]) -> dict[str, dict[str, datetime | None]]:
    """When each run was created, claimed (Pending) and started (Running), from the server's records."""
    phases: dict[str, dict[str, datetime | None]] = {}
    for run_id in flow_run_ids:
        try:
            run = httpx.get(f"{api}/flow_runs/{run_id}", timeout=30).json()
            states = httpx.get(f"{api}/flow_run_states/", params={"flow_run_id": run_id}, timeout=30).json()
        except httpx.HTTPError:
            continue
        pending = [_time(s["timestamp"]) for s in states if s["type"] == "PENDING"]
        phases[run_id] = {"created": _time(run.get("created")), "pending": min(pending) if pending else None,
                          "running": _time(run.get("start_time"))}
    return phases


def report(label: str, sent: dict[str, datetime], starts: dict[str, datetime],
           phases: dict[str, dict[str, datetime | None]]) -> list[float]:
    """Print the latency figures of one side and where the time went; returns the latencies."""
    latencies = [(starts[run_id] - at).total_seconds() for run_id, at in sent.items() if run_id in starts]
    missing = len(sent) - len(latencies)
    if latencies:
        print(f"{label}: median {statistics.median(latencies):5.2f} s   p95 {p95(latencies):5.2f} s   "
              f"min {min(latencies):.2f} s   max {max(latencies):.2f} s   (n={len(latencies)}"
              f"{f', {missing} without a first task in time' if missing else ''})", flush=True)
    else:
        print(f"{label}: no run reached its first task ({len(sent)} sent)", flush=True)
    steps = [("POST → run created", None, "created"), ("created → Pending (claimed)", "created", "pending"),
             ("Pending → Running", "pending", "running"), ("Running → first task Running", "running", "task")]
    parts = []
    for name, start, end in steps:
        values = []
        for run_id, at in sent.items():
            marks = {**phases.get(run_id, {}), "task": starts.get(run_id)}
            begin = at if start is None else marks.get(start)
            if begin is not None and marks.get(end) is not None:
                values.append((marks[end] - begin).total_seconds())
        if values:
            parts.append(f"{name} {statistics.median(values):.2f} (p95 {p95(values):.2f})")
    if parts:
        print("    median s: " + "; ".join(parts), flush=True)
    return latencies


def intake_breakdown(log: Path, sent: list[datetime]) -> str:
    """From the intake's log: when its outbox's first request for each run was answered (the creation; the
    deployment read before it for a deployment's first run) and how often the server answered the
    creation with 503 (SQLite "database is locked")."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "intake log not found"
    reads, answers = [], {"201": 0, "503": 0}
    for line in lines:
        if "HTTP Request:" not in line:
            continue
        try:  # "2026-11-29 10:49:59,685 INFO httpx: HTTP Request: GET http://…" in local time
            at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").astimezone(UTC)
        except ValueError:
            continue
        if "/deployments/name/" in line or "/create_flow_run " in line:
            reads.append(at)
        if "/create_flow_run " in line:
            for code in answers:
                answers[code] += f"HTTP/1.1 {code} " in line
    waits = []
    for index, at in enumerate(sorted(sent)):
        until = sorted(sent)[index + 1] if index + 1 < len(sent) else None
        first = next((r for r in reads if r >= at and (until is None or r < until)), None)
        if first is not None:
            waits.append((first - at).total_seconds())
    text = (f"create_flow_run answered 201 {answers['201']} times, 503 {answers['503']} times "
            "(the intake asks a busy server again within 0.1 s)")
    if waits:
        text = (f"POST → the outbox's first request for the run answered median {statistics.median(waits):.2f} s, "
                f"p95 {p95(waits):.2f} s; " + text)
    return text


def bench_irp(count: int, work: Path, spacing: float = SPACING) -> list[float]:
    from irp.stack import Stack, bring_up

    os.environ.update(PREFECT_HOME=str(work / "irp-prefect"), IRP_EVIDENCE_URL=f"file://{work / 'evidence'}",
                      IRP_INTAKE_JOURNAL=str(work / "journal.sqlite3"))
    os.environ.pop("PREFECT_API_URL", None)
    stack = Stack(port=4381, intake_port=8781, log_dir=work / "log")
    sent: dict[str, datetime] = {}
    by_fingerprint: dict[str, str] = {}
    starts: dict[str, datetime] = {}
    phases: dict[str, dict[str, datetime | None]] = {}
    acks: list[float] = []
    load = LoadSampler()
    interrupted = False
    try:
        bring_up(stack)
        api, intake = stack.api_url, f"http://{stack.host}:{stack.intake_port}"
        workers = sum(1 for name, _ in stack.processes if name.startswith("worker"))
        # a worker sends its first heartbeat once it has loaded the flows and checked the playbooks
        _wait(f"{workers} irp workers", lambda: len(httpx.post(f"{api}/work_pools/irp/workers/filter", json={},
                                                              timeout=10).json()) >= workers, 120)
        time.sleep(2)
        with load:
            for index in range(count):
                fingerprint = f"bench-{index}-{time.time_ns()}"
                body = {"title": f"benchmark alert {index}", "fingerprint": fingerprint,
                        "labels": {"incident_type": "human_error", "tenant": "bench"}}
                sent[fingerprint] = datetime.now(UTC)
                response = httpx.post(f"{intake}/alerts/generic", json=body, timeout=30)
                acks.append((datetime.now(UTC) - sent[fingerprint]).total_seconds())
                assert response.status_code == 202, response.text
                time.sleep(spacing)
            deadline = time.monotonic() + WAIT
            while len(by_fingerprint) < count and time.monotonic() < deadline:
                try:
                    runs = httpx.post(f"{api}/flow_runs/filter", timeout=30, json={
                        "flow_runs": {"tags": {"all_": ["irp-intake"]}}, "limit": 200}).json()
                except httpx.HTTPError:
                    runs = []
                for run in runs:
                    fingerprint = run["parameters"].get("alert", {}).get("fingerprint")
                    if fingerprint in sent:
                        by_fingerprint[fingerprint] = run["id"]
                if len(by_fingerprint) < count:
                    time.sleep(1)
            starts = task_starts(api, list(by_fingerprint.values()), "detect", deadline)
        phases = run_phases(api, list(by_fingerprint.values()))
    except BaseException as exc:  # report what was measured, then stop
        print(f"irp stack: stopped early ({type(exc).__name__}: {exc}); logs in {stack.log_dir}", flush=True)
        interrupted = isinstance(exc, KeyboardInterrupt)
    finally:
        stack.stop()
    if len(by_fingerprint) < len(sent):
        print(f"irp stack: {len(sent) - len(by_fingerprint)} of {len(sent)} alerts have no flow run"
              f"{' looked up (stopped before)' if interrupted or not by_fingerprint else ''}", flush=True)
    latencies = report("irp stack (intake → irp worker)    ", {by_fingerprint[fp]: at for fp, at in sent.items()
                                                               if fp in by_fingerprint}, starts, phases)
    if acks:
        print(f"    intake: 202 received median {statistics.median(acks):.2f} s, p95 {p95(acks):.2f} s after the POST; "
              f"{intake_breakdown(stack.log_dir / 'intake.log', list(sent.values()))}", flush=True)
    print(f"    {load.describe()}", flush=True)
    if interrupted:
        raise KeyboardInterrupt
    return latencies


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


def _wait(what: str, check, timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{what} not ready within {timeout:.0f} s")


def bench_serve(count: int, work: Path, spacing: float = SPACING) -> list[float]:
    port = 4382
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(work / "serve-prefect"), "PREFECT_API_URL": api}
    env.pop("PREFECT_RUNNER_POLL_FREQUENCY", None)  # default polling
    (work / "served.py").write_text(SERVED_FLOW)
    bin_dir = Path(sys.executable).parent
    processes: list[subprocess.Popen] = []
    sent: dict[str, datetime] = {}
    starts: dict[str, datetime] = {}
    phases: dict[str, dict[str, datetime | None]] = {}
    load = LoadSampler()
    interrupted = False
    try:
        with open(work / "serve-server.log", "ab") as log:
            processes.append(subprocess.Popen([str(bin_dir / "prefect"), "server", "start", "--port", str(port)],
                                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        _wait("plain Prefect server", lambda: httpx.get(f"{api}/health", timeout=2).is_success, 180)
        with open(work / "served.log", "ab") as log:
            processes.append(subprocess.Popen([sys.executable, str(work / "served.py")], env=env, cwd=work,
                                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        deployment_id = _wait("the served deployment", lambda: [d["id"] for d in httpx.post(
            f"{api}/deployments/filter", json={}, timeout=10).json()], 120)[0]
        time.sleep(2)
        from prefect.client.orchestration import SyncPrefectClient

        # Prefect's client, as run_deployment uses it: it retries a 503 ("database is locked") 2, 4, 8… s later
        with load, SyncPrefectClient(api) as client:
            for _ in range(count):
                at = datetime.now(UTC)
                sent[str(client.create_flow_run_from_deployment(deployment_id).id)] = at
                time.sleep(spacing)
            starts = task_starts(api, list(sent), "first", time.monotonic() + WAIT)
        phases = run_phases(api, list(sent))
    except BaseException as exc:  # report what was measured, then stop
        print(f"plain serve: stopped early ({type(exc).__name__}: {exc}); logs in {work}", flush=True)
        interrupted = isinstance(exc, KeyboardInterrupt)
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
    latencies = report("plain Prefect serve (default poll) ", sent, starts, phases)
    print(f"    {load.describe()}", flush=True)
    if interrupted:
        raise KeyboardInterrupt
    return latencies


def guarded(work: Path, measure: Callable[[], None]) -> None:
    """Run `measure` with the machine's load printed before and after; SIGTERM or Ctrl-C stop it, and every
    process a side started is stopped by its own `finally`."""
    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # so the finally blocks stop every process started

    signal.signal(signal.SIGTERM, on_term)
    print(f"working folder {work}", flush=True)
    print(f"before: load avg {' '.join(f'{v:.2f}' for v in os.getloadavg())}; {other_load()}", flush=True)
    try:
        measure()
    except KeyboardInterrupt:
        print("interrupted: every process started was stopped", flush=True)
        sys.exit(130)
    print(f"after: load avg {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=20)
    parser.add_argument("--spacing", type=float, default=SPACING, help="Seconds between two alerts.")
    parser.add_argument("--skip-serve", action="store_true", help="Measure the irp stack only.")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="irp-bench-pickup-"))
    print(f"alerts: {options.alerts} ({options.spacing:g} s apart), latency to the first stage task Running",
          flush=True)

    def measure() -> None:
        latencies = bench_irp(options.alerts, work, options.spacing)
        if latencies:
            print(f"    targets: median ≤ 2 s {'✔' if statistics.median(latencies) <= 2 else '✘'}; "
                  f"p95 ≤ 1 s {'✔' if p95(latencies) <= 1 else '✘'}; max ≤ 2 s {'✔' if max(latencies) <= 2 else '✘'}",
                  flush=True)
        if not options.skip_serve:
            bench_serve(options.alerts, work, options.spacing)

    guarded(work, measure)


if __name__ == "__main__":
    main()
