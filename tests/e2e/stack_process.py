"""`irp stack` as a user starts it, in a subprocess, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def irp_stack(root: Path, env: dict[str, str], *args: str) -> Iterator[subprocess.Popen]:
    """`irp stack ARGS…` with `env`, its output in ROOT/stack.log, until it prints that it is up; stopped
    (Ctrl-C, as a user does) on exit."""
    log = open(root / "stack.log", "wb")
    process = subprocess.Popen([str(Path(sys.executable).parent / "irp"), "stack", *args], cwd=REPO, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while b"irp stack is up." not in (root / "stack.log").read_bytes():
            assert process.poll() is None, (root / "stack.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "stack did not come up:\n" + (root / "stack.log").read_text()[-3000:]
            time.sleep(1)
        yield process
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()
