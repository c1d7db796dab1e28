"""The pinned client: TLS to a checked address still sends and verifies the host's name."""

from __future__ import annotations

import datetime
import socket
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from listener_fixtures import Listener

from irp.outbound import pinned_client
from irp.settings import get_settings


def _certificate(subject: str, issuer: x509.Name, issuer_key, key, *, ca: bool = False, name: str | None = None):
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if name:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture
def tls(tmp_path: Path):
    """(server context for a name, client context trusting the test CA), from a throwaway CA."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "irp test CA")])
    ca = _certificate("irp test CA", ca_name, ca_key, ca_key, ca=True)
    client = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())

    def server(name: str) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(name, ca_name, ca_key, key, name=name)
        (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
        return context

    return server, client


@pytest.fixture
def status_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """status.test resolves to 127.0.0.1 and is named in IRP_HTTP_ALLOWED_HOSTS."""
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, *a, **k: real(
        "127.0.0.1" if host == "status.test" else host, port, *a, **k))
    monkeypatch.setenv("IRP_HTTP_ALLOWED_HOSTS", "status.test")
    get_settings.cache_clear()


def test_tls_to_the_pinned_address_verifies_the_name(tls, status_test):
    server, client = tls
    with Listener(tls=server("status.test")) as listener, pinned_client(5, verify=client) as http:
        response = http.get(f"https://status.test:{listener.port}/v1/status")
    assert response.status_code == 200
    assert listener.sni == ["status.test"]
    assert listener.requests[0]["headers"]["host"] == f"status.test:{listener.port}"


def test_a_certificate_for_another_name_is_refused(tls, status_test):
    server, client = tls
    with Listener(tls=server("other.test")) as listener, pinned_client(5, verify=client) as http:
        with pytest.raises(httpx.ConnectError, match="certificate verify failed"):
            http.get(f"https://status.test:{listener.port}/v1/status")
    assert listener.requests == []
