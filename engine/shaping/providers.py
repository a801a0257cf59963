"""Provider rollup: recipient domain → MX hosts → receiving provider (gmail, outlook, …).

Limits apply per provider, not per recipient domain: ten thousand Google Workspace domains are
one Gmail as far as its throttling goes. The MX hosts of a domain come from ``[dns.overrides]``
first (tests, demo and benchmarks run offline), then from :mod:`engine.resolver`; the primary MX
is matched against the MX suffixes of ``providers.toml`` (engine/data/, or the operator's
copy in /etc/penguinmails-engine/) merged with
``[[shaping.providers]]`` (config wins), longest suffix first. An MX matching nothing makes its
own group named after the MX's registered domain.

DNS never stalls the pipeline: answers are cached (``cache_ttl_s``; no-MX answers
``negative_ttl_s``), concurrent lookups of one domain share one query, and a lookup that fails or
times out maps the domain to a provider named after the domain itself — cached only briefly, so
it is retried later.
"""

from __future__ import annotations

import asyncio
import logging
import time
import tomllib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import msgspec

from engine.config import DnsConfig, ShapingConfig, ShapingProvider, data_file_candidates
from engine.errors import ConfigError
from engine.psl import organizational_domain
from engine.resolver import system_resolver
from engine.shaping.clock import Clock
from engine.shaping.model import Provider

log = logging.getLogger("engine.shaping.providers")

#: Where the provider table is looked for when ``[shaping] providers_file`` is not set: the
#: operator's copy in /etc/penguinmails-engine/, then the packaged one (engine/data/).
DEFAULT_TABLE_PATHS: tuple[Path, ...] = data_file_candidates("providers.toml")

#: A function returning a domain's MX hosts by preference ([] when it has none; raises
#: :class:`~engine.errors.DnsLookupError` when DNS failed). Tests inject their own.
MxLookup = Callable[[str], Awaitable[list[str]]]

#: How long a DNS failure's fallback mapping is kept before the domain is looked up again.
FAILURE_RETRY_S = 30.0

_CACHE_MAX = 200_000


class _TableFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    providers: list[ShapingProvider] = []


