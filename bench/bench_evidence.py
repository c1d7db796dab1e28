"""Benchmark: archiving a large file through the S3 evidence store vs plain boto3 `upload_file`.

Both upload the same file to the same S3 endpoint in the same run: moto's standalone server, started
here as its own process on loopback (or any endpoint given with --endpoint). Each upload runs in a
fresh subprocess, so its peak RSS (VmHWM) is its own. Prints both throughputs, their ratio (target
>= 0.8) and both peak RSS (target: archive < 150 MB, for every size).

    .venv/bin/python bench/bench_evidence.py                    # 256 MiB and 1 GiB, 4 runs each
    .venv/bin/python bench/bench_evidence.py --sizes 64 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024

_PEAK = ("import resource\n"
         "usage = resource.getrusage(resource.RUSAGE_SELF)\n"
         "peak = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:')).split()[1]\n"
         "print(json.dumps({'seconds': seconds, 'peak_mb': int(peak) / 1024, 'sha256': sha,\n"
         "                  'cpu': usage.ru_utime + usage.ru_stime - cpu0}))\n")

ARCHIVE = """
import json, resource, sys, time
from irp.evidence import open_store
store = open_store(sys.argv[1])
with open(sys.argv[2], 'rb') as handle:
    cpu0 = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    started = time.perf_counter()
    item = store.put('INC-20261129-BENCH0', sys.argv[3], handle, content_type='application/octet-stream')
    seconds = time.perf_counter() - started
sha = item.sha256
""" + _PEAK

UPLOAD_FILE = """
import json, resource, sys, time
import boto3
client = boto3.client('s3')
cpu0 = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
started = time.perf_counter()
client.upload_file(sys.argv[2], sys.argv[1], sys.argv[3])
seconds = time.perf_counter() - started
sha = ''
""" + _PEAK


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_moto(port: int, log: Path) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/data.json", timeout=1).close()
            return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit(f"moto_server did not start on port {port}; see {log}")


def _make_file(path: Path, size_mib: int) -> None:
    block = os.urandom(MIB)
    with open(path, "wb") as out:
        for n in range(size_mib):
            out.write(block[n % 4096:] + block[:n % 4096])  # distinct blocks, cheap to produce


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process so far (0 when it is not ours to read)."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run(script: str, env: dict[str, str], *args: str) -> dict:
    result = subprocess.run([sys.executable, "-c", script, *args], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=3600)
    if result.returncode:
        raise SystemExit(f"benchmark subprocess failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _summary(size: int, runs: list[dict]) -> dict:
    speeds = sorted(size / r["seconds"] for r in runs)
    return {"median": statistics.median(speeds), "best": speeds[-1], "peak": max(r["peak_mb"] for r in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024], help="File sizes in MiB.")
    parser.add_argument("--repeat", type=int, default=4, help="Runs of each upload, alternating which goes first.")
    parser.add_argument("--endpoint", help="Use this S3 endpoint instead of starting moto_server.")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="irp-bench-evidence-"))
    server = None
    if args.endpoint:
        endpoint = args.endpoint
    else:
        port = _free_port()
        server = _start_moto(port, workdir / "moto.log")
        endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint,
           "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "bench"),
           "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "bench"),
           "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
           "IRP_EVIDENCE_SPOOL_DIR": str(workdir / "spool")}
    try:
        import boto3

        os.environ.update({k: env[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                "AWS_DEFAULT_REGION")})
        bucket = f"bench-{uuid.uuid4().hex[:10]}"
        boto3.client("s3").create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        print(f"endpoint {endpoint}, bucket {bucket} (versioning + Object Lock), evidence store defaults: "
              "GOVERNANCE retention, SSE AES256, 8 MiB parts x 4 in flight, SHA-256 per part and per object")
        server_pid = server.pid if server is not None else None
        rows = []
        for size in args.sizes:
            path = workdir / f"file-{size}.bin"
            _make_file(path, size)
            runs: dict[str, list[dict]] = {"upload_file": [], "evidence": []}
            for n in range(args.repeat):
                order = ["upload_file", "evidence"] if n % 2 == 0 else ["evidence", "upload_file"]  # ABBA
                for kind in order:
                    before = _cpu_seconds(server_pid)
                    if kind == "upload_file":
                        result = _run(UPLOAD_FILE, env, bucket, str(path), f"plain/{size}-{n}.bin")
                    else:
                        result = _run(ARCHIVE, env, f"s3://{bucket}/irp", str(path), f"bench/{size}-{n}.bin")
                    result["server_cpu"] = _cpu_seconds(server_pid) - before
                    runs[kind].append(result)
                    print(f"  {size:>5} MiB run {n + 1} {kind:<11} {size / result['seconds']:7.1f} MiB/s  "
                          f"peak RSS {result['peak_mb']:6.1f} MB  CPU client {result['cpu']:5.1f} s, "
                          f"server {result['server_cpu']:5.1f} s", flush=True)
            rows.append((size, *(_summary(size, runs[kind]) for kind in ("upload_file", "evidence"))))
            path.unlink()
        print()
        print(f"{'size':>9} | {'upload_file (median, best)':>27} {'peak RSS':>9} | "
              f"{'evidence store (median, best)':>30} {'peak RSS':>9} | ratio (median, best)")
        for size, up, ev in rows:
            print(f"{size:>5} MiB | {up['median']:>7.1f} MiB/s, {up['best']:>7.1f} MiB/s {up['peak']:>6.1f} MB | "
                  f"{ev['median']:>10.1f} MiB/s, {ev['best']:>7.1f} MiB/s {ev['peak']:>6.1f} MB | "
                  f"{ev['median'] / up['median']:.2f}, {ev['best'] / up['best']:.2f}")
        largest = max(size for size, _, _ in rows)
        ok_ratio = all(ev["median"] / up["median"] >= 0.8 for size, up, ev in rows if size == largest)
        ok_rss = all(ev["peak"] < 150 for _, _, ev in rows)
        print(f"targets: ratio of medians >= 0.8 for the {largest} MiB file: {'met' if ok_ratio else 'NOT met'}; "
              f"archive peak RSS < 150 MB at every size: {'met' if ok_rss else 'NOT met'}")
        print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
              "(a shared machine makes single runs noisy: compare medians)")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
