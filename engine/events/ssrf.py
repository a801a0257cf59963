"""Where a webhook may connect: the address rules that keep tenants out of the internal network.

A webhook URL names a host a tenant controls, so its DNS answers are the tenant's too. The
host-name allow-list (``[events] webhook_allow``) is therefore only the first gate: every
address the name resolves to (and every IP literal, in any spelling ``inet_aton`` accepts:
``2130706433``, ``0x7f.1``, ``017700000001``, or IPv6 forms embedding an IPv4 address such as
``::ffff:127.0.0.1``) must be a global unicast address, unless it lies in an operator CIDR of
``[events] webhook_allow_cidrs``; the port must be in ``[events] webhook_ports`` (80 and 443 by
default). One forbidden address refuses the whole name: the HTTP client would try them in turn.

:class:`VettingResolver` is the HTTP client's only resolver: the addresses it vets are the ones
the connection uses, so a second lookup cannot swap in an internal address after the check (DNS
rebinding); the URL keeps its name, so TLS SNI, certificate checks and ``Host`` are unchanged.
DNS comes from the engine's seam (:mod:`engine.resolver`), handed in as a callable.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import msgspec
from aiohttp.abc import AbstractResolver, ResolveResult

from engine.errors import WebhookError

Resolve = Callable[[str, str], Awaitable[list[str]]]
"""``resolve(name, rdtype)`` as :data:`engine.resolver.Resolve` (A and AAAA used here)."""

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL = 2048
DEFAULT_PORTS = (80, 443)

# Named ranges first (their name is the refusal's reason); anything else that is not global
# unicast is refused as "reserved" after them.
_FORBIDDEN: tuple[tuple[IpNetwork, str], ...] = tuple(
    (ipaddress.ip_network(net), why)
    for net, why in (
        ("169.254.169.254/32", "a cloud metadata address"),
        ("fd00:ec2::254/128", "a cloud metadata address"),
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private (RFC 1918)"),
        ("100.64.0.0/10", "carrier-grade NAT (RFC 6598)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private (RFC 1918)"),
        ("192.168.0.0/16", "private (RFC 1918)"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "an IPv4-compatible IPv6 address"),
        ("fc00::/7", "unique local (IPv6 ULA)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    )
)


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    """The operator's rules: host patterns, CIDRs exempt from the address rules, ports."""

    hosts: tuple[str, ...] = ("*",)
    cidrs: tuple[str, ...] = ()
    ports: tuple[int, ...] = DEFAULT_PORTS

    def networks(self) -> list[IpNetwork]:
        return [ipaddress.ip_network(c, strict=False) for c in self.cidrs]


