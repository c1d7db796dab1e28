"""The Prefect server's gate on SQLite: write requests in line, reads beside them, Retry-After on every 503."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from irp.prefect_server import WriteGate, is_write, priority


class SlowApp:
    """An ASGI app that records how many requests it handles at once; /busy answers 503."""

    def __init__(self) -> None:
        self.inside = self.most = 0

    async def __call__(self, scope, receive, send) -> None:
        self.inside += 1
        self.most = max(self.most, self.inside)
        await asyncio.sleep(0.05)
        self.inside -= 1
        status = 503 if scope["path"].endswith("/busy") else 200
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})


async def _concurrently(gate: WriteGate, method: str, path: str, n: int = 5) -> list[httpx.Response]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gate), base_url="http://server") as client:
        return await asyncio.gather(*(client.request(method, path) for _ in range(n)))


@pytest.mark.parametrize(("method", "path", "write"), [
    ("POST", "/api/deployments/1b4e/create_flow_run", True),
    ("POST", "/api/flow_runs/1b4e/set_state", True),
    ("POST", "/api/v2/concurrency_limits/increment-with-lease", True),
    ("DELETE", "/api/flow_runs/1b4e", True),
    ("PATCH", "/api/flow_runs/1b4e", True),
    ("POST", "/api/flow_runs/filter", False),
    ("POST", "/api/task_runs/count", False),
    ("POST", "/api/deployments/paginate", False),
    ("POST", "/api/flow_runs/history", False),
    ("POST", "/api/ui/flow_runs/history", False),
    ("GET", "/api/flow_runs/1b4e", False),
])
def test_what_is_a_write(method: str, path: str, write: bool) -> None:
    assert is_write(method, path) is write


def test_on_sqlite_writes_enter_one_at_a_time_and_reads_do_not_wait() -> None:
    app = SlowApp()
    gate = WriteGate(app, serialize=True)
    answers = asyncio.run(_concurrently(gate, "POST", "/api/flow_runs/1b4e/set_state"))
    assert [a.status_code for a in answers] == [200] * 5 and app.most == 1
    app.most = 0
    asyncio.run(_concurrently(gate, "POST", "/api/flow_runs/filter"))
    assert app.most == 5


def test_on_postgresql_nothing_waits() -> None:
    app = SlowApp()
    asyncio.run(_concurrently(WriteGate(app, serialize=False), "POST", "/api/flow_runs/1b4e/set_state"))
    assert app.most == 5


def test_a_503_tells_the_client_to_retry_within_milliseconds() -> None:
    gate = WriteGate(SlowApp(), serialize=True)
    [answer] = asyncio.run(_concurrently(gate, "POST", "/api/busy", n=1))
    assert answer.status_code == 503 and float(answer.headers["retry-after"]) < 0.5 and gate.refused == 1
    [fine] = asyncio.run(_concurrently(gate, "GET", "/api/health", n=1))
    assert "retry-after" not in fine.headers


@pytest.mark.parametrize(("path", "body", "rank"), [
    ("/api/deployments/1b4e/create_flow_run", b"{}", 0),
    ("/api/flow_runs/1b4e/set_state", b'{"state": {"type": "PENDING"}, "force": false}', 1),
    ("/api/flow_runs/1b4e/set_state", b'{"state":{"type":"RUNNING","name":"Running"}}', 1),
    ("/api/flow_runs/1b4e/set_state", b'{"state": {"type": "PAUSED", "name": "Suspended"}}', 2),
    ("/api/flow_runs/1b4e/set_state", b'{"state": {"type": "COMPLETED"}}', 2),
    ("/api/flow_runs/1b4e/set_state", b"not json", 2),
    ("/api/flow_runs/1b4e/set_state", b'{"state": null}', 2),  # a malformed body is the app's to refuse (422)
    ("/api/flow_runs/1b4e/set_state", b'{"state": {"type": ["RUNNING"]}}', 2),
    ("/api/flow_runs/1b4e", b'{"flow_version": "1", "empirical_policy": {}}', 1),
    ("/api/flow_runs/1b4e", b'{"name": "INC-1 data_leak", "tags": ["incident:INC-1"]}', 2),
    ("/api/flow_runs/1b4e", b"[]", 1),
    ("/api/v2/concurrency_limits/increment-with-lease", b"{}", 1),
    ("/api/logs/", b"[]", 3),
    ("/api/flow_runs/1b4e/input", b"{}", 3),
])
def test_the_place_of_a_write_in_the_line(path: str, body: bytes, rank: int) -> None:
    assert priority(path, body) == rank


def test_a_new_run_is_created_before_the_writes_already_waiting() -> None:
    order: list[str] = []

    class Recording(SlowApp):
        async def __call__(self, scope, receive, send) -> None:
            order.append(scope["path"])
            await super().__call__(scope, receive, send)

    gate = WriteGate(Recording(), serialize=True)

    async def burst() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gate), base_url="http://server") as client:
            first = asyncio.create_task(client.post("/api/flow_runs/1b4e/input"))  # holds the line
            await asyncio.sleep(0.01)
            waiting = [asyncio.create_task(client.post(path)) for path in (
                "/api/logs/", "/api/flow_runs/1b4e/set_state", "/api/deployments/1b4e/create_flow_run")]
            await asyncio.gather(first, *waiting)

    asyncio.run(burst())
    assert order == ["/api/flow_runs/1b4e/input", "/api/deployments/1b4e/create_flow_run",
                     "/api/flow_runs/1b4e/set_state", "/api/logs/"]


def test_a_starting_run_goes_before_the_others_suspending_and_every_body_reaches_the_app_whole() -> None:
    seen: list[tuple[str, bytes]] = []

    class Echo(SlowApp):
        async def __call__(self, scope, receive, send) -> None:
            body, more = b"", True
            while more:
                message = await receive()
                body += message.get("body", b"")
                more = message.get("more_body", False)
            seen.append((scope["path"], body))
            await super().__call__(scope, receive, send)

    gate = WriteGate(Echo(), serialize=True)
    suspend = b'{"state": {"type": "PAUSED", "name": "Suspended"}}'
    start = b'{"state": {"type": "RUNNING"}, "padding": "' + b"x" * 200_000 + b'"}'

    async def burst() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gate), base_url="http://server") as client:
            first = asyncio.create_task(client.post("/api/logs/", content=b"[]"))  # holds the line
            await asyncio.sleep(0.01)
            later = [asyncio.create_task(client.post(f"/api/flow_runs/{run}/set_state", content=body))
                     for run, body in (("a", suspend), ("b", start))]
            await asyncio.gather(first, *later)

    asyncio.run(burst())
    assert seen == [("/api/logs/", b"[]"), ("/api/flow_runs/b/set_state", start), ("/api/flow_runs/a/set_state", suspend)]


def test_the_log_says_how_busy_the_line_was_and_what_it_served(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    gate = WriteGate(SlowApp(), serialize=True, clock=lambda: now[0])

    async def write(path: str, body: bytes, seconds: float) -> None:
        async def receive() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                now[0] += seconds  # the app held the line this long

        await gate({"type": "http", "method": "POST", "path": path, "headers": []}, receive, send)

    with caplog.at_level("INFO", logger="irp.prefect_server"):
        asyncio.run(write("/api/deployments/1b4e/create_flow_run", b"{}", 0.05))
        asyncio.run(write("/api/flow_runs/1b4e/set_state", b'{"state": {"type": "RUNNING"}}', 0.04))
        assert "write line" not in caplog.text  # no report before REPORT_SECONDS
        now[0] += 10
        asyncio.run(write("/api/logs/", b"[]", 0.01))
    [report] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("write line")]
    assert report == ("write line: busy 0.1 s of the last 10.1 s; since the start, by rank (writes, seconds): "
                      "0: 1 0.05; 1: 1 0.04; 2: 0 0.00; 3: 1 0.01")


def test_the_last_report_is_logged_when_the_server_stops(caplog: pytest.LogCaptureFixture) -> None:
    class Lifespan:
        async def __call__(self, scope, receive, send) -> None:
            await send({"type": "lifespan.shutdown.complete"})

    sent = []

    async def send(message: dict) -> None:
        sent.append(message["type"])

    gate = WriteGate(Lifespan(), serialize=True)
    gate.occupancy.add(1, 0.5)
    with caplog.at_level("INFO", logger="irp.prefect_server"):
        asyncio.run(gate({"type": "lifespan"}, None, send))
    assert sent == ["lifespan.shutdown.complete"]
    assert "by rank (writes, seconds): 0: 0 0.00; 1: 1 0.50" in caplog.text
