"""http.request as an attacker who only sends alerts would use it: secrets, addresses, redirects, evidence.

Every request goes to a real listener on 127.0.0.1, or nowhere: for other addresses the socket's
connect is replaced by a recorder that refuses, so no test ever reaches a non-loopback address.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from listener_fixtures import Listener
from service_fixtures import make_ctx

from irp import templating
from irp.actions.http import HttpRequestArgs, request
from irp.errors import NotConfiguredError, PermanentError, TransientError
from irp.models import Alert
from irp.settings import get_settings

TOKEN = "sp-token-7f1c0e5a9b2d4c36"
SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEXAMPLESESSIONTOKEN"

# The publish_status step of service_unavailability.yaml before issue 14: URL from the alert, with the token.
OLD_PUBLISH_STATUS = {
    "url": "{{ alert.labels.get('status_page_url') }}",
    "method": "POST",
    "auth_block": "irp-status-page-token",
    "auth_scheme": "OAuth",
    "body_json": {"incident": {"name": "Indisponibilité", "status": "investigating"}},
}


def configure(monkeypatch: pytest.MonkeyPatch, **settings: object) -> None:
    """IRP_ settings for this test (JSON for structures), one attempt, fast retries."""
    monkeypatch.setenv("IRP_ACTION_ATTEMPTS", "1")
    for name, value in settings.items():
        monkeypatch.setenv(f"IRP_{name.upper()}", value if isinstance(value, str) else json.dumps(value))
    get_settings.cache_clear()


@pytest.fixture
def status_page_token(monkeypatch: pytest.MonkeyPatch) -> str:
    """The Prefect Secret block irp-status-page-token holds TOKEN (Prefect's block store replaced)."""
    from prefect.blocks.system import Secret

    monkeypatch.setattr(Secret, "load", classmethod(lambda cls, name, **kw: Secret(value=TOKEN)))
    return TOKEN


@pytest.fixture
def listener():
    with Listener() as server:
        yield server


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Every TCP connection attempted to a non-loopback address is recorded and refused, never made."""
    attempts: list[tuple] = []
    real = socket.create_connection

    def create_connection(address, *args, **kwargs):
        if address[0] in ("127.0.0.1",):
            return real(address, *args, **kwargs)
        attempts.append(tuple(address))
        raise ConnectionRefusedError(f"test: no connection to {address[0]}")

    monkeypatch.setattr(socket, "create_connection", create_connection)
    return attempts


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Names resolved by the test: {name: [addresses, ...]}; each lookup takes the next list (the last repeats)."""
    answers: dict[str, list[list[str]]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            return real(host, port, *args, **kwargs)
        addresses = answers[host].pop(0) if len(answers[host]) > 1 else answers[host][0]
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port or 80, 0, 0) if ":" in a else (a, port or 80)) for a in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


def evidence_texts(root: Path) -> dict[str, str]:
    """Every file the evidence store holds, by path."""
    return {str(p.relative_to(root)): p.read_text(errors="replace") for p in root.rglob("*") if p.is_file()}


def alert_step(args: dict, labels: dict[str, str]) -> HttpRequestArgs:
    """A step's arguments rendered for an alert with `labels`, as the engine renders them."""
    context = {"alert": Alert(title="outage", labels=labels).model_dump(mode="json")}
    return HttpRequestArgs.model_validate(templating.render_value(args, context))


