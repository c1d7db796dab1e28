"""Where outbound HTTP requests may go: hosts, addresses, and which secret goes to which host.

Deny by default, decided by configuration, never by alert data:

- A request carrying a Prefect Secret goes only to the hosts IRP_HTTP_SECRET_HOSTS binds to that
  block; a block bound to nothing is sent nowhere.
- Hosts *named in configuration* are those of IRP_HTTP_ALLOWED_HOSTS, IRP_HTTP_ENDPOINTS and
  IRP_HTTP_SECRET_HOSTS. With IRP_HTTP_ALLOWED_HOSTS set, only they are called; empty, any host is.
- Every address a host resolves to is checked before connecting, and the connection goes to a
  checked address, never to the name looked up again (no DNS-rebinding window); TLS still sends
  and verifies the host's name (SNI). Loopback, private, link-local, shared, reserved, multicast
  and unspecified addresses are refused unless the host is named in configuration; cloud metadata
  addresses (169.254.0.0/16, fd00:ec2::/32, 100.100.100.200, 192.0.0.192) always are.
- Redirects are never followed; environment proxies are not used (they would resolve the name).
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Callable
from typing import Any

import httpx

from irp.errors import NotConfiguredError, PermanentError
from irp.settings import Settings, get_settings

__all__ = ["checked_addresses", "check_destination", "endpoint_url", "named_hosts", "pinned_client"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "169.254.0.0/16", "fe80::/10", "fd00:ec2::/32", "100.100.100.200/32", "192.0.0.192/32"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def host_name(host: str | None) -> str:
    """A host as configuration and URLs are compared: lower case, no brackets, no final dot."""
    return (host or "").strip().strip("[]").rstrip(".").lower()


def named_hosts(settings: Settings) -> set[str]:
    """Hosts an administrator named: IRP_HTTP_ALLOWED_HOSTS, IRP_HTTP_ENDPOINTS, IRP_HTTP_SECRET_HOSTS."""
    hosts = {host_name(h) for h in settings.http_allowed_hosts}
    hosts |= {host_name(httpx.URL(url).host) for url in settings.http_endpoints.values()}
    hosts |= {host_name(h) for bound in settings.http_secret_hosts.values() for h in bound}
    return hosts - {""}


def endpoint_url(name: str) -> str:
    """The URL configured for endpoint `name`; NotConfiguredError (an optional step is skipped) when none."""
    endpoints = get_settings().http_endpoints
    if name not in endpoints:
        raise NotConfiguredError(f"http.request: no endpoint {name[:200]!r} in IRP_HTTP_ENDPOINTS "
                                 f"(configured: {', '.join(sorted(endpoints)) or 'none'})")
    return endpoints[name]


def check_destination(url: str, secret_block: str | None) -> str:
    """The host of `url`; PermanentError unless configuration lets it be called, with `secret_block`."""
    settings = get_settings()
    host = host_name(httpx.URL(url).host)
    if settings.http_allowed_hosts and host not in named_hosts(settings):
        raise PermanentError(
            f"http.request: host {host} is not in IRP_HTTP_ALLOWED_HOSTS ({', '.join(settings.http_allowed_hosts)}) "
            "nor a host of IRP_HTTP_ENDPOINTS or IRP_HTTP_SECRET_HOSTS: refused, nothing sent",
            provider=host, code="HostNotAllowed")
    if secret_block is not None:
        bound = sorted(host_name(h) for h in settings.http_secret_hosts.get(secret_block, []))
        if not bound:
            example = json.dumps({secret_block: ["api.example.com"]})
            raise PermanentError(
                f"http.request: Prefect Secret block {secret_block!r} is bound to no host in IRP_HTTP_SECRET_HOSTS, "
                f"so it is sent nowhere: name the hosts it is meant for, e.g. IRP_HTTP_SECRET_HOSTS='{example}'",
                provider=host, code="SecretNotBound")
        if host not in bound:
            raise PermanentError(
                f"http.request: Prefect Secret block {secret_block!r} may be sent only to {', '.join(bound)} "
                f"(IRP_HTTP_SECRET_HOSTS), not to {host}: refused, nothing sent",
                provider=host, code="SecretNotBound")
    return host


def _refusal(address: IPAddress, named: bool) -> str | None:
    """Why `address` may not be called (None: it may)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif address in _NAT64:
            address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if any(address in network for network in METADATA_NETWORKS):
        return "a link-local or cloud metadata address, never called"
    if named:
        return None
    for kind in ("loopback", "private", "multicast", "reserved", "unspecified"):
        if getattr(address, f"is_{kind}"):
            return f"a {kind} address"
    return None if address.is_global else "not a public address"


def checked_addresses(host: str, port: int, named: bool) -> list[str]:
    """Every address `host` resolves to, each checked; PermanentError when one is refused."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise httpx.ConnectError(f"cannot resolve {host}: {exc}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        why = _refusal(ipaddress.ip_address(address), named)
        if why:
            hint = "" if "never" in why else (
                "; http.request calls internal addresses only for hosts an administrator names in "
                "IRP_HTTP_ALLOWED_HOSTS (or IRP_HTTP_ENDPOINTS, IRP_HTTP_SECRET_HOSTS)")
            raise PermanentError(f"http.request: {host} resolves to {address}, {why}: refused before "
                                 f"connecting{hint}", provider=host, code="AddressNotAllowed")
    return addresses


class _PinnedTransport(httpx.HTTPTransport):
    """Connects each request to its host's checked addresses, in order; the name is never looked up again."""

    def __init__(self, named: Callable[[str], bool], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._named = named

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        host = host_name(url.host)
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = checked_addresses(host, port, self._named(host))
        if url.scheme == "https":
            request.extensions = {**request.extensions, "sni_hostname": host}  # TLS verifies the name
        failure: httpx.ConnectError | None = None
        for address in addresses:
            request.url = url.copy_with(host=address)  # the Host header keeps the name
            try:
                return super().handle_request(request)
            except httpx.ConnectError as exc:
                failure = exc
            finally:
                request.url = url
        raise failure or httpx.ConnectError(f"{host} resolves to no address")


def pinned_client(timeout: float, **transport: Any) -> httpx.Client:
    """An httpx client that checks and pins every address it connects to, and follows no redirect."""
    named = named_hosts(get_settings())
    return httpx.Client(transport=_PinnedTransport(lambda host: host in named, **transport),
                        timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False)