def load_table(path: Path) -> list[ShapingProvider]:
    """Read ``providers.toml``: ``[[providers]] name mx_suffixes rate_per_s max_connections``."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"provider table {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"provider table {path} is not valid TOML: {exc}") from None
    try:
        return msgspec.convert(data, _TableFile).providers
    except msgspec.ValidationError as exc:
        raise ConfigError(f"provider table {path}: {exc}") from None


def find_table(cfg: ShapingConfig) -> Path:
    """The provider table file to use; raises :class:`ConfigError` naming what was tried."""
    if cfg.providers_file:
        return Path(cfg.providers_file)
    for path in DEFAULT_TABLE_PATHS:
        if path.exists():
            return path
    tried = ", ".join(str(p) for p in DEFAULT_TABLE_PATHS)
    raise ConfigError(
        f"no provider table found (tried {tried})", hint="set [shaping] providers_file"
    )


def registered_domain(host: str) -> str:
    """``mx1.mail.example.co.uk`` → ``example.co.uk`` (Public Suffix List, engine/psl.py)."""
    return organizational_domain(host)


class ProviderTable:
    """MX suffix → provider, from the data file merged with ``[[shaping.providers]]``."""

    def __init__(
        self,
        file_providers: Iterable[ShapingProvider],
        config_providers: Iterable[ShapingProvider],
        default: ShapingProvider,
    ) -> None:
        self.default = default
        merged: dict[str, ShapingProvider] = {p.name: p for p in file_providers}
        config_suffixes: set[str] = set()
        for p in config_providers:
            base = merged.get(p.name)
            if base is not None and not p.mx_suffixes:
                # A config entry naming a known provider without suffixes tunes its numbers only.
                p = msgspec.structs.replace(p, mx_suffixes=base.mx_suffixes)
            if base is not None and not p.domains:
                p = msgspec.structs.replace(p, domains=base.domains)
            merged[p.name] = p
            config_suffixes.update(s.lower().strip(".") for s in p.mx_suffixes)
        self.entries = merged  # as configured (file merged with config), for engine mailu overrides
        self.providers: dict[str, Provider] = {}
        self._suffixes: dict[str, str] = {}
        for p in merged.values():
            source = "config" if any(c.name == p.name for c in config_providers) else "table"
            self.providers[p.name] = _provider(p, source)
            for suffix in p.mx_suffixes:
                s = suffix.lower().strip(".")
                # A suffix claimed by both the file and the config goes to the config's provider.
                if s not in self._suffixes or (source == "config" and s in config_suffixes):
                    self._suffixes[s] = p.name

    @classmethod
    def from_config(cls, cfg: ShapingConfig) -> ProviderTable:
        default = ShapingProvider(name="default", rate_per_s=cfg.default_rate_per_s)
        return cls(load_table(find_table(cfg)), list(cfg.providers), default)

    def match(self, mx_host: str) -> Provider:
        """The provider of one MX host: longest matching suffix, else its own group."""
        host = mx_host.lower().rstrip(".")
        labels = host.split(".")
        for i in range(len(labels)):
            name = self._suffixes.get(".".join(labels[i:]))
            if name is not None:
                return self.providers[name]
        return self.unknown(registered_domain(host), "mx")

    def unknown(self, name: str, source: str) -> Provider:
        """A group of its own with the default limits (unknown MX, or DNS failed)."""
        return _provider(msgspec.structs.replace(self.default, name=name), source)

    def get(self, name: str) -> Provider:
        """A provider by name; an unknown name gets the default limits."""
        return self.providers.get(name) or self.unknown(name, "mx")


def _provider(p: ShapingProvider, source: str) -> Provider:
    return Provider(
        name=p.name,
        rate_per_s=p.rate_per_s,
        max_connections=p.max_connections,
        max_messages_per_connection=p.max_messages_per_connection,
        source=source,
    )


def dns_mx_lookup(timeout_s: float) -> MxLookup:
    """The production lookup: MX by the engine's resolver (:mod:`engine.resolver`), lowest
    preference first; ``[]`` without MX (RFC 5321 §5.1 implicit MX, the domain itself)."""
    resolve = system_resolver(timeout_s)

    async def lookup(domain: str) -> list[str]:
        hosts = [h.rstrip(".") for h in await resolve(domain, "MX")]
        return [h for h in hosts if h]  # RFC 7505 null MX "." leaves nothing

    return lookup


class ProviderResolver:
    """Recipient domain → :class:`Provider`, cached, coalesced, never failing."""

    def __init__(
        self,
        table: ProviderTable,
        dns_cfg: DnsConfig,
        lookup: MxLookup | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.table = table
        self._cfg = dns_cfg
        self._overrides = {k.lower(): list(v) for k, v in dns_cfg.overrides.items()}
        self._lookup = lookup or dns_mx_lookup(dns_cfg.timeout_s)
        self._clock = clock
        self._cache: OrderedDict[str, tuple[Provider, float]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[Provider]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.lookups = 0  # DNS queries actually sent (for metrics and tests)
        self.failures = 0

    def use_table(self, table: ProviderTable) -> None:
        """Map domains with a new provider table (a reload); cached answers carried the old
        table's limits, so they go."""
        self.table = table
        self._cache.clear()

    def cached(self, domain: str) -> Provider | None:
        """The cached provider of a domain, or None (no DNS, no await)."""
        domain = domain.lower().rstrip(".")
        mx = self._overrides.get(domain)
        if mx is not None:
            return self.table.match(mx[0]) if mx else self.table.unknown(domain, "mx")
        hit = self._cache.get(domain)
        if hit is None:
            return None
        provider, expires = hit
        if expires <= self._clock():
            del self._cache[domain]
            return None
        self._cache.move_to_end(domain)
        return provider

    async def resolve(self, domain: str) -> Provider:
        """One domain's provider (see :meth:`resolve_many`)."""
        return (await self.resolve_many([domain]))[domain.lower().rstrip(".")]

    async def resolve_many(self, domains: Iterable[str]) -> dict[str, Provider]:
        """Providers of many domains, keyed by the lower-cased domain.

        Cache hits are answered without awaiting anything; misses are looked up concurrently
        (one query per domain however many callers ask) and never raise.
        """
        out: dict[str, Provider] = {}
        missing: dict[str, asyncio.Future[Provider]] = {}
        for raw in domains:
            domain = raw.lower().rstrip(".")
            if domain in out or domain in missing:
                continue
            hit = self.cached(domain)
            if hit is not None:
                out[domain] = hit
                continue
            fut = self._inflight.get(domain)
            if fut is None:
                fut = asyncio.get_running_loop().create_future()
                self._inflight[domain] = fut
                task = asyncio.create_task(self._fill(domain, fut))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            missing[domain] = fut
        if missing:
            results = await asyncio.gather(*(asyncio.shield(f) for f in missing.values()))
            out.update(zip(missing, results, strict=True))
        return out

    async def _fill(self, domain: str, fut: asyncio.Future[Provider]) -> None:
        try:
            provider, ttl = await self._look_up(domain)
            self._remember(domain, provider, ttl)
            fut.set_result(provider)
        except BaseException as exc:  # cancelled at shutdown: waiters must not hang
            if not fut.done():
                fut.set_exception(exc)
            raise
        finally:
            self._inflight.pop(domain, None)

    async def _look_up(self, domain: str) -> tuple[Provider, float]:
        self.lookups += 1
        try:
            async with asyncio.timeout(self._cfg.timeout_s):
                hosts = await self._lookup(domain)
        except Exception as exc:  # any failure, even a resolver bug, must not stall a batch
            self.failures += 1
            log.warning(
                "MX lookup failed; using the domain as its own provider for now",
                extra={"domain": domain, "error": str(exc) or type(exc).__name__},
            )
            return self.table.unknown(domain, "fallback"), min(
                FAILURE_RETRY_S, self._cfg.negative_ttl_s
            )
        if not hosts:
            return self.table.unknown(registered_domain(domain), "mx"), self._cfg.negative_ttl_s
        return self.table.match(hosts[0]), self._cfg.cache_ttl_s

    def _remember(self, domain: str, provider: Provider, ttl: float) -> None:
        self._cache[domain] = (provider, self._clock() + ttl)
        self._cache.move_to_end(domain)
        while len(self._cache) > _CACHE_MAX:
            self._cache.popitem(last=False)

    def provider(self, name: str) -> Provider:
        """A provider's limits by name (for the relay layer: connections, messages/connection)."""
        return self.table.get(name)