class TestSecretsGoOnlyToTheirHosts:
    def test_the_status_page_token_is_not_sent_to_a_host_the_alert_names(
            self, listener, status_page_token, evidence_root, monkeypatch):
        configure(monkeypatch, http_allowed_hosts="127.0.0.1")  # even a host the administrator allows
        args = alert_step(OLD_PUBLISH_STATUS, {"status_page_url": f"{listener.url}/v1/pages/x/incidents"})
        with pytest.raises(PermanentError, match=r"'irp-status-page-token' is bound to no host in IRP_HTTP_SECRET_HOSTS"):
            request(args, make_ctx(evidence_root))
        assert listener.requests == []
        assert not any(TOKEN in text for text in evidence_texts(evidence_root).values())

    def test_a_token_bound_to_another_host_is_refused_naming_the_setting(
            self, listener, status_page_token, evidence_root, monkeypatch):
        configure(monkeypatch, http_secret_hosts={"irp-status-page-token": ["api.statuspage.io"]})
        args = alert_step(OLD_PUBLISH_STATUS, {"status_page_url": f"{listener.url}/v1/pages/x/incidents"})
        with pytest.raises(PermanentError, match=r"may be sent only to api\.statuspage\.io \(IRP_HTTP_SECRET_HOSTS\), "
                                                 r"not to 127\.0\.0\.1: refused, nothing sent"):
            request(args, make_ctx(evidence_root))
        assert listener.requests == []

    def test_a_dry_run_refuses_it_too(self, listener, status_page_token, evidence_root, monkeypatch):
        configure(monkeypatch, http_allowed_hosts="127.0.0.1")
        args = alert_step(OLD_PUBLISH_STATUS, {"status_page_url": f"{listener.url}/incidents"})
        with pytest.raises(PermanentError, match="IRP_HTTP_SECRET_HOSTS"):
            request(args, make_ctx(evidence_root, dry_run=True))

    def test_the_bound_host_gets_it_and_the_evidence_does_not(self, listener, status_page_token, evidence_root,
                                                              monkeypatch):
        configure(monkeypatch, http_secret_hosts={"irp-status-page-token": ["127.0.0.1"]})
        outcome = request(HttpRequestArgs(url=f"{listener.url}/incidents", method="POST", body_json={"a": 1},
                                          auth_block="irp-status-page-token", auth_scheme="OAuth"),
                          make_ctx(evidence_root))
        assert outcome.details["status"] == 200
        assert [r["headers"]["authorization"] for r in listener.requests] == [f"OAuth {TOKEN}"]
        assert not any(TOKEN in text for text in evidence_texts(evidence_root).values())


