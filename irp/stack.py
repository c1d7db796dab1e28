"""The one-command local stack: Prefect server and UI, work pool, deployments, worker, alert intake.

`irp stack` starts what is missing, prints where everything is, and stops it all on Ctrl-C.
With PREFECT_API_URL set it uses that server instead of starting one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from irp.errors import ConfigurationError, IrpError
from irp.settings import REPO_ROOT, get_settings

WORK_POOL = "irp"
# The pool's job template when irp's own workers run the flows: they run them in their own process and
# read no job variables, so the pool declares none. Prefect checks every new run's job variables against
# the pool's schema, and that schema against JSON Schema's meta-schema: with the process type's schema that
# was 6–11 % of the server's CPU in a burst of incidents (bench/bench_burst.py).
IN_PROCESS_JOB_TEMPLATE: dict = {}  # no job configuration, no variables
STACK_FILE = REPO_ROOT / "var" / "stack.json"  # where a running `irp stack` is, for the CLI in another shell

# The Prefect server's SQLite database has one write lock. A request that reads before it writes
# (creating a run, taking a concurrency slot) fails at once with "database is locked" when another
# connection holds that lock; the server answers 503 and the Prefect client retries 2, 4, 8… s
# later. Traced on the 2-core machine, per incident run (~20 task runs, ~80 events):
# - the task run recorder commits every task run state change on its own by default (batch 1),
#   ~60 commits per run, holding the lock ~45% of the time: batched here (~3%), task runs reach the
#   database (and the UI) within a second;
# - the event persister writes each event with ~12 related-resource rows, holding the lock
#   20–30% of the time, in transactions of up to 1.7 s; off here. The UI's event feed stays empty;
#   automations still fire (they read the live stream). Set
#   PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED=true to keep events, or use PostgreSQL.
SERVER_SETTINGS = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED": "false",
}


@dataclass
class Stack:
    """The processes the stack started, stopped in reverse order."""

    host: str = "127.0.0.1"
    port: int = 4200
    intake_port: int = 8765
    log_dir: Path = field(default_factory=lambda: REPO_ROOT / "var" / "log")
    processes: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        """The environment every child gets: one API URL, analytics off, auth passed through."""
        env = dict(os.environ)
        external = bool(env.get("PREFECT_API_URL"))
        env.setdefault("PREFECT_HOME", str(REPO_ROOT / "var" / "prefect"))
        env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        env.setdefault("PREFECT_API_URL", f"http://{self.host}:{self.port}/api")
        env.setdefault("PREFECT_UI_API_URL", env["PREFECT_API_URL"])
        if env.get("PREFECT_SERVER_API_AUTH_STRING"):
            env.setdefault("PREFECT_API_AUTH_STRING", env["PREFECT_SERVER_API_AUTH_STRING"])
        env["PREFECT_WORKER_QUERY_SECONDS"] = env.get("PREFECT_WORKER_QUERY_SECONDS", "1")
        env["PREFECT_WORKER_PREFETCH_SECONDS"] = env.get("PREFECT_WORKER_PREFETCH_SECONDS", "10")
        env.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
        csrf = env.get("PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED", env.get("PREFECT_SERVER_CSRF_PROTECTION_ENABLED", ""))
        if not external and csrf.lower() not in ("1", "true", "yes", "on"):
            env.setdefault("PREFECT_CLIENT_CSRF_SUPPORT_ENABLED", "false")  # our server asks none: no GET per client
        env.update({name: env.get(name, value) for name, value in SERVER_SETTINGS.items()})
        return env

    @property
    def api_url(self) -> str:
        return self.env()["PREFECT_API_URL"]

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        """Start a child process with its output in var/log/<name>.log."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")
        process = subprocess.Popen(args, cwd=REPO_ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, preexec_fn=_die_with_parent)
        self.processes.append((name, process))
        return process

    def run(self, name: str, args: list[str], timeout: float = 600) -> None:
        """Run a setup command to completion; its output goes to var/log/<name>.log."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log:
            result = subprocess.run(args, cwd=REPO_ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                    timeout=timeout, check=False)
        if result.returncode != 0:
            raise IrpError(f"{name} failed (exit {result.returncode}); see {self.log_dir / name}.log")

    def wait_http(self, name: str, url: str, timeout: float = 180) -> None:
        """Wait until `url` answers 2xx, or fail naming the log to read."""
        deadline = time.monotonic() + timeout
        headers = {}
        auth = self.env().get("PREFECT_API_AUTH_STRING")
        if auth and "/api/" in url:
            import base64

            headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
        while time.monotonic() < deadline:
            for label, process in self.processes:
                if label == name and process.poll() is not None:
                    raise IrpError(f"{name} exited (code {process.returncode}); see {self.log_dir / name}.log")
            try:
                if httpx.get(url, timeout=2, headers=headers).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise IrpError(f"{name} did not answer at {url} within {timeout:.0f} s; see {self.log_dir / name}.log")

    def stop(self) -> None:
        """Stop every child, newest first: SIGTERM, then SIGKILL after 15 s."""
        for _, process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for _, process in reversed(self.processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the stack dies, even by SIGKILL (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def bring_up(stack: Stack, with_intake: bool = True, process_worker: bool = False,
             workers: int = os.cpu_count() or 1) -> None:
    """Start the server (unless PREFECT_API_URL is set), deploy, start a worker and the intake."""
    external = bool(os.environ.get("PREFECT_API_URL"))
    if not external:
        stack.start("prefect-server", [sys.executable, "-m", "irp.prefect_server", "--host", stack.host,
                                       "--port", str(stack.port)])  # Prefect's server, writes in line on SQLite
    stack.wait_http("prefect-server", f"{stack.api_url}/health")
    template = []
    if not process_worker:
        path = stack.log_dir / "work-pool-template.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(IN_PROCESS_JOB_TEMPLATE))
        template = ["--base-job-template", str(path)]
    stack.run("work-pool", [_bin("prefect"), "work-pool", "create", WORK_POOL, "--type", "process", *template,
                            "--overwrite"], timeout=120)
    stack.run("deploy", [_bin("prefect"), "--no-prompt", "deploy", "--all"])
    if process_worker:
        stack.start("worker", [_bin("prefect"), "worker", "start", "--pool", WORK_POOL, "--type", "process"])
    else:
        for index in range(workers):  # one Python process runs flows on one core: one worker per core
            stack.start(f"worker-{index}" if index else "worker", [_bin("irp"), "worker", "--pool", WORK_POOL])
    if with_intake:
        settings = get_settings()
        local = not (getattr(settings, "webhook_token", None) or getattr(settings, "webhook_secret", None))
        stack.start("intake", [_bin("irp"), "webhook", "--host", stack.host, "--port", str(stack.intake_port),
                               *(["--local"] if local else [])])
        stack.wait_http("intake", f"http://{stack.host}:{stack.intake_port}/healthz", timeout=60)


def describe(stack: Stack, with_intake: bool = True) -> str:
    """What the user needs to know once the stack is up."""
    ui = stack.env()["PREFECT_UI_API_URL"].removesuffix("/api")
    lines = [
        "irp stack is up.",
        f"  Prefect UI:     {ui}  (deployments: <type>/respond, declare_incident/declare, triage/triage)",
        f"  Prefect API:    {stack.api_url}",
        f"  Evidence:       {get_settings().evidence_url}",
        f"  Logs:           {stack.log_dir}",
    ]
    workers = sum(1 for name, _ in stack.processes if name.startswith("worker"))
    if workers:
        lines.insert(4, f"  Workers:        {workers} × up to {get_settings().worker_max_runs} runs at once "
                        "(IRP_WORKER_MAX_RUNS; `irp stack --workers N`)")
    if with_intake:
        intake = f"http://{stack.host}:{stack.intake_port}"
        token = os.environ.get("IRP_WEBHOOK_TOKEN")
        auth = ' -H "Authorization: Bearer $IRP_WEBHOOK_TOKEN"' if token else ""
        lines += [
            f"  Alert intake:   {intake}  (OpenAPI: {intake}/docs)",
            "",
            "Send an alert:",
            f"  curl -sS -X POST {intake}/alerts/generic{auth} -H 'Content-Type: application/json' \\",
            """       -d '{"title": "Export of call recordings to an unknown host", "labels": {"incident_type": """
            """"data_leak", "tenant": "acme-callcenter", "data_categories": "call_recordings"}}'""",
        ]
    lines += ["", "Ctrl-C stops everything."]
    return "\n".join(lines)


