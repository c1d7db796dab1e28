"""Benchmark of the alert intake on loopback (not a test; prints figures for docs/intake.md).

Runs, in one go and on the same machine:
  1. a bare uvicorn/Starlette endpoint answering 202 and doing nothing (the ceiling);
  2. `irp webhook` with its durable journal (SQLite WAL, synchronous=FULL), routing and dedup.
Against each: a closed loop (C connections, as fast as they are answered) for throughput, then an
open loop paced at R alerts/s for latency (time from sending a request to its 202). The payload is
an Alertmanager v4 notification cycling through K distinct alerts (the storm shape: mostly repeats).
Finally the intake's RSS (current and peak), and where its CPU goes: the request checks (parse,
validate, normalise, route), the journal's accept alone (the same deliveries, 64 in flight, no HTTP)
and the outbox alone (the repeats to timeline entries), measured in this process beside the servers;
and the CPU the ratio target would take on this machine, the load generator's share included.

    .venv/bin/python bench/bench_intake.py [--requests 6000] [--rate 500] [--seconds 10]

Every request goes to 127.0.0.1; every loop is bounded in count and time; both servers are stopped.
The intake's outbox points at a closed port (no Prefect server): run creation is retried in the
background, timeline entries are written to a temporary evidence store, as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "e2e"))
from intake_harness import distinct_alerts  # noqa: E402 - the storm bodies of the intake tests

TOKEN = "bench-token"

BARE_APP = textwrap.dedent("""
    import sys
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def accept(request):
        await request.body()
        return JSONResponse({"accepted": True}, status_code=202)

    app = Starlette(routes=[Route("/alerts/alertmanager", accept, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
""")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"port {port} not open after {timeout}s")


def rss_kib(pid: int) -> tuple[int, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def cpu_seconds(pid: int, task: int | None = None) -> float:
    """User + system CPU time so far of a process, or of one of its threads (`task`: its native id)."""
    path = f"/proc/{pid}/task/{task}/stat" if task is not None else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def request_bytes(body: bytes) -> bytes:
    return (b"POST /alerts/alertmanager HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: " + str(len(body)).encode()
            + b"\r\n\r\n" + body)


class Connection:
    """A minimal keep-alive HTTP/1.1 client: one request at a time, Content-Length responses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def post(self, data: bytes) -> int:
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


async def closed_loop(port: int, payloads: list[bytes], total: int, connections: int, limit_s: float) -> dict:
    """`connections` clients sending back to back; stops after `total` requests or `limit_s` seconds."""
    conns = [await Connection.open(port) for _ in range(connections)]
    sent = 0
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + limit_s

    async def client(conn: Connection) -> None:
        nonlocal sent
        while sent < total and time.perf_counter() < deadline:
            data = payloads[sent % len(payloads)]
            sent += 1
            status = await conn.post(data)
            statuses[status] = statuses.get(status, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in conns))
    elapsed = time.perf_counter() - started
    for c in conns:
        c.close()
    done = sum(statuses.values())
    return {"requests": done, "seconds": elapsed, "per_s": done / elapsed, "statuses": statuses}


async def open_loop(port: int, payloads: list[bytes], rate: float, seconds: float, connections: int) -> dict:
    """Requests started at a fixed rate (not waiting for answers) on a pool of connections; latency each."""
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await Connection.open(port))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    total = int(rate * seconds)

    async def one(i: int, due: float) -> None:
        conn = await pool.get()
        try:
            status = await conn.post(payloads[i % len(payloads)])
        finally:
            pool.put_nowait(conn)
        latencies.append(time.perf_counter() - due)  # from when it was due: queueing counts
        statuses[status] = statuses.get(status, 0) + 1

    start = time.perf_counter()
    tasks = []
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=seconds + 60)
    elapsed = time.perf_counter() - start
    while not pool.empty():
        pool.get_nowait().close()
    latencies.sort()
    return {
        "requests": len(latencies), "achieved_per_s": len(latencies) / elapsed, "statuses": statuses,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "max_ms": 1000 * latencies[-1],
    }