class TestAddresses:
    @pytest.mark.parametrize("url", [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/admin",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://100.100.100.200/latest/meta-data/ram/security-credentials/",
        "http://10.0.0.5:8500/v1/kv/",
        "http://192.168.1.1/",
        "http://[::1]:9/",
        "http://0.0.0.0:9/",
        "http://[::ffff:127.0.0.1]:9/",
        "http://[fe80::1]/",
        "http://224.0.0.1/",
    ])
    def test_internal_and_metadata_addresses_are_refused_before_connecting(self, url, connects, evidence_root,
                                                                            monkeypatch):
        configure(monkeypatch)
        with pytest.raises(PermanentError, match="refused before connecting"):
            request(HttpRequestArgs(url=url), make_ctx(evidence_root))
        assert connects == []

    def test_a_loopback_listener_named_by_an_alert_receives_nothing(self, listener, evidence_root, monkeypatch):
        configure(monkeypatch)
        args = alert_step({"url": "{{ alert.labels.provider_status_url }}"},
                          {"provider_status_url": f"{listener.url}/admin/export"})
        with pytest.raises(PermanentError, match=r"127\.0\.0\.1 resolves to 127\.0\.0\.1, a loopback address: refused "
                                                 r"before connecting; .* IRP_HTTP_ALLOWED_HOSTS"):
            request(args, make_ctx(evidence_root))
        assert listener.requests == []

    def test_metadata_is_refused_even_when_named_in_configuration(self, connects, evidence_root, monkeypatch):
        configure(monkeypatch, http_allowed_hosts="169.254.169.254")
        with pytest.raises(PermanentError, match="cloud metadata address, never called"):
            request(HttpRequestArgs(url="http://169.254.169.254/latest/"), make_ctx(evidence_root))
        assert connects == []

    @pytest.mark.parametrize("addresses", [["10.20.30.40"], ["93.184.216.34", "127.0.0.1"], ["fd12:3456::1"]])
    def test_a_name_resolving_to_an_internal_address_is_refused(self, addresses, dns, connects, evidence_root,
                                                                monkeypatch):
        configure(monkeypatch)
        dns["status.attacker.example"] = [addresses]
        with pytest.raises(PermanentError, match="status.attacker.example resolves to .*refused before connecting"):
            request(HttpRequestArgs(url="http://status.attacker.example/v2/status.json"), make_ctx(evidence_root))
        assert connects == []

    def test_the_connection_goes_to_the_address_checked_not_a_second_lookup(self, dns, connects, evidence_root,
                                                                           monkeypatch):
        configure(monkeypatch)
        dns["rebind.attacker.example"] = [["93.184.216.34"], ["127.0.0.1"]]  # public when checked, then loopback
        with pytest.raises(TransientError, match="connection failed"):
            request(HttpRequestArgs(url="http://rebind.attacker.example/x"), make_ctx(evidence_root))
        assert connects == [("93.184.216.34", 80)]

    def test_a_named_internal_host_is_reached(self, listener, dns, evidence_root, monkeypatch):
        configure(monkeypatch, http_allowed_hosts="status.internal")
        dns["status.internal"] = [["127.0.0.1"]]
        outcome = request(HttpRequestArgs(url=f"http://status.internal:{listener.port}/health"),
                          make_ctx(evidence_root))
        assert outcome.details["status"] == 200
        assert listener.requests[0]["headers"]["host"] == f"status.internal:{listener.port}"

    def test_a_redirect_is_not_followed(self, evidence_root, monkeypatch):
        configure(monkeypatch, http_allowed_hosts="127.0.0.1")
        with Listener() as inner:
            with Listener(302, b"", {"Location": f"{inner.url}/admin/export"}) as redirecting:
                with pytest.raises(PermanentError, match="HTTP 302"):
                    request(HttpRequestArgs(url=f"{redirecting.url}/status"), make_ctx(evidence_root))
                assert len(redirecting.requests) == 1
            assert inner.requests == []


class TestEvidence:
    def test_an_answer_full_of_credentials_is_archived_redacted(self, evidence_root, monkeypatch):
        # What an instance metadata service answers (as text/plain), had an administrator allowed the host.
        answer = {"Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": "ASIAEXAMPLEKEYID",
                  "SecretAccessKey": SECRET_ACCESS_KEY, "Token": SESSION_TOKEN,
                  "Nested": {"Credentials": {"SessionToken": SESSION_TOKEN, "private_key": "-----BEGIN KEY-----"},
                             "apikey": "k-123456", "passwordResetRequired": True}}
        configure(monkeypatch, http_allowed_hosts="127.0.0.1")
        with Listener(body=json.dumps(answer).encode(), headers={"Content-Type": "text/plain",
                                                                 "Set-Cookie": "session=c00k1e-value"}) as server:
            ctx = make_ctx(evidence_root)
            outcome = request(HttpRequestArgs(url=f"{server.url}/latest/meta-data/iam/security-credentials/role",
                                              headers={"X-Api-Key": "hdr-key-99887766"}), ctx)
        texts = evidence_texts(evidence_root)
        texts["step output"] = outcome.model_dump_json()  # what the engine archives as the step record
        for secret in (SECRET_ACCESS_KEY, SESSION_TOKEN, "-----BEGIN KEY-----", "k-123456", "c00k1e-value",
                       "hdr-key-99887766"):
            assert not [name for name, text in texts.items() if secret in text], secret
        body = outcome.details["body"]
        assert body["AccessKeyId"] == "ASIAEXAMPLEKEYID" and body["Nested"]["passwordResetRequired"] is True
        assert body["SecretAccessKey"] == "***redacted***"

    def test_credentials_in_the_query_string_are_redacted(self, listener, evidence_root, monkeypatch):
        configure(monkeypatch, http_allowed_hosts="127.0.0.1")
        outcome = request(HttpRequestArgs(url=f"{listener.url}/feed?api_key=qk-55443322&region=eu-west-3",
                                          params={"X-Amz-Signature": "sig-0a1b2c3d4e"}), make_ctx(evidence_root))
        texts = evidence_texts(evidence_root) | {"outcome": outcome.model_dump_json()}
        assert not [name for name, text in texts.items() if "qk-55443322" in text or "sig-0a1b2c3d4e" in text]
        assert "region=eu-west-3" in outcome.target