def policy_of(events: Any) -> Policy:
    """The :class:`Policy` of an ``[events]`` config section."""
    return Policy(
        hosts=tuple(events.webhook_allow),
        cidrs=tuple(events.webhook_allow_cidrs),
        ports=tuple(events.webhook_ports),
    )


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def forbidden(ip: IpAddress) -> str | None:
    """Why the engine must not connect to ``ip`` (None: a global unicast address)."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None:
            why = forbidden(inner)
            return f"{why}, inside an IPv6 address" if why else None
    for net, why in _FORBIDDEN:
        if ip.version == net.version and ip in net:
            return why
    if not ip.is_global:
        return "reserved (not a global unicast address)"
    return None


def literal_ip(host: str) -> IpAddress | None:
    """The address ``host`` spells, in any form a resolver would accept; None for a name.

    ``inet_aton`` reads the historic IPv4 forms (one to four parts, decimal, octal ``0``- or
    hex ``0x``-prefixed) exactly as the C library the HTTP stack uses would.
    """
    h = host.strip("[]").rstrip(".")
    try:
        return ipaddress.ip_address(h.split("%", 1)[0])
    except ValueError:
        pass
    if h and all(c in "0123456789abcdefxABCDEFX." for c in h):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(h))
        except OSError:
            return None
    return None


def host_allowed(host: str, patterns: Sequence[str]) -> bool:
    """Does ``host`` match one of the host ``patterns`` (fnmatch, case-insensitive)?"""
    h = host.lower().strip("[]").rstrip(".")
    return any(fnmatch.fnmatchcase(h, p.lower().strip("[]").rstrip(".")) for p in patterns)


def check_address(ip: IpAddress, host: str, policy: Policy) -> None:
    """Refuse ``ip`` unless it is global unicast or inside an allow-listed CIDR."""
    why = forbidden(ip)
    if why is None or any(ip.version == n.version and ip in n for n in policy.networks()):
        return
    # The address itself stays out of the message: it would tell a tenant how internal
    # names resolve.
    raise WebhookError(
        f"webhook host {host!r} resolves to a {why} address; the engine does not call it",
        hint="an operator can allow an internal range with [events] webhook_allow_cidrs",
    )


class Target(msgspec.Struct, frozen=True):
    """A URL that passed the static checks: its host, port and address if it is a literal."""

    host: str
    port: int
    literal: str | None


def check_url(url: str, policy: Policy) -> Target:
    """The static checks (scheme, host pattern, port, literal address); :class:`WebhookError`."""
    if len(url) > MAX_URL:
        raise WebhookError(f"webhook URL is longer than {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        raise WebhookError("webhook URL cannot be parsed (bad host or port)") from None
    if parts.scheme not in ("http", "https"):
        raise WebhookError(f"webhook URL must be http:// or https://, not {url[:40]!r}")
    if not host:
        raise WebhookError("webhook URL has no host")
    if parts.username is not None or parts.password is not None:
        raise WebhookError("webhook URL must not carry a user name or password")
    if not host_allowed(host, policy.hosts):
        raise WebhookError(
            f"webhook host {host!r} is not allow-listed",
            hint="the engine only calls hosts matching [events] webhook_allow "
            f"(now: {', '.join(policy.hosts) or 'none'})",
        )
    port = port or (443 if parts.scheme == "https" else 80)
    if port not in policy.ports:
        raise WebhookError(
            f"webhook port {port} is not allowed",
            hint="the engine only calls ports in [events] webhook_ports "
            f"(now: {', '.join(map(str, policy.ports)) or 'none'})",
        )
    ip = literal_ip(host)
    if ip is not None:
        check_address(ip, host, policy)
    return Target(host.lower().rstrip("."), port, str(ip) if ip is not None else None)


async def vet_host(host: str, policy: Policy, resolve: Resolve) -> list[IpAddress]:
    """Every address of ``host``, each checked; :class:`WebhookError` when one is forbidden.

    A DNS failure propagates as the seam raises it (a retryable delivery failure).
    """
    ip = literal_ip(host)
    if ip is not None:
        check_address(ip, host, policy)
        return [ip]
    name = host.lower().rstrip(".")
    found: list[IpAddress] = []
    for rdtype in ("A", "AAAA"):
        for text in await resolve(name, rdtype):
            try:
                found.append(ipaddress.ip_address(text))
            except ValueError:
                raise WebhookError(f"webhook host {host!r} has a malformed address") from None
    if not found:
        raise WebhookError(f"webhook host {host!r} does not resolve")
    for addr in found:
        check_address(addr, host, policy)
    return found


async def vet(url: str, policy: Policy, resolve: Resolve) -> Target:
    """:func:`check_url`, then the addresses of its host (what creation checks)."""
    target = check_url(url, policy)
    await vet_host(target.host, policy, resolve)
    return target


class RefusedAddress(OSError):
    """Raised inside the HTTP client when a host's addresses fail :func:`vet_host`."""


class VettingResolver(AbstractResolver):
    """The aiohttp resolver of the webhook client: resolves through the seam, vets, pins."""

    def __init__(self, policy: Policy, resolve: Resolve) -> None:
        self.policy = policy
        self._resolve = resolve

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            addresses = await vet_host(host, self.policy, self._resolve)
        except WebhookError as exc:
            raise RefusedAddress(exc.message) from None
        wanted = [
            a
            for a in addresses
            if family == socket.AF_UNSPEC or (family == socket.AF_INET) == (a.version == 4)
        ]
        return [
            ResolveResult(
                hostname=host,
                host=str(a),
                port=port,
                family=socket.AF_INET if a.version == 4 else socket.AF_INET6,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for a in wanted or addresses
        ]

    async def close(self) -> None:
        """Nothing to release: the seam owns its resources."""