def start_bare(port: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", BARE_APP, str(port)], cwd=REPO)


def start_intake(port: int, folder: Path) -> subprocess.Popen:
    env = {**os.environ,
           "IRP_WEBHOOK_TOKEN": TOKEN,
           "IRP_INTAKE_JOURNAL": str(folder / "journal.sqlite3"),
           "IRP_EVIDENCE_URL": f"file://{folder / 'evidence'}",
           "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api",  # nothing listens: runs wait in the outbox
           "PREFECT_LOGGING_LEVEL": "ERROR"}
    log = open(folder / "intake.log", "ab")  # noqa: SIM115 - closed when the process is stopped
    return subprocess.Popen([sys.executable, "-m", "irp.cli", "webhook", "--port", str(port)], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def cpu_pressure() -> str:
    """Share of time runnable tasks waited for a CPU over the last 60 s (Linux PSI), or '?'."""
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return "?"
    return some.split()[2].split("=")[1] + "%"


def fsync_latency(folder: Path, commits: int = 300) -> tuple[float, float]:
    """p50 and p99 (ms) of one-row SQLite commits in WAL mode with synchronous=FULL on this disk, now."""
    import sqlite3

    conn = sqlite3.connect(folder / "fsync.sqlite3", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (x BLOB)")
    times = []
    for _ in range(commits):
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t VALUES (?)", (b"x" * 1200,))
        conn.execute("COMMIT")
        times.append(1000 * (time.perf_counter() - started))
    conn.close()
    times.sort()
    return statistics.median(times), times[int(0.99 * len(times))]


def in_process_costs(bodies: list[bytes], folder: Path, requests: int, in_flight: int) -> tuple[float, float, float]:
    """CPU ms per request of the checks (parse, validate, normalise, route), of the journal alone, and of the
    outbox turning the repeats into timeline entries (in a local evidence store; no Prefect server)."""
    import logging
    import resource

    logging.getLogger("irp.intake").setLevel(logging.ERROR)  # the runs' "no server" retries are expected here
    from irp.evidence import open_store
    from irp.intake.journal import AlertDelivery, open_journal
    from irp.intake.outbox import Outbox
    from irp.intake.routing import Router
    from irp.intake.service import routing_path
    from irp.intake.sources import SOURCES, alerts_in
    from irp.settings import get_settings

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    source, router = SOURCES["alertmanager"], Router.from_file(routing_path(get_settings()))

    def delivery(body: bytes) -> AlertDelivery:
        alerts = alerts_in(source, body)
        return AlertDelivery(source=source.name, body=body, alerts=[(a, router.route(a), e) for a, e in alerts])

    started = cpu()
    deliveries = [delivery(bodies[i % len(bodies)]) for i in range(requests)]
    checks = (cpu() - started) / requests
    journal = open_journal(folder / "alone.sqlite3", 3600)

    async def accept_all() -> None:
        pending = iter(deliveries)

        async def sender() -> None:
            for item in pending:
                await journal.accept_async(item)

        await asyncio.gather(*(sender() for _ in range(in_flight)))

    def no_server(payload: dict) -> str:
        raise ConnectionError("no Prefect server in this measurement")

    store = open_store(f"file://{folder / 'evidence-alone'}")
    outbox = Outbox(journal, create_run=no_server, append_event=store.append_event, confirm=lambda url: None)
    try:
        started = cpu()
        asyncio.run(accept_all())
        alone = (cpu() - started) / requests
        started = cpu()
        for _ in range(requests):  # bounded: one pass takes up to 1,000 items
            if not journal.backlog()["event"] or not outbox.drain_once():
                break
        timeline = (cpu() - started) / requests
    finally:
        outbox.stop()
        journal.close()
    return 1000 * checks, 1000 * alone, 1000 * timeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=6000, help="closed-loop requests per round and server")
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections (senders)")
    parser.add_argument("--max-seconds", type=float, default=60, help="closed-loop time limit per round")
    parser.add_argument("--rate", type=float, default=500, help="open-loop alerts per second")
    parser.add_argument("--seconds", type=float, default=10, help="open-loop duration per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, alternating bare and intake")
    parser.add_argument("--distinct", type=int, default=20, help="distinct alerts cycled through")
    args = parser.parse_args()
    bodies = distinct_alerts(args.distinct)
    payloads = [request_bytes(b) for b in bodies]
    print(f"bench_intake: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, CPU pressure "
          f"{cpu_pressure()} (others waiting for a CPU), Python "
          f"{sys.version.split()[0]}, {args.distinct} distinct Alertmanager alerts of {len(payloads[0])} bytes, "
          f"{args.connections} connections, {args.rounds} rounds alternating bare and intake", flush=True)
    with tempfile.TemporaryDirectory(prefix="irp-bench-") as tmp:
        folder = Path(tmp)
        p50, p99 = fsync_latency(folder)
        print(f"   disk: SQLite WAL synchronous=FULL commit p50 {p50:.2f} ms, p99 {p99:.2f} ms", flush=True)
        bare_port, intake_port = free_port(), free_port()
        bare, intake = start_bare(bare_port), start_intake(intake_port, folder)
        try:
            wait_port(bare_port, bare)
            wait_port(intake_port, intake)
            for port in (bare_port, intake_port):
                asyncio.run(closed_loop(port, payloads, 300, 4, 30))  # warm-up
            runs: dict[str, dict[str, list]] = {"bare": {"tp": [], "lat": []}, "intake": {"tp": [], "lat": []}}
            pids = {"bare": bare.pid, "intake": intake.pid}
            for _ in range(args.rounds):
                for name, port in (("bare", bare_port), ("intake", intake_port)):
                    cpu, loop_cpu = cpu_seconds(pids[name]), cpu_seconds(pids[name], pids[name])
                    client_cpu = cpu_seconds(os.getpid())
                    tp = asyncio.run(closed_loop(port, payloads, args.requests, args.connections, args.max_seconds))
                    tp["cpu_ms"] = 1000 * (cpu_seconds(pids[name]) - cpu) / tp["requests"]
                    tp["loop_cpu_ms"] = 1000 * (cpu_seconds(pids[name], pids[name]) - loop_cpu) / tp["requests"]
                    tp["client_cpu_ms"] = 1000 * (cpu_seconds(os.getpid()) - client_cpu) / tp["requests"]
                    runs[name]["tp"].append(tp)
                    print(f"  {name:>6} closed loop: {tp['per_s']:6.0f} req/s ({tp['requests']} requests, "
                          f"statuses {tp['statuses']}), server CPU {tp['cpu_ms']:.2f} ms per request "
                          f"(event-loop thread {tp['loop_cpu_ms']:.2f}, other threads "
                          f"{tp['cpu_ms'] - tp['loop_cpu_ms']:.2f}); load generator {tp['client_cpu_ms']:.3f} ms", flush=True)
            for _ in range(args.rounds):
                for name, port in (("bare", bare_port), ("intake", intake_port)):
                    lat = asyncio.run(open_loop(port, payloads, args.rate, args.seconds, args.connections))
                    runs[name]["lat"].append(lat)
                    print(f"  {name:>6} at {args.rate:.0f}/s: p50 {lat['p50_ms']:6.1f} ms, "
                          f"p99 {lat['p99_ms']:6.1f} ms, max {lat['max_ms']:6.1f} ms "
                          f"(achieved {lat['achieved_per_s']:.0f}/s, "
                          f"statuses {lat['statuses']})", flush=True)
            rss, peak = rss_kib(intake.pid)
        finally:
            stop(bare)
            stop(intake)
        checks_ms, journal_ms, outbox_ms = in_process_costs(bodies, folder, args.requests, args.connections)

    def median(name: str, kind: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name][kind])

    bare_tp, intake_tp = median("bare", "tp", "per_s"), median("intake", "tp", "per_s")
    print("summary (medians over the rounds):")
    ratio = intake_tp / bare_tp
    print(f"  throughput: bare {bare_tp:.0f} req/s, intake {intake_tp:.0f} req/s, ratio {ratio:.2f} "
          f"(no regression: ≥ 0.25 {'✔' if ratio >= 0.25 else '✘'}; the former target 0.5 is beyond two cores, "
          "docs/intake.md; intake durable: WAL + synchronous=FULL)")
    bare_cpu, intake_cpu = median("bare", "tp", "cpu_ms"), median("intake", "tp", "cpu_ms")
    print(f"  server CPU per request: bare {bare_cpu:.2f} ms, intake {intake_cpu:.2f} ms (all its threads; "
          f"ratio {bare_cpu / intake_cpu:.2f}, less sensitive to other load than the throughputs)")
    loop_cpu = median("intake", "tp", "loop_cpu_ms")
    print(f"  intake CPU per request by thread: event loop (HTTP, checks, routing) {loop_cpu:.2f} ms, "
          f"others (journal writer, outbox) {intake_cpu - loop_cpu:.2f} ms")
    # What the ratio target asks of this machine: the load generator shares its CPUs with the server.
    target_tp, client_cpu = 0.5 * bare_tp, median("intake", "tp", "client_cpu_ms")
    print(f"  CPU budget of the target: {target_tp:.0f} req/s (0.5 x bare) need {target_tp * intake_cpu / 1000:.2f} "
          f"CPUs for the intake at its {intake_cpu:.2f} ms per request, plus {target_tp * client_cpu / 1000:.2f} for "
          f"the load generator ({client_cpu:.3f} ms per request), on {os.cpu_count()} CPUs; one process's event-loop "
          f"thread alone ({loop_cpu:.2f} ms per request, under one GIL with the others) caps it at "
          f"{1000 / loop_cpu:.0f} req/s, ratio {1000 / loop_cpu / bare_tp:.2f}")
    for name in ("bare", "intake"):
        print(f"  ack latency at {args.rate:.0f}/s, {name:>6}: p50 {median(name, 'lat', 'p50_ms'):.1f} ms, "
              f"p99 {median(name, 'lat', 'p99_ms'):.1f} ms" + (" (target p99 < 25 ms)" if name == "intake" else ""))
    rest = intake_cpu - bare_cpu - checks_ms - journal_ms - outbox_ms
    print(f"  where the intake's CPU per request goes: HTTP as the bare endpoint {bare_cpu:.2f} ms, checks (parse, "
          f"validate, normalise, route) {checks_ms:.3f} ms, journal accept alone (no HTTP) {journal_ms:.3f} ms, "
          f"outbox alone (repeats to timeline entries) {outbox_ms:.3f} ms, the rest (auth, metrics, response, "
          f"threads sharing the GIL) {rest:.2f} ms")
    print(f"  intake RSS: {rss / 1024:.0f} MiB now, {peak / 1024:.0f} MiB peak")
    print(f"  load average after: {os.getloadavg()[0]:.1f}, CPU pressure {cpu_pressure()}")


if __name__ == "__main__":
    main()
