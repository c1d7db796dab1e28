"""Waiting in end-to-end tests for something a server or a worker does in its own time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
from prefect.client.schemas.objects import FlowRun


def wait_for(what: str, check: Callable[[], Any], timeout: float = 180, every: float = 0.3) -> Any:
    """The first truthy value `check()` returns; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def runs_named(prefix: str) -> list[FlowRun]:
    """The server's flow runs whose name starts with `prefix` (an incident id): filtered on the server, since a
    session's server holds more runs than one unfiltered page (200) returns."""
    with get_client(sync_client=True) as client:
        found = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=prefix)))
    return [run for run in found if run.name.startswith(prefix)]
