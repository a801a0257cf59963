"""``engine mailu overrides``: the Postfix settings that make a MailU node pace each provider.

The engine shapes per sender × provider (rates, AIMD) and bounds its own transactions per
provider (:mod:`engine.dispatch.inflight`), but the connections to Gmail or Outlook are opened by
the MailU node's Postfix. Postfix limits concurrency per *transport*, so each provider gets one
(``pm_<name>``), defined in master.cf with ``maxproc`` = the provider's ``max_connections`` (all
deliveries through it at once, whatever the destination domain), its recipient domains routed
to it by a transport map, and per-transport parameters in main.cf.

MailU applies three files from its overrides directory at start (docs/mailu.md): each line of
``postfix.cf`` with ``postconf -e``, each line of ``postfix.master`` with ``postconf -Me``, and
``*.map`` files with ``postmap`` (its ``transport_maps`` lists ``/etc/postfix/transport.map``).
So ``postfix.cf`` and ``postfix.master`` carry no comments: every line is applied as it is.

Sans-IO: providers and domains in, file texts out. Names are checked, so a provider name or a
domain from the config cannot inject a line into a Postfix file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

import msgspec

from engine.config import ShapingProvider
from engine.errors import ConfigError

__all__ = ["MailuOverrides", "ProviderTransport", "render_overrides", "transport_name"]

#: Postfix's default before it warns the sender that a message is still queued is 0h (never):
#: without a warning there is no "delayed" DSN, and the engine hears of a provider's deferrals
#: only when the message finally bounces.
DEFAULT_DELAY_WARNING = "30m"

_DOMAIN = re.compile(
    r"(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+"
)
_TIME = re.compile(r"[0-9]{1,6}[smhdw]?")
_NAME_CHARS = re.compile(r"[^a-z0-9_]")


class ProviderTransport(msgspec.Struct, frozen=True):
    """One provider as the MailU node will pace it."""

    provider: str
    transport: str  # the master.cf service name
    max_connections: int  # maxproc and destination concurrency
    initial_concurrency: int
    rate_delay: str  # Postfix time; "0s" unless the provider's rate is below 1 msg/s
    reuse_limit: int  # messages per connection (max_messages_per_connection)
    domains: list[str]


class MailuOverrides(msgspec.Struct, frozen=True):
    """The three files (name → text) and what they say, per provider."""

    files: dict[str, str]
    providers: list[ProviderTransport]
    delay_warning_time: str


def transport_name(provider: str) -> str:
    """``gmail`` → ``pm_gmail``: a master.cf service name that is also a parameter prefix."""
    return "pm_" + _NAME_CHARS.sub("_", provider.lower())


def _rate_delay(rate_per_s: float) -> str:
    # A non-zero rate delay makes Postfix deliver one message at a time per destination, and
    # its unit is whole seconds: only providers slower than 1 msg/s get one; the engine's own
    # shaping paces the rest.
    if rate_per_s <= 0 or rate_per_s >= 1:
        return "0s"
    return f"{math.ceil(1 / rate_per_s)}s"


def _checked_domain(domain: str, provider: str) -> str:
    d = domain.lower().rstrip(".")
    if not _DOMAIN.fullmatch(d):
        raise ConfigError(
            f"provider {provider!r}: {domain!r} is not a domain name",
            hint="fix domains in providers.toml or [[shaping.providers]]",
        )
    return d


def render_overrides(
    providers: Iterable[ShapingProvider],
    extra_domains: Mapping[str, Iterable[str]] = {},
    *,
    delay_warning_time: str = DEFAULT_DELAY_WARNING,
) -> MailuOverrides:
    """The MailU override files for ``providers`` (file table merged with the config).

    ``extra_domains`` maps a provider name to more recipient domains routed to it (the
    ``[dns.overrides]`` domains whose MX rolls up to it). A provider with no domain gets no
    transport: Postfix would never use it.
    """
    if not _TIME.fullmatch(delay_warning_time):
        raise ConfigError(
            f"delay warning time {delay_warning_time!r} is not a Postfix time (e.g. 30m, 4h)"
        )
    transports: list[ProviderTransport] = []
    claimed: dict[str, str] = {}
    for p in sorted(providers, key=lambda p: p.name):
        domains = [_checked_domain(d, p.name) for d in (*p.domains, *extra_domains.get(p.name, ()))]
        domains = [d for d in dict.fromkeys(domains) if claimed.setdefault(d, p.name) == p.name]
        if not domains or p.max_connections < 1:
            continue
        transports.append(
            ProviderTransport(
                provider=p.name,
                transport=transport_name(p.name),
                max_connections=p.max_connections,
                initial_concurrency=min(p.max_connections, 5),
                rate_delay=_rate_delay(p.rate_per_s),
                reuse_limit=max(1, p.max_messages_per_connection),
                domains=sorted(domains),
            )
        )
    return MailuOverrides(
        files={
            "postfix.cf": _main_cf(transports, delay_warning_time),
            "postfix.master": _master_cf(transports),
            "transport.map": _transport_map(transports),
        },
        providers=transports,
        delay_warning_time=delay_warning_time,
    )


def _main_cf(transports: list[ProviderTransport], delay_warning_time: str) -> str:
    lines = [f"delay_warning_time = {delay_warning_time}"]
    for t in transports:
        n = t.transport
        lines += [
            f"{n}_destination_concurrency_limit = {t.max_connections}",
            f"{n}_initial_destination_concurrency = {t.initial_concurrency}",
            f"{n}_destination_rate_delay = {t.rate_delay}",
        ]
    return "\n".join(lines) + "\n"


def _master_cf(transports: list[ProviderTransport]) -> str:
    # postconf -Me "service/type=entry": the entry is a whole master.cf line.
    return "".join(
        f"{t.transport}/unix={t.transport} unix - - n - {t.max_connections} smtp"
        f" -o smtp_connection_reuse_count_limit={t.reuse_limit}\n"
        for t in transports
    )


def _transport_map(transports: list[ProviderTransport]) -> str:
    lines = [
        "# engine mailu overrides: each provider's recipient domains to its own transport",
    ]
    for t in transports:
        lines += [f"{d} {t.transport}:" for d in t.domains]
    return "\n".join(lines) + "\n"
