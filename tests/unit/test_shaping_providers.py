"""Provider rollup: MX suffix table, config overrides, caching, coalescing, DNS failures."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from engine.config import DnsConfig, ShapingConfig, ShapingProvider
from engine.errors import ConfigError, ShapingError
from engine.shaping.clock import FakeClock
from engine.shaping.providers import (
    DEFAULT_TABLE_PATHS,
    ProviderResolver,
    ProviderTable,
    load_table,
    registered_domain,
)

TABLE = ProviderTable.from_config(ShapingConfig())


class FakeDns:
    """An injected MX lookup: answers from a dict, counts calls, can fail or hang."""

    def __init__(self, answers: dict[str, list[str]], delay: float = 0.0) -> None:
        self.answers = answers
        self.delay = delay
        self.calls: list[str] = []

    async def __call__(self, domain: str) -> list[str]:
        self.calls.append(domain)
        if self.delay:
            await asyncio.sleep(self.delay)
        answer = self.answers.get(domain)
        if answer is None:
            raise ShapingError(f"SERVFAIL for {domain}")
        return answer


@pytest.mark.parametrize(
    ("mx", "provider"),
    [
        ("gmail-smtp-in.l.google.com", "gmail"),
        ("ASPMX.L.GOOGLE.COM.", "gmail"),
        ("acme-com.mail.protection.outlook.com", "outlook"),
        ("mta7.am0.yahoodns.net", "yahoo"),
        ("mx01.mail.icloud.com", "icloud"),
        ("mx.zoho.eu", "zoho"),
        ("mx.yandex.net", "yandex"),
        ("mxs.mail.ru", "mailru"),
        ("mx00.emig.gmx.net", "gmx"),
        ("mail.protonmail.ch", "proton"),
        ("in1-smtp.messagingengine.com", "fastmail"),
        ("mx1.comcast.net", "comcast"),
        ("mx.qq.com", "qq"),
        ("163mx01.mxmail.netease.com", "netease"),
    ],
)
def test_shipped_table_maps_major_providers(mx: str, provider: str) -> None:
    assert TABLE.match(mx).name == provider


def test_unknown_mx_is_its_own_group_by_registered_domain() -> None:
    p = TABLE.match("mx2.mail.example.co.uk")
    assert (p.name, p.source) == ("example.co.uk", "mx")
    assert p.rate_per_s == ShapingConfig().default_rate_per_s
    assert registered_domain("a.b.example.com") == "example.com"
    assert registered_domain("localhost") == "localhost"


def test_suffix_match_respects_label_boundaries() -> None:
    assert TABLE.match("mx.notgoogle.com").name == "notgoogle.com"


def test_config_wins_over_the_data_file() -> None:
    cfg = ShapingConfig(
        providers=[
            ShapingProvider(name="gmail", rate_per_s=3.0, max_connections=2),
            ShapingProvider(name="corp", mx_suffixes=["google.com"], rate_per_s=1.0),
        ]
    )
    table = ProviderTable.from_config(cfg)
    gmail = table.get("gmail")
    assert (gmail.rate_per_s, gmail.max_connections, gmail.source) == (3.0, 2, "config")
    assert table.match("googlemail.com").name == "gmail"  # file suffixes kept
    assert table.match("aspmx.l.google.com").name == "gmail"  # longer suffix still wins
    assert table.match("smtp.google.com").name == "gmail"
    assert table.match("mx.google.com").name == "corp"  # the config claims google.com


def test_missing_or_bad_table_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_table(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[providers]]\nname = 1\n")
    with pytest.raises(ConfigError):
        load_table(bad)
    assert DEFAULT_TABLE_PATHS[-1].exists()  # the packaged table (engine/data/providers.toml)


async def test_overrides_are_used_offline() -> None:
    dns = FakeDns({})
    r = ProviderResolver(
        TABLE, DnsConfig(overrides={"Example.com": ["alt2.aspmx.l.google.com"]}), dns
    )
    assert (await r.resolve("example.COM")).name == "gmail"
    assert dns.calls == []


async def test_cache_hits_do_not_query_again_and_expire() -> None:
    clock = FakeClock(0.0)
    dns = FakeDns({"shop.example": ["mx.zoho.com"]})
    r = ProviderResolver(TABLE, DnsConfig(cache_ttl_s=60), dns, clock=clock)
    assert (await r.resolve_many(["shop.example", "SHOP.example"]))["shop.example"].name == "zoho"
    assert r.cached("shop.example") is not None
    await r.resolve("shop.example")
    assert dns.calls == ["shop.example"]
    clock.advance(61)
    await r.resolve("shop.example")
    assert dns.calls == ["shop.example", "shop.example"]


async def test_no_mx_is_negatively_cached_as_its_own_group() -> None:
    clock = FakeClock(0.0)
    dns = FakeDns({"bare.example": []})
    r = ProviderResolver(TABLE, DnsConfig(negative_ttl_s=300), dns, clock=clock)
    assert (await r.resolve("bare.example")).name == "bare.example"
    clock.advance(299)
    await r.resolve("bare.example")
    assert len(dns.calls) == 1


async def test_concurrent_lookups_of_one_domain_are_coalesced() -> None:
    dns = FakeDns({"busy.example": ["mx.yandex.net"]}, delay=0.05)
    r = ProviderResolver(TABLE, DnsConfig(), dns)
    results = await asyncio.gather(*(r.resolve("busy.example") for _ in range(20)))
    assert {p.name for p in results} == {"yandex"}
    assert dns.calls == ["busy.example"]


async def test_dns_failure_falls_back_at_once_and_is_retried_later() -> None:
    clock = FakeClock(0.0)
    dns = FakeDns({})
    r = ProviderResolver(TABLE, DnsConfig(), dns, clock=clock)
    started = time.perf_counter()
    p = await r.resolve("broken.example")
    assert time.perf_counter() - started < 0.1
    assert (p.name, p.source) == ("broken.example", "fallback")
    dns.answers["broken.example"] = ["gmail-smtp-in.l.google.com"]
    assert (await r.resolve("broken.example")).source == "fallback"  # briefly cached
    clock.advance(31)
    assert (await r.resolve("broken.example")).name == "gmail"


async def test_dns_timeout_falls_back_within_the_configured_timeout() -> None:
    dns = FakeDns({"slow.example": ["mx.zoho.com"]}, delay=10)
    r = ProviderResolver(TABLE, DnsConfig(timeout_s=0.05), dns)
    started = time.perf_counter()
    results = await r.resolve_many(["slow.example", "fast.example"])
    assert time.perf_counter() - started < 1.0
    assert results["slow.example"].source == "fallback"
    assert r.failures == 2  # fast.example has no answer in the fake: SERVFAIL


async def test_a_crashing_resolver_never_raises_to_the_caller() -> None:
    async def boom(domain: str) -> list[str]:
        raise RuntimeError("resolver bug")

    r = ProviderResolver(TABLE, DnsConfig(), boom)
    assert (await r.resolve("x.example")).source == "fallback"
