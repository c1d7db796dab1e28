"""The intake's HTTP layer under attack: a real `irp webhook` process, raw sockets on 127.0.0.1.

Huge and trickled headers, stalled bodies, credentials checked before the body, a 413 the sender
reads, cross-site POSTs to `--local`, and what /healthz tells a stranger. No Prefect server is
needed: the alerts sent are unrouted (no run to create). Every loop is bounded in count and time.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from intake_harness import SECRET_NEW, TOKEN, Intake, bearer, make_intake

pytestmark = pytest.mark.timeout(180)

NO_PREFECT = "http://127.0.0.1:9/api"  # never reached: unrouted alerts create no run
UNROUTED = json.dumps({"title": "intake hardening probe", "labels": {}}).encode()


@pytest.fixture
def intake(tmp_path: Path) -> Iterator[Intake]:
    """An intake with a bearer token and a Standard Webhooks secret (whose check needs the body)."""
    service = make_intake(tmp_path, NO_PREFECT, IRP_WEBHOOK_SECRET=SECRET_NEW).start()
    yield service
    service.stop()


@pytest.fixture
def local_intake(tmp_path: Path) -> Iterator[Intake]:
    """`irp webhook --local` without any credential: what `irp stack` runs without a token."""
    service = make_intake(tmp_path, NO_PREFECT, args=["--local"])
    service.env.pop("IRP_WEBHOOK_TOKEN")
    service.start()
    yield service
    service.stop()


def _connect(intake: Intake, timeout: float = 5) -> socket.socket:
    return socket.create_connection(("127.0.0.1", intake.port), timeout=timeout)


def _head(intake: Intake, path: str, headers: dict[str, str], method: str = "POST") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{intake.port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_answer(sock: socket.socket, timeout: float) -> bytes:
    """What the server sends until it has sent a whole small answer, closes, or `timeout` passes."""
    sock.settimeout(0.2)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            break
        if not chunk:
            break
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), None)
        if sep and length is not None and len(body) >= length:
            break
    return data


def _closed_by_server(sock: socket.socket) -> bool:
    """True when the server has closed (EOF or reset); reads and drops any answer it sent first."""
    sock.setblocking(False)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def _valid_alert_latency(intake: Intake) -> float:
    """Seconds to get the 202 of an authenticated alert (on a new connection)."""
    started = time.monotonic()
    response = httpx.post(f"{intake.url}/alerts/generic", content=UNROUTED, headers=bearer(), timeout=30)
    assert response.status_code == 202, response.text
    return time.monotonic() - started


def _rss_mb(intake: Intake) -> float:
    for line in Path(f"/proc/{intake.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class TestHeaders:
    def test_huge_header_refused_431_while_valid_alerts_are_answered(self, intake: Intake) -> None:
        """Four attackers, for 4 s, each pushing up to 32 MB of one unterminated header per connection,
        then again on a new one; valid alerts meanwhile."""
        answers: list[bytes] = []
        sent: list[int] = []
        stop = time.monotonic() + 4

        def attack() -> None:
            chunk = b"a" * 65536
            while time.monotonic() < stop:
                sock = _connect(intake)
                total = 0
                try:
                    sock.sendall(b"POST /alerts/generic HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: ")
                    while total < 32 * 1024 * 1024 and time.monotonic() < stop + 6:
                        sock.sendall(chunk)
                        total += len(chunk)
                except OSError:  # the server gave up on us: what it answered is read below
                    pass
                sent.append(total)
                answers.append(_read_answer(sock, 3))
                sock.close()

        threads = [threading.Thread(target=attack) for _ in range(4)]
        for thread in threads:
            thread.start()
        latencies = []
        while time.monotonic() < stop:
            time.sleep(0.4)
            latencies.append(_valid_alert_latency(intake))
        for thread in threads:
            thread.join(20)
        assert max(latencies) < 1.0, latencies
        assert max(sent) < 32 * 1024 * 1024, f"the server read a 32 MB header: {sent}"
        assert len(answers) > 4  # each attacker was done with within the 4 s, and tried again
        for answer in answers:
            assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert any(answer.startswith(b"HTTP/1.1 431 ") for answer in answers), answers

    def test_header_at_the_limit_is_served_and_over_it_431(self, intake: Intake) -> None:
        padding = "p" * (15 * 1024)
        ok = httpx.post(f"{intake.url}/alerts/generic", content=UNROUTED, timeout=10,
                        headers={**bearer(), "X-Padding": padding})
        assert ok.status_code == 202
        over = httpx.post(f"{intake.url}/alerts/generic", content=UNROUTED, timeout=10,
                          headers={**bearer(), "X-Padding": padding + "p" * 2048})
        assert over.status_code == 431
        assert "16384" in over.text

    def test_slowloris_dropped(self, intake: Intake) -> None:
        """Twenty connections trickle a header a byte every 0.5 s; one sends nothing: all dropped in seconds."""
        trickling = [_connect(intake) for _ in range(20)]
        silent = _connect(intake)
        for sock in trickling:
            sock.sendall(b"POST /alerts/generic HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        started = time.monotonic()
        open_ = set(range(len(trickling)))
        while open_ and time.monotonic() - started < 20:
            time.sleep(0.5)
            for index in list(open_):
                try:
                    trickling[index].sendall(b"x")
                except OSError:
                    open_.discard(index)
                    continue
                if _closed_by_server(trickling[index]):
                    open_.discard(index)
        dropped_after = time.monotonic() - started
        assert not open_, f"{len(open_)} slow connections still open after {dropped_after:.1f} s"
        assert dropped_after < 10
        assert _closed_by_server(silent)
        assert _valid_alert_latency(intake) < 1.0
        for sock in [*trickling, silent]:
            sock.close()


def test_connections_over_the_cap_answered_503_at_once(tmp_path: Path) -> None:
    intake = make_intake(tmp_path, NO_PREFECT, IRP_WEBHOOK_MAX_CONNECTIONS="20").start()
    try:
        idle = [_connect(intake) for _ in range(20)]
        time.sleep(0.2)
        started = time.monotonic()
        extra = _connect(intake)
        answer = _read_answer(extra, 3)
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]
        assert time.monotonic() - started < 1.0
        assert b"retry-after: 1" in answer.lower()
        for sock in [*idle, extra]:
            sock.close()
        time.sleep(0.2)
        assert _valid_alert_latency(intake) < 1.0
    finally:
        intake.stop()


class TestBodies:
    def test_stalled_bodies_dropped_memory_given_back(self, intake: Intake) -> None:
        """300 connections announce 1 MB, send most of it and stall: half signed (the check needs the
        body), half with a wrong token. All dropped within seconds; the process gives memory back."""
        size = 1024 * 1024
        rss_before = _rss_mb(intake)
        socks: list[socket.socket] = []
        for index in range(300):
            sock = _connect(intake)
            if index % 2:
                auth = {"webhook-id": f"msg_{index}", "webhook-timestamp": str(int(time.time())),
                        "webhook-signature": "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}
            else:
                auth = {"Authorization": "Bearer wrong"}
            sock.sendall(_head(intake, "/alerts/generic", {"Content-Type": "application/json",
                                                           "Content-Length": str(size), **auth}))
            sock.setblocking(False)
            socks.append(sock)
        pending = {index: size - 1024 for index in range(len(socks))}  # all but the last KiB
        chunk = b" " * 65536
        deadline = time.monotonic() + 15
        while pending and time.monotonic() < deadline:
            for index, left in list(pending.items()):
                try:
                    n = socks[index].send(chunk[:left])
                except BlockingIOError:
                    continue
                except OSError:
                    pending.pop(index)
                    continue
                if left - n <= 0:
                    pending.pop(index)
                else:
                    pending[index] = left - n
            time.sleep(0.005)
        stalled_at = time.monotonic()
        rss_peak = _rss_mb(intake)
        latency = _valid_alert_latency(intake)
        open_ = set(range(len(socks)))
        while open_ and time.monotonic() - stalled_at < 30:
            open_ = {index for index in open_ if not _closed_by_server(socks[index])}
            time.sleep(0.25)
        dropped_after = time.monotonic() - stalled_at
        for sock in socks:
            sock.close()
        time.sleep(1.5)
        rss_after = _rss_mb(intake)
        print(f"RSS {rss_before:.0f} MB before, {rss_peak:.0f} MB stalled, {rss_after:.0f} MB after; "
              f"dropped after {dropped_after:.1f} s; valid alert {latency * 1000:.0f} ms")
        assert latency < 1.0
        assert not open_, f"{len(open_)} stalled connections still open after {dropped_after:.1f} s"
        assert dropped_after < 15
        assert rss_after - rss_before < 30, (rss_before, rss_peak, rss_after)  # given back (glibc keeps +35 MB)
        assert _valid_alert_latency(intake) < 1.0
        rejected = {reason: intake.metric("irp_intake_requests_rejected_total", reason=reason, source="generic")
                    for reason in ("unauthenticated", "busy")}
        assert rejected["unauthenticated"] >= 150 and rejected["busy"] >= 1, rejected  # unverified bodies bounded

    def test_wrong_token_answered_401_before_the_body(self, intake: Intake) -> None:
        sock = _connect(intake)
        sock.sendall(_head(intake, "/alerts/generic", {"Authorization": "Bearer wrong", "Content-Length": "100000",
                                                       "Content-Type": "application/json"}))
        answer = _read_answer(sock, 3)  # the body is never sent
        sock.close()
        assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
        assert answer.endswith(b'{"detail":"unauthenticated","errors":[]}')

    def test_right_token_reads_the_body_after_the_check(self, intake: Intake) -> None:
        sock = _connect(intake)
        sock.sendall(_head(intake, "/alerts/generic", {"Authorization": f"Bearer {TOKEN}",
                                                       "Content-Length": str(len(UNROUTED)),
                                                       "Content-Type": "application/json"}))
        time.sleep(0.5)
        sock.sendall(UNROUTED)
        answer = _read_answer(sock, 5)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 202 "), answer[:200]

    @pytest.mark.parametrize("framing", ["content-length", "chunked"])
    def test_413_reaches_a_sender_still_sending(self, intake: Intake, framing: str) -> None:
        """2 MB sent in 64 KiB pieces, 5 ms apart, by a sender that reads the answer only at the end."""
        body = b'{"title": "' + b"x" * (2 * 1024 * 1024) + b'"}'
        framing_header = {"Content-Length": str(len(body))} if framing == "content-length" \
            else {"Transfer-Encoding": "chunked"}
        sock = _connect(intake, timeout=10)
        sock.sendall(_head(intake, "/alerts/generic", {**bearer(), **framing_header}))
        for start in range(0, len(body), 65536):
            piece = body[start:start + 65536]
            sock.sendall(piece if framing == "content-length" else b"%x\r\n%s\r\n" % (len(piece), piece))
            time.sleep(0.005)
        if framing == "chunked":
            sock.sendall(b"0\r\n\r\n")
        answer = _read_answer(sock, 5)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
        assert b"request body larger than 1048576 bytes" in answer


class TestLocal:
    """`--local` takes alerts without credentials: only from a loopback page or tool, never cross-site."""

    @staticmethod
    def _deliveries(intake: Intake) -> int:
        with sqlite3.connect(intake.journal) as conn:
            return conn.execute("SELECT count(*) FROM deliveries").fetchone()[0]

    @staticmethod
    def _post(intake: Intake, headers: dict[str, str], body: bytes) -> bytes:
        sock = _connect(intake)
        lines = ["POST /alerts/generic HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()),
                 f"Content-Length: {len(body)}"]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        answer = _read_answer(sock, 5)
        sock.close()
        return answer

    def test_cross_site_posts_refused_and_nothing_recorded(self, local_intake: Intake) -> None:
        body = json.dumps({"title": "Bulk export of call recordings", "labels": {"incident_type": "data_leak"}}).encode()
        port = local_intake.port
        attacks = {
            "form post from another site": ({"Host": f"127.0.0.1:{port}", "Content-Type": "text/plain",
                                             "Origin": "https://evil.example"}, 403),
            "DNS rebinding": ({"Host": f"evil.example:{port}", "Content-Type": "text/plain",
                               "Origin": f"http://evil.example:{port}"}, 403),
            "rebinding with JSON": ({"Host": f"evil.example:{port}", "Content-Type": "application/json"}, 403),
            "foreign origin with JSON": ({"Host": f"localhost:{port}", "Content-Type": "application/json",
                                          "Origin": "https://evil.example"}, 403),
            "null origin": ({"Host": f"127.0.0.1:{port}", "Content-Type": "application/json", "Origin": "null"}, 403),
            "another port": ({"Host": f"127.0.0.1:{port + 1}", "Content-Type": "application/json"}, 403),
            "text/plain from loopback": ({"Host": f"127.0.0.1:{port}", "Content-Type": "text/plain"}, 415),
            "no content type": ({"Host": f"127.0.0.1:{port}"}, 415),
        }
        for name, (headers, status) in attacks.items():
            answer = self._post(local_intake, headers, body)
            assert answer.startswith(f"HTTP/1.1 {status} ".encode()), (name, answer[:300])
            detail = json.loads(answer.partition(b"\r\n\r\n")[2])["detail"]
            assert "--local" in detail, (name, detail)
        assert self._deliveries(local_intake) == 0
        listed = httpx.get(f"{local_intake.url}/alerts/unrouted", headers={"Host": f"evil.example:{port}"})
        assert listed.status_code == 403

    def test_loopback_json_still_accepted(self, local_intake: Intake) -> None:
        port = local_intake.port
        for host, origin in ((f"127.0.0.1:{port}", None), (f"localhost:{port}", f"http://localhost:{port}"),
                             (f"[::1]:{port}", "http://127.0.0.1:4200")):
            headers = {"Host": host, "Content-Type": "application/json; charset=utf-8"}
            if origin:
                headers["Origin"] = origin
            answer = self._post(local_intake, headers, UNROUTED)
            assert answer.startswith(b"HTTP/1.1 202 "), (host, answer[:300])
        assert self._deliveries(local_intake) == 3


class TestHealth:
    def test_a_stranger_learns_only_ok_or_degraded(self, intake: Intake) -> None:
        stranger = httpx.get(f"{intake.url}/healthz", timeout=5)
        assert stranger.status_code == 200
        assert stranger.json() == {"status": "ok"}
        wrong = httpx.get(f"{intake.url}/healthz", headers={"Authorization": "Bearer wrong"}, timeout=5)
        assert wrong.json() == {"status": "ok"}
        operator = httpx.get(f"{intake.url}/healthz", headers=bearer(), timeout=5).json()
        assert operator["journal"] == intake.journal and operator["routing"]["file"].endswith("routing.yaml")
        assert "backlog" in operator and "last_error" in operator

    def test_local_without_token_tells_only_ok_or_degraded_too(self, local_intake: Intake) -> None:
        answer = httpx.get(f"{local_intake.url}/healthz", timeout=5)
        assert answer.json() == {"status": "ok"}
