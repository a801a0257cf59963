"""SPF evaluation (RFC 7208 ``check_host``) of one IP against a domain's record.

Enough of the RFC to answer "does this domain's SPF authorise our relay IPs?" the way receivers
do: mechanisms ``all include a mx ptr ip4 ip6 exists`` with qualifiers and dual CIDR lengths,
the ``redirect=`` modifier, the common macros (``%{i} %{d} %{s} %{l} %{o} %{v} %{h}`` with
digit and ``r`` transformers), and the processing limits of §4.6.4 — at most 10 terms that
cause DNS lookups (include, a, mx, ptr, exists, redirect) per evaluation, at most 10 MX hosts
per ``mx``, at most 2 lookups that return nothing ("void") — each a ``permerror`` when exceeded,
because receivers stop there too and treat the record as broken.

``ptr`` is deprecated (§5.5) and never matches here; a record that relies on it fails our check
on purpose. DNS comes in through the injected :data:`~engine.resolver.Resolve`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

import msgspec

from engine.errors import DnsLookupError
from engine.resolver import Resolve

SpfResult = Literal["pass", "fail", "softfail", "neutral", "none", "permerror", "temperror"]

MAX_DNS_TERMS = 10  # RFC 7208 §4.6.4
MAX_VOID_LOOKUPS = 2
MAX_MX_HOSTS = 10

_QUALIFIERS: dict[str, SpfResult] = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
_MECHANISMS = frozenset({"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"})
_DNS_TERMS = frozenset({"include", "a", "mx", "ptr", "exists"})
_TERM = re.compile(r"^([+\-~?]?)([a-z0-9][a-z0-9_.-]*)(?:([:=])(.*))?$", re.IGNORECASE)
_CIDR = re.compile(r"^(.*?)(?:/(\d+))?(?://(\d+))?$")
_MACRO = re.compile(r"%\{([slodiphcrtv])(\d*)(r?)([.\-+,/_=]*)\}|%%|%_|%-", re.IGNORECASE)


class SpfOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What ``check_host`` said for one IP, and why."""

    ip: str
    result: SpfResult
    detail: str
    lookups: int = 0


class _PermError(Exception):
    pass


class _TempError(Exception):
    pass


class _Budget:
    """The per-evaluation counters of §4.6.4, shared through the whole include chain."""

    def __init__(self) -> None:
        self.terms = 0
        self.voids = 0

    def spend(self, what: str) -> None:
        self.terms += 1
        if self.terms > MAX_DNS_TERMS:
            raise _PermError(f"more than {MAX_DNS_TERMS} DNS-querying terms (at {what})")

    def void(self, what: str) -> None:
        self.voids += 1
        if self.voids > MAX_VOID_LOOKUPS:
            raise _PermError(f"more than {MAX_VOID_LOOKUPS} void DNS lookups (at {what})")