class TestQueryString:
    def test_the_url_query_is_kept_without_params(self, listener, evidence_root, monkeypatch):
        configure(monkeypatch, http_allowed_hosts="127.0.0.1")
        request(HttpRequestArgs(url=f"{listener.url}/v2/status.json?region=eu-west-3&page=2"), make_ctx(evidence_root))
        assert listener.requests[0]["path"] == "/v2/status.json?region=eu-west-3&page=2"

    def test_params_are_added_to_the_url_query(self, listener, evidence_root, monkeypatch):
        configure(monkeypatch, http_allowed_hosts="127.0.0.1")
        request(HttpRequestArgs(url=f"{listener.url}/v2/status.json?region=eu-west-3", params={"page": "2"}),
                make_ctx(evidence_root))
        assert listener.requests[0]["path"] == "/v2/status.json?region=eu-west-3&page=2"


class TestEndpoints:
    def test_a_configured_endpoint_is_called_by_name(self, listener, evidence_root, monkeypatch):
        configure(monkeypatch, http_endpoints={"status_page": f"{listener.url}/v1/pages/P/incidents"})
        outcome = request(HttpRequestArgs(endpoint="status_page", method="POST", body_json={"incident": {}}),
                          make_ctx(evidence_root))
        assert outcome.details["status"] == 200 and listener.requests[0]["path"] == "/v1/pages/P/incidents"

    def test_an_endpoint_chosen_by_the_alert_among_configured_ones(self, listener, evidence_root, monkeypatch):
        configure(monkeypatch, http_endpoints={"provider_status.AWS RDS": f"{listener.url}/aws"})
        args = {"endpoint": "provider_status.{{ alert.labels.get('provider', '') }}"}
        request(alert_step(args, {"provider": "AWS RDS"}), make_ctx(evidence_root))
        assert [r["path"] for r in listener.requests] == ["/aws"]
        with pytest.raises(NotConfiguredError, match=r"no endpoint 'provider_status.http://evil' in IRP_HTTP_ENDPOINTS "
                                                     r"\(configured: provider_status.AWS RDS\)"):
            request(alert_step(args, {"provider": "http://evil"}), make_ctx(evidence_root))
        assert len(listener.requests) == 1

    def test_an_unconfigured_endpoint_is_not_configured(self, evidence_root, monkeypatch):
        configure(monkeypatch)
        with pytest.raises(NotConfiguredError, match=r"no endpoint 'status_page' in IRP_HTTP_ENDPOINTS \(configured: none\)"):
            request(HttpRequestArgs(endpoint="status_page"), make_ctx(evidence_root))

    @pytest.mark.parametrize("given", [{}, {"url": "https://a.example/", "endpoint": "status_page"}])
    def test_url_or_endpoint(self, given):
        with pytest.raises(ValueError, match="give exactly one of url or endpoint"):
            HttpRequestArgs(**given)

    def test_an_endpoint_that_is_not_a_url_is_a_configuration_error(self, monkeypatch):
        monkeypatch.setenv("IRP_HTTP_ENDPOINTS", json.dumps({"status_page": "file:///etc/passwd"}))
        get_settings.cache_clear()
        with pytest.raises(ValueError, match="endpoint 'status_page': 'file:///etc/passwd' is not an http\\(s\\) URL"):
            get_settings()
