"""The engine's one DNS adapter: an injectable ``resolve(name, rdtype)`` function, and one
mapping of dnspython's outcomes (NXDOMAIN / NODATA: no records; timeout and every other DNS
failure: :class:`~engine.errors.DnsLookupError`).

Compliance checks, DKIM record checks, the shaper's MX rollup, webhook vetting and the inbound
reporter checks never import a resolver themselves; they take a :data:`Resolve` (tests pass a
dict-backed fake, the CLI and the daemon pass :func:`system_resolver`). Answers
are memoised per check run with :class:`CachingResolver`, so an SPF include chain that names
the same host twice, or four relay IPs evaluated against one record, costs one query each.
Long-lived users (the inbound listener's reporter checks) wrap it in :class:`TtlCache` instead,
and tests answer TXT names from config with :func:`with_txt_overrides`.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.resolver
import dns.reversename

from engine.errors import DnsLookupError

Resolve = Callable[[str, str], Awaitable[list[str]]]
"""``resolve(name, rdtype)`` for rdtype ``TXT`` | ``A`` | ``AAAA`` | ``MX`` | ``PTR``.

Returns the records as text: TXT character-strings joined, addresses in their usual form, MX
exchange host names (best preference first, no trailing dot), PTR target names (no trailing
dot). ``[]`` when the name or the record type does not exist (NXDOMAIN / NODATA); raises
:class:`DnsLookupError` when DNS itself failed (timeout, SERVFAIL), which a check reports as
``error`` rather than ``fail``: a resolver hiccup must not block a sender.
"""

RDTYPES = frozenset({"TXT", "A", "AAAA", "MX", "PTR"})


def reverse_name(ip: str) -> str:
    """The PTR owner name of an address (``5.113.0.203.in-addr.arpa``), no trailing dot."""
    return dns.reversename.from_address(str(ipaddress.ip_address(ip))).to_text(omit_final_dot=True)


async def _query(name: str, rdtype: str, timeout: float) -> Any:
    """The dnspython answer, ``None`` for NXDOMAIN / NODATA; the one error mapping."""
    try:
        return await dns.asyncresolver.resolve(name, rdtype, lifetime=timeout)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return None
    except dns.exception.Timeout:
        raise DnsLookupError(
            f"DNS lookup of {name} {rdtype} timed out after {timeout:g}s"
        ) from None
    except (dns.exception.DNSException, OSError) as exc:
        raise DnsLookupError(f"DNS lookup of {name} {rdtype} failed: {exc}") from None


async def txt_bytes(name: str, *, timeout: float = 3.0) -> list[bytes]:
    """The TXT records at ``name`` as raw bytes (character-strings joined), for DKIM keys."""
    answer = await _query(name, "TXT", timeout)
    return [] if answer is None else [b"".join(r.strings) for r in answer]


def system_resolver(timeout: float = 3.0) -> Resolve:
    """A :data:`Resolve` backed by dnspython's async resolver and the system configuration."""

    async def resolve(name: str, rdtype: str) -> list[str]:
        if rdtype not in RDTYPES:
            raise ValueError(f"unsupported record type {rdtype}")
        answer = await _query(name, rdtype, timeout)
        if answer is None:
            return []
        if rdtype == "TXT":
            return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
        if rdtype == "MX":
            ranked = sorted(answer, key=lambda r: r.preference)
            return [r.exchange.to_text(omit_final_dot=True) for r in ranked]
        if rdtype == "PTR":
            return [r.target.to_text(omit_final_dot=True) for r in answer]
        return [r.to_text() for r in answer]

    return resolve


class CachingResolver:
    """Memoises another :data:`Resolve` for the life of one check run; counts real queries."""

    def __init__(self, inner: Resolve) -> None:
        self._inner = inner
        self._answers: dict[tuple[str, str], list[str]] = {}
        self.queries = 0

    async def __call__(self, name: str, rdtype: str) -> list[str]:
        key = (name.lower().rstrip("."), rdtype)
        found = self._answers.get(key)
        if found is None:
            self.queries += 1
            found = await self._inner(key[0], rdtype)
            self._answers[key] = found
        return list(found)


class TtlCache:
    """A :data:`Resolve` that remembers answers (and empty answers) for a while; errors never."""

    def __init__(
        self, inner: Resolve, ttl_s: float, negative_ttl_s: float, max_entries: int = 4096
    ) -> None:
        self.inner = inner
        self.ttl_s = ttl_s
        self.negative_ttl_s = negative_ttl_s
        self.max_entries = max_entries
        self._answers: OrderedDict[tuple[str, str], tuple[float, list[str]]] = OrderedDict()

    async def __call__(self, name: str, rdtype: str) -> list[str]:
        key = (name.lower().rstrip("."), rdtype)
        now = time.monotonic()
        found = self._answers.get(key)
        if found is not None and found[0] > now:
            self._answers.move_to_end(key)
            return list(found[1])
        answer = await self.inner(key[0], rdtype)
        ttl = self.ttl_s if answer else self.negative_ttl_s
        self._answers[key] = (now + ttl, list(answer))
        self._answers.move_to_end(key)
        while len(self._answers) > self.max_entries:
            self._answers.popitem(last=False)
        return answer


def with_txt_overrides(inner: Resolve, txt: Mapping[str, Sequence[str]]) -> Resolve:
    """``inner``, except that TXT lookups of names in ``txt`` are answered from it."""
    table = {k.lower().rstrip("."): list(v) for k, v in txt.items()}
    if not table:
        return inner

    async def resolve(name: str, rdtype: str) -> list[str]:
        if rdtype == "TXT":
            found = table.get(name.lower().rstrip("."))
            if found is not None:
                return list(found)
        return await inner(name, rdtype)

    return resolve
