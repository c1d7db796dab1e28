"""Helpers for the intake's end-to-end tests: the service as a real process, Prefect deployments,
a TCP relay that can cut the Prefect server off, an HTTPS server for SNS certificates, signing.
Everything listens on 127.0.0.1 and is stopped by the fixture that started it.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "tests" / "unit" / "intake" / "samples"
TOKEN = "test-token-7c1f"
SECRET_OLD = "whsec_" + base64.b64encode(b"old-secret-for-intake-tests-0001").decode()
SECRET_NEW = "whsec_" + base64.b64encode(b"new-secret-for-intake-tests-0002").decode()
PD_SECRET = "pd-secret-for-intake-tests"
TOPIC = "arn:aws:sns:eu-west-3:123456789012:incident-response"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sample(name: str) -> dict:
    return json.loads((SAMPLES / name).read_text())


@dataclass
class Intake:
    """An `irp webhook` process."""

    url: str
    port: int
    journal: str  # a SQLite path or a postgresql:// URL
    env: dict[str, str]
    log: Path
    args: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> Intake:
        with open(self.log, "ab") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "irp.cli", "webhook", "--port", str(self.port), *self.args],
                cwd=REPO, env=self.env, stdout=handle, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"intake exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"intake not ready after {timeout}s:\n{self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def health(self) -> dict:
        """/healthz as an operator sees it (with the token, when there is one: details need it)."""
        token = self.env.get("IRP_WEBHOOK_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(f"{self.url}/healthz", headers=headers, timeout=5).json()

    def wait_drained(self, timeout: float = 120) -> dict:
        """Wait until the outbox is empty; returns the last health document."""
        deadline = time.monotonic() + timeout
        health = {}
        while time.monotonic() < deadline:
            health = self.health()
            if not any(health["backlog"].values()):
                return health
            time.sleep(0.3)
        raise AssertionError(f"outbox not drained after {timeout}s: {health}")

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample of /metrics (0 when absent)."""
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        total = 0.0
        for line in text.splitlines():
            if line.startswith("#") or " " not in line:
                continue
            key, value = line.rsplit(" ", 1)
            metric, _, rest = key.partition("{")
            if metric != name:
                continue
            found = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
            if not labels or found == wanted:
                total += float(value)
        return total


def intake_env(tmp_path: Path, api_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IRP_WEBHOOK", "IRP_SNS", "IRP_PAGERDUTY"))}
    env.update({
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "IRP_INTAKE_JOURNAL": str(tmp_path / "journal.sqlite3"),
        "IRP_INTAKE_RETRY_MAX_SECONDS": "1",
        "IRP_WEBHOOK_TOKEN": TOKEN,
        "PYTHONPATH": str(REPO),
    })
    env.update(extra)
    return env


def make_intake(tmp_path: Path, api_url: str, args: list[str] | None = None, **extra: str) -> Intake:
    port = free_port()
    env = intake_env(tmp_path, api_url, **extra)
    return Intake(f"http://127.0.0.1:{port}", port, env["IRP_INTAKE_JOURNAL"], env,
                  tmp_path / f"intake-{port}.log", args or [])


# --- Prefect ---------------------------------------------------------------------------------------


def apply_deployments() -> None:
    """Deploy every incident flow as <type>/respond and triage as triage/triage (as prefect.yaml will); runs then
    wait Scheduled."""
    from flows.incidents import INCIDENT_FLOWS
    from flows.triage import triage

    for flow in INCIDENT_FLOWS.values():
        flow.to_deployment(name="respond").apply()
    triage.to_deployment(name="triage").apply()


def flow_runs_for(fingerprints: set[str]) -> list:
    """Flow runs on the server whose alert parameter has one of these fingerprints."""
    from prefect import get_client

    found, offset = [], 0
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_flow_runs(limit=200, offset=offset)
            found.extend(r for r in page if (r.parameters.get("alert") or {}).get("fingerprint") in fingerprints)
            if len(page) < 200:
                return found
            offset += 200


# --- a TCP relay that can take the Prefect server away -------------------------------------------


class Relay:
    """127.0.0.1:port → target; `down()` closes the listener and every connection (connection refused)."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = free_port()
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def up(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def down(self) -> None:
        server, self._server = self._server, None
        if server:
            try:
                server.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked in the relay's thread
            except OSError:
                pass
            server.close()
        with self._lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._conns.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


# --- SNS: a test CA, an HTTPS server for the signing certificate, signatures --------------------


@dataclass
class SnsPki:
    ca_file: Path
    server: ThreadingHTTPServer
    port: int
    signing_key: object
    cert_pem: bytes
    confirmations: list[str] = field(default_factory=list)

    @property
    def cert_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/SimpleNotificationService-test.pem"

    def subscribe_url(self, token: str) -> str:
        return f"https://127.0.0.1:{self.port}/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token={token}"

    def sign(self, message: dict, version: str = "2", key=None) -> dict:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        from irp.intake.payloads import SnsMessage
        from irp.intake.sns import string_to_sign

        message = {**message, "SignatureVersion": version, "SigningCertURL": self.cert_url, "Signature": "x"}
        digest = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = (key or self.signing_key).sign(
            string_to_sign(SnsMessage.model_validate(message)), padding.PKCS1v15(), digest)
        message["Signature"] = base64.b64encode(signature).decode()
        return message


def _cert(subject: str, key, issuer_name, issuer_key, ca: bool, san: bool = False):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        import ipaddress

        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@contextmanager
def sns_pki_server(folder: Path) -> Iterator[SnsPki]:
    """A CA, an HTTPS server on 127.0.0.1 serving the SNS signing certificate and recording confirmations."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = _cert("irp test CA", ca_key, None, ca_key, ca=True)
    tls_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tls = _cert("127.0.0.1", tls_key, ca.subject, ca_key, ca=False, san=True)
    signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signing = _cert("sns.eu-west-3.amazonaws.com", signing_key, ca.subject, ca_key, ca=False)
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "tls.pem").write_bytes(tls.public_bytes(pem))
    (folder / "tls.key").write_bytes(tls_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    cert_pem = signing.public_bytes(pem)
    confirmations: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.endswith(".pem"):
                body, status = cert_pem, 200
            elif "ConfirmSubscription" in self.path:
                confirmations.append(self.path)
                body, status = b"<ConfirmSubscriptionResponse/>", 200
            else:
                body, status = b"not found", 404
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "tls.pem", folder / "tls.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield SnsPki(folder / "ca.pem", server, server.server_address[1], signing_key, cert_pem, confirmations)
    finally:
        server.shutdown()
        server.server_close()


# --- signing helpers ------------------------------------------------------------------------------


def standard_webhook_headers(body: bytes, secrets: list[str], msg_id: str, at: dt.datetime | None = None) -> dict:
    """Standard Webhooks headers signed with every secret (a sender during rotation sends several)."""
    from standardwebhooks import Webhook

    at = at or dt.datetime.now(dt.UTC)
    signatures = " ".join(Webhook(s).sign(msg_id, at, body.decode()) for s in secrets)
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(at.timestamp())), "webhook-signature": signatures,
            "content-type": "application/json"}


