"""A real RFC 3161 time-stamping authority on 127.0.0.1: Debian's `openssl ts -reply` behind a small HTTP handler.

Import the fixture into a test module: `from tsa_fixtures import tsa`. It makes a CA and a TSA certificate
(extendedKeyUsage critical timeStamping) with `cryptography`, answers POSTed timestamp queries with
`openssl ts -reply`, and sets IRP_TSA_URL / IRP_TSA_CERTIFICATES.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_CONFIG = """\
[ tsa ]
default_tsa = tsa_config1
[ tsa_config1 ]
dir = {dir}
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.pem
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = 1.2.3.4.1
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = no
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


@dataclass
class LocalTsa:
    url: str
    certificates: Path  # the CA's certificate (PEM): what a verifier trusts
    requests: list[bytes]


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, issuer_key: ec.EllipticCurvePrivateKey,
                 *, ca: bool) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(path: Path, *items: object) -> None:
    data = b""
    for item in items:
        if isinstance(item, x509.Certificate):
            data += item.public_bytes(serialization.Encoding.PEM)
        else:
            data += item.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,  # type: ignore[attr-defined]
                                       serialization.NoEncryption())
    path.write_bytes(data)


@pytest.fixture
def tsa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalTsa]:
    """A local TSA answering with `openssl ts -reply`; IRP_TSA_URL and IRP_TSA_CERTIFICATES point at it."""
    from irp.settings import get_settings

    folder = tmp_path / "tsa"
    folder.mkdir()
    ca_key, tsa_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("irp test TSA root", ca_key, "irp test TSA root", ca_key, ca=True)
    signer = _certificate("irp test TSA", tsa_key, "irp test TSA root", ca_key, ca=False)
    _pem(folder / "ca.pem", ca)
    _pem(folder / "tsa.pem", signer)
    _pem(folder / "tsa.key", tsa_key)
    (folder / "serial").write_text("01\n")
    (folder / "tsa.cnf").write_text(_CONFIG.format(dir=folder))
    requests: list[bytes] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            query = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                requests.append(query)
                (folder / "query.tsq").write_bytes(query)
                done = subprocess.run(["openssl", "ts", "-reply", "-config", str(folder / "tsa.cnf"),
                                       "-queryfile", str(folder / "query.tsq"), "-out", str(folder / "reply.tsr")],
                                      capture_output=True, timeout=20)
                reply = (folder / "reply.tsr").read_bytes() if done.returncode == 0 else b""
            self.send_response(200 if reply else 400)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/tsa"
    monkeypatch.setenv("IRP_TSA_URL", url)
    monkeypatch.setenv("IRP_TSA_CERTIFICATES", str(folder / "ca.pem"))
    get_settings.cache_clear()
    try:
        yield LocalTsa(url=url, certificates=folder / "ca.pem", requests=requests)
    finally:
        server.shutdown()
        server.server_close()
        get_settings.cache_clear()