def write_stack_file(stack: Stack, with_intake: bool, path: Path = STACK_FILE) -> None:
    """Leave where the stack runs (no secret) so `irp run`, `irp incidents show`… in another shell use it."""
    env = stack.env()
    info = {
        "pid": os.getpid(),
        "api_url": env["PREFECT_API_URL"],
        "ui_url": env["PREFECT_UI_API_URL"].removesuffix("/api"),
        "intake_url": f"http://{stack.host}:{stack.intake_port}" if with_intake else None,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=2) + "\n")


def running_stack(path: Path = STACK_FILE) -> dict[str, str] | None:
    """The stack file of an `irp stack` still running, else None (a stale or unreadable file is ignored)."""
    try:
        info = json.loads(path.read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info if isinstance(info.get("api_url"), str) else None


def adopt_running_stack(path: Path = STACK_FILE) -> str | None:
    """With no PREFECT_API_URL set, point this process at a running `irp stack`; returns a note saying so."""
    if os.environ.get("PREFECT_API_URL"):
        return None
    info = running_stack(path)
    if info is None:
        return None
    os.environ["PREFECT_API_URL"] = info["api_url"]
    if info.get("ui_url"):
        os.environ.setdefault("PREFECT_UI_URL", info["ui_url"])
    return (f"using the Prefect server of the running irp stack at {info['api_url']} ({path}); "
            "set PREFECT_API_URL to choose another")


def check_exposure(host: str, with_intake: bool, env: dict[str, str] | None = None) -> None:
    """Bound to anything but loopback, the UI and the intake are reachable by others: require their credentials."""
    from irp.intake.service import is_loopback

    env = os.environ if env is None else env
    if is_loopback(host):
        return
    missing = []
    if not env.get("PREFECT_SERVER_API_AUTH_STRING"):
        missing.append("PREFECT_SERVER_API_AUTH_STRING=user:password (the Prefect UI and API ask for it; without it "
                       "anyone who reaches the UI can approve, resume or cancel runs)")
    if with_intake and not (env.get("IRP_WEBHOOK_TOKEN") or "").strip():
        missing.append("IRP_WEBHOOK_TOKEN (the bearer token alert sources send; without it the intake would be open)")
    if missing:
        raise ConfigurationError(
            f"irp stack --host {host} is reachable from other machines; refusing to start without: "
            + "; ".join(missing) + ". Set them (e.g. export PREFECT_SERVER_API_AUTH_STRING=\"admin:$(openssl rand "
            "-hex 16)\"), or keep the default --host 127.0.0.1.")


def serve_forever(port: int, intake_port: int, with_intake: bool = True, process_worker: bool = False,
                  workers: int = os.cpu_count() or 1, host: str = "127.0.0.1") -> None:
    """Bring the stack up, print where it is, wait for Ctrl-C or SIGTERM, stop it."""
    check_exposure(host, with_intake)
    stack = Stack(host=host, port=port, intake_port=intake_port)
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)  # also when started with SIGINT ignored (a background job)
    try:
        bring_up(stack, with_intake, process_worker, workers)
        write_stack_file(stack, with_intake)
        print(describe(stack, with_intake), flush=True)
        while True:
            for name, process in stack.processes:
                if process.poll() is not None:
                    raise IrpError(f"{name} stopped (exit {process.returncode}); see {stack.log_dir / name}.log")
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
    except ConfigurationError:
        raise
    finally:
        stack.stop()
        if (running_stack() or {}).get("pid") == os.getpid():
            STACK_FILE.unlink(missing_ok=True)
    print("stopped.")