def pagerduty_headers(body: bytes, secrets: list[str]) -> dict:
    import hashlib
    import hmac

    signatures = ",".join("v1=" + hmac.new(s.encode(), body, hashlib.sha256).hexdigest() for s in secrets)
    return {"X-PagerDuty-Signature": signatures, "content-type": "application/json"}


def bearer(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}", "content-type": "application/json"}


# --- storms and what must come of them -------------------------------------------------------


def distinct_alerts(n: int) -> list[bytes]:
    """n Alertmanager notifications, each one distinct alert (own fingerprint and tenant)."""
    base = sample("alertmanager.json")
    bodies = []
    for _ in range(n):
        doc = copy.deepcopy(base)
        alert = doc["alerts"][0]
        alert["fingerprint"] = uuid.uuid4().hex[:16]
        alert["labels"]["tenant"] = f"tenant-{alert['fingerprint']}"
        bodies.append(json.dumps(doc).encode())
    return bodies


def fingerprint(body: bytes) -> str:
    return json.loads(body)["alerts"][0]["fingerprint"]


def storm(url: str, bodies: list[bytes], concurrency: int = 16, acked: list | None = None) -> list:
    """POST every body (in order, `concurrency` at a time); returns (index, status or None, json or None)."""
    results: list = [None] * len(bodies)

    async def main() -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(bodies)):
            queue.put_nowait(i)
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=url, headers=bearer(), limits=limits, timeout=30) as client:
            async def worker() -> None:
                while not queue.empty():
                    i = queue.get_nowait()
                    try:
                        response = await client.post("/alerts/alertmanager", content=bodies[i])
                        results[i] = (i, response.status_code, response.json())
                    except (httpx.HTTPError, ValueError):
                        results[i] = (i, None, None)
                    if acked is not None and results[i][1] == 202:
                        acked.append(i)

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    asyncio.run(main())
    return results


def timeline(evidence: Path, incident_id: str) -> list[dict]:
    """The incident's external timeline entries, each entry once (the store merges identical re-appends)."""
    path = evidence / incident_id / "events.jsonl"
    if not path.exists():
        return []
    unique = {}
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        unique.setdefault((entry["at"], entry["kind"], entry["message"]), entry)
    return list(unique.values())


def check_every_ack(evidence: Path, answers: list[tuple[int, dict]], fingerprints: set[str]) -> None:
    """Each acknowledged alert has its run (new incident) or exactly one timeline entry listing it (joined)."""
    runs = flow_runs_for(fingerprints)
    run_incidents = Counter(r.parameters["incident_id"] for r in runs)
    assert len(runs) == len(fingerprints), f"{len(runs)} runs for {len(fingerprints)} distinct alerts"
    assert set(Counter(r.parameters["alert"]["fingerprint"] for r in runs).values()) == {1}
    joined: dict[str, set[str]] = {}
    for _, answer in answers:
        outcome = answer["alerts"][0]
        if outcome["outcome"] == "new_incident":
            assert run_incidents[outcome["incident_id"]] == 1
        else:
            assert outcome["outcome"] == "joined"
            joined.setdefault(outcome["incident_id"], set()).add(answer["delivery_id"])
    for incident_id, deliveries in joined.items():
        assert run_incidents[incident_id] == 1
        listed = [d for entry in timeline(evidence, incident_id) for d in entry["data"]["deliveries"]]
        assert len(listed) == len(set(listed)), "a delivery recorded twice on the timeline"
        assert deliveries <= set(listed), f"{len(deliveries - set(listed))} acknowledged repeats missing"