def select_record(txts: list[str]) -> str | None:
    """The one ``v=spf1`` record among a name's TXT records (§4.5); permerror if several."""
    found = [t for t in txts if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")]
    if len(found) > 1:
        raise _PermError(f"{len(found)} v=spf1 records")
    return found[0] if found else None


def _expand(spec: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, domain: str) -> str:
    """Macro expansion (§7) for a sender ``postmaster@domain`` (we check a domain, not a mail)."""
    if "%" not in spec:
        return spec
    # %{i}: dotted quad, or dot-separated nibbles for IPv6 (§7.3)
    dotted = str(ip) if ip.version == 4 else ".".join(ip.exploded.replace(":", ""))
    values = {
        "s": f"postmaster@{domain}",
        "l": "postmaster",
        "o": domain,
        "d": domain,
        "i": dotted,
        "v": "in-addr" if ip.version == 4 else "ip6",
        "h": domain,
        "p": "unknown",
    }

    def one(m: re.Match[str]) -> str:
        token = m.group(0)
        if token == "%%":
            return "%"
        if token == "%_":
            return " "
        if token == "%-":
            return "%20"
        letter, digits, reverse, delims = m.groups()
        value = values.get(letter.lower())
        if value is None:
            raise _PermError(f"macro %{{{letter}}} is not allowed here")
        parts = re.split("[" + re.escape(delims or ".") + "]", value)
        if reverse:
            parts.reverse()
        if digits:
            if int(digits) == 0:
                raise _PermError("macro with a zero digit transformer")
            parts = parts[-int(digits) :]
        return ".".join(parts)

    out = _MACRO.sub(one, spec)
    if "%" in out:
        raise _PermError(f"malformed macro in {spec!r}")
    return out


def _split_cidr(value: str, default_domain: str) -> tuple[str, int | None, int | None]:
    m = _CIDR.match(value)
    assert m is not None  # the pattern matches every string
    target, v4, v6 = m.group(1) or default_domain, m.group(2), m.group(3)
    if (v4 is not None and int(v4) > 32) or (v6 is not None and int(v6) > 128):
        raise _PermError(f"CIDR length out of range in {value!r}")
    return target, None if v4 is None else int(v4), None if v6 is None else int(v6)


def _in(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, addr: str, v4: int | None, v6: int | None
) -> bool:
    try:
        other = ipaddress.ip_address(addr)
    except ValueError:
        return False
    if other.version != ip.version:
        return False
    bits = (32 if v4 is None else v4) if ip.version == 4 else (128 if v6 is None else v6)
    return ip in ipaddress.ip_network(f"{other}/{bits}", strict=False)


class SpfEvaluator:
    """``check_host`` for one IP; create one per (IP, domain) evaluation (it holds the budget)."""

    def __init__(self, resolve: Resolve, ip: str) -> None:
        self._resolve = resolve
        self.ip = ipaddress.ip_address(ip)
        self._budget = _Budget()

    async def _lookup(self, name: str, rdtype: str, *, what: str) -> list[str]:
        try:
            found = await self._resolve(name, rdtype)
        except DnsLookupError as exc:
            raise _TempError(exc.message) from None
        if not found:
            self._budget.void(what)
        return found

    async def _addresses(self, host: str, what: str) -> list[str]:
        rdtype = "A" if self.ip.version == 4 else "AAAA"
        return await self._lookup(host, rdtype, what=what)

    async def check(self, domain: str) -> SpfOutcome:
        """Evaluate; never raises for DNS or record trouble (that is temperror/permerror)."""
        try:
            result, detail = await self._check_host(domain.lower().rstrip("."), depth=0)
        except _PermError as exc:
            result, detail = "permerror", str(exc)
        except _TempError as exc:
            result, detail = "temperror", str(exc)
        return SpfOutcome(ip=str(self.ip), result=result, detail=detail, lookups=self._budget.terms)

    async def _check_host(self, domain: str, depth: int) -> tuple[SpfResult, str]:
        try:
            txts = await self._resolve(domain, "TXT")
        except DnsLookupError as exc:
            raise _TempError(exc.message) from None
        record = select_record(txts)
        if record is None:
            return "none", f"no SPF record at {domain}"
        redirect: str | None = None
        for term in record.split()[1:]:
            m = _TERM.match(term)
            if m is None:
                raise _PermError(f"{domain}: cannot parse term {term!r}")
            qualifier, name, sep, value = m.groups()
            name = name.lower()
            if sep == "=":
                if name == "redirect":
                    redirect = value
                continue  # exp= and unknown modifiers are ignored (§6)
            if name not in _MECHANISMS:
                raise _PermError(f"{domain}: unknown mechanism {name!r}")
            if await self._matches(name, value, domain, depth):
                verdict = _QUALIFIERS[qualifier or "+"]
                return verdict, f"{domain}: matched {term}"
        if redirect is not None:
            self._budget.spend(f"redirect={redirect}")
            target = _expand(redirect, self.ip, domain).lower()
            result, detail = await self._check_host(target, depth + 1)
            if result == "none":
                raise _PermError(f"{domain}: redirect={target} has no SPF record")
            return result, detail
        return "neutral", f"{domain}: no mechanism matched"

    async def _matches(self, name: str, value: str | None, domain: str, depth: int) -> bool:
        if name == "all":
            return True
        if name in ("ip4", "ip6"):
            return self._match_network(name, value, domain)
        self._budget.spend(f"{name}:{value or domain}")
        if name == "include":
            return await self._match_include(value, domain, depth)
        if name == "ptr":
            return False  # deprecated (RFC 7208 §5.5): never counted as authorising
        if name == "exists":
            target = _expand(value or "", self.ip, domain)
            return bool(await self._lookup(target, "A", what=f"exists:{target}"))
        return await self._match_host(name, value, domain)

    def _match_network(self, name: str, value: str | None, domain: str) -> bool:
        if not value:
            raise _PermError(f"{domain}: {name} needs an address")
        try:
            net = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise _PermError(f"{domain}: bad network {name}:{value}") from None
        return net.version == self.ip.version and self.ip in net

    async def _match_include(self, value: str | None, domain: str, depth: int) -> bool:
        if not value:
            raise _PermError(f"{domain}: include needs a domain")
        target = _expand(value, self.ip, domain).lower()
        result, _ = await self._check_host(target, depth + 1)
        if result in ("permerror", "none"):
            raise _PermError(f"{domain}: include:{target} has no usable SPF record")
        if result == "temperror":
            raise _TempError(f"include:{target} could not be resolved")
        return result == "pass"

    async def _match_host(self, name: str, value: str | None, domain: str) -> bool:
        """``a`` and ``mx``: is the IP one of the host's (or the MX hosts') addresses?"""
        target, v4, v6 = _split_cidr(value or "", domain)
        target = _expand(target, self.ip, domain).lower()
        if name == "a":
            addrs = await self._addresses(target, f"a:{target}")
            return any(_in(self.ip, a, v4, v6) for a in addrs)
        hosts = await self._lookup(target, "MX", what=f"mx:{target}")
        if len(hosts) > MAX_MX_HOSTS:
            raise _PermError(f"{domain}: mx:{target} has more than {MAX_MX_HOSTS} hosts")
        for host in hosts:
            if any(_in(self.ip, a, v4, v6) for a in await self._addresses(host, f"mx:{host}")):
                return True
        return False


async def check_ip(resolve: Resolve, domain: str, ip: str) -> SpfOutcome:
    """``check_host(ip, domain)``: pass when the domain's SPF authorises ``ip``."""
    return await SpfEvaluator(resolve, ip).check(domain)
