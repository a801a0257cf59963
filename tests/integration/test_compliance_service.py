"""The compliance verdict as a tenant's senders feel it: stored with reasons; on_fail = block
pauses every sender of the domain (visible reason), a later pass lifts only that pause;
throttle caps the domain's send rate in shaping (at once here, at the next refresh elsewhere);
a new sender of a blocked domain is paused at first use; the daemon's periodic task checks new
domains and pauses new addresses of blocked ones."""

from __future__ import annotations

import asyncpg
import pytest
import redis.asyncio as aioredis

from engine.compliance import service, store
from engine.config import Config
from engine.dkim.keys import generate_key
from engine.errors import ComplianceDnsError
from engine.shaping.clock import FakeClock
from engine.shaping.model import Level, ShapeRequest
from engine.shaping.shaper import Shaper
from engine.store import quota, senders, tenants
from tests.conftest import make_config

pytestmark = pytest.mark.timeout(60)

RELAY = "203.0.113.5"
_, TXT = generate_key("ed25519-sha256")


def zone(spf_ok: bool = True) -> dict[tuple[str, str], list[str]]:
    ip = RELAY if spf_ok else "198.51.100.1"
    return {
        ("acme.test", "TXT"): [f"v=spf1 ip4:{ip} -all"],
        ("_dmarc.acme.test", "TXT"): ["v=DMARC1; p=reject"],
        ("s1._domainkey.acme.test", "TXT"): [TXT],
        ("5.113.0.203.in-addr.arpa", "PTR"): ["mta.esp.test"],
        ("mta.esp.test", "A"): [RELAY],
    }


def resolver(z: dict[tuple[str, str], list[str]], *, broken: bool = False):  # type: ignore[no-untyped-def]
    async def resolve(name: str, rdtype: str) -> list[str]:
        if broken:
            raise ComplianceDnsError("SERVFAIL")
        return z.get((name, rdtype), [])

    return resolve


def config(cfg: Config, on_fail: str) -> Config:
    return make_config(
        cfg.database.dsn,
        cfg.redis.prefix,
        compliance={"relay_ips": [RELAY], "on_fail": on_fail, "throttle_rate_per_s": 0.5},
        shaping={"warmup": False, "burst_s": 4.0, "default_rate_per_s": 1000.0},
    )


async def setup(pool: asyncpg.Pool) -> None:
    await tenants.add(pool, "acme")
    await pool.execute(
        "INSERT INTO oltp.senders (tenant_id, address, domain) VALUES"
        " ('acme', 'news@acme.test', 'acme.test'), ('acme', 'ceo@acme.test', 'acme.test')"
    )
    await pool.execute(
        "INSERT INTO oltp.dkim_keys (tenant_id, domain, selector, algorithm, private_key_enc,"
        " public_txt, state, activated_at) VALUES ('acme', 'acme.test', 's1', 'ed25519-sha256',"
        " '\\x00', $1, 'active', now())",
        TXT,
    )


async def paused(pool: asyncpg.Pool) -> dict[str, str | None]:
    rows = await senders.find(pool, "news@acme.test") + await senders.find(pool, "ceo@acme.test")
    return {r.address: r.paused_reason for r in rows if r.paused}


async def test_block_pauses_with_reason_and_pass_lifts_it(pool: asyncpg.Pool, cfg: Config) -> None:
    await setup(pool)
    c = config(cfg, "block")
    verdict = await service.check_and_apply(
        pool, c, "acme", "acme.test", resolve=resolver(zone(False))
    )
    assert verdict.status == "fail" and verdict.action == "block"
    assert verdict.reasons and verdict.reasons[0].startswith("spf:")
    reasons = await paused(pool)
    assert set(reasons) == {"news@acme.test", "ceo@acme.test"}
    assert all(r and r.startswith("compliance: spf:") for r in reasons.values())

    # A DNS outage changes nothing: the block stays.
    v = await service.check_and_apply(
        pool, c, "acme", "acme.test", resolve=resolver({}, broken=True)
    )
    assert v.status == "error" and v.action == "block" and len(await paused(pool)) == 2

    # An operator pause on another address must survive the compliance un-block.
    await pool.execute(
        "INSERT INTO oltp.senders (tenant_id, address, domain, paused, paused_reason)"
        " VALUES ('acme', 'ops@acme.test', 'acme.test', true, 'paused by an operator')"
    )
    fixed = await service.check_and_apply(pool, c, "acme", "acme.test", resolve=resolver(zone()))
    assert fixed.status == "pass" and fixed.action == "none"
    assert await paused(pool) == {}
    (ops,) = await senders.find(pool, "ops@acme.test")
    assert ops.paused and ops.paused_reason == "paused by an operator"

    stored = await store.load(pool, "acme", "acme.test")
    assert stored is not None and stored.report.checks[0].check == "spf"


async def test_throttle_and_warn(pool: asyncpg.Pool, cfg: Config) -> None:
    await setup(pool)
    v = await service.check_and_apply(
        pool, config(cfg, "throttle"), "acme", "acme.test", resolve=resolver(zone(False))
    )
    assert v.action == "throttle" and v.rate_ceiling_per_s == 0.5
    assert await store.rate_ceilings(pool) == {("acme", "acme.test"): 0.5}
    assert await paused(pool) == {}
    v = await service.check_and_apply(
        pool, config(cfg, "warn"), "acme", "acme.test", resolve=resolver(zone(False))
    )
    assert v.action == "warn" and await store.rate_ceilings(pool) == {}


async def test_throttle_caps_the_domain_in_shaping(
    pool: asyncpg.Pool, cfg: Config, redis_client: aioredis.Redis
) -> None:
    await setup(pool)
    c = config(cfg, "throttle")
    clock = FakeClock(1_767_225_600.0 + 3600)
    shaper = Shaper(c, redis_client, clock=clock)

    def burst(sender: str, n: int = 10) -> list[ShapeRequest]:
        return [ShapeRequest("acme", sender, "gmail") for _ in range(n)]

    assert all(d.allowed for d in await shaper.acquire(burst("news@acme.test")))
    await service.check_and_apply(
        pool, c, "acme", "acme.test", resolve=resolver(zone(False)), shaper=shaper
    )
    clock.advance(60.0)  # whatever was spent before is paid back: only the new cap binds
    # 0.5 msg/s with 4 s of burst: 2 now, across every address of the domain, then one per 2 s.
    d = await shaper.acquire(burst("news@acme.test", 3) + burst("ceo@acme.test", 3))
    assert [x.allowed for x in d] == [True, True, False, False, False, False]
    assert {x.level for x in d if not x.allowed} == {Level.SENDER_DOMAIN}
    assert all(1.9 <= x.retry_after_s <= 2.1 for x in d if not x.allowed)
    # Another domain of the same tenant, and the same domain of another tenant, are not capped.
    assert all(d.allowed for d in await shaper.acquire(burst("news@other.test")))
    assert all(
        d.allowed
        for d in await shaper.acquire([ShapeRequest("globex", "news@acme.test", "gmail")] * 10)
    )

    # Another daemon instance learns the cap from PostgreSQL at its quota refresh.
    other = Shaper(c, redis_client, clock=clock)
    assert all(d.allowed for d in await other.acquire(burst("x@other.test", 1)))
    await other.refresh_quotas(pool)
    assert other.domain_ceilings == {("acme", "acme.test"): 0.5}
    assert not (await other.acquire(burst("news@acme.test", 1)))[0].allowed

    # Fixed DNS (or on_fail relaxed to warn): the cap is lifted at once.
    await service.check_and_apply(
        pool, c, "acme", "acme.test", resolve=resolver(zone()), shaper=shaper
    )
    clock.advance(5.0)
    assert all(d.allowed for d in await shaper.acquire(burst("news@acme.test")))
    await other.refresh_quotas(pool)
    assert other.domain_ceilings == {}


async def test_housekeep_checks_new_domains_and_pauses_new_addresses_of_blocked_ones(
    pool: asyncpg.Pool, cfg: Config
) -> None:
    await setup(pool)
    c = config(cfg, "block")
    done = await service.housekeep(pool, c, resolve=resolver(zone(False)))
    assert [(v.domain, v.action) for v in done] == [("acme.test", "block")]
    assert len(await paused(pool)) == 2
    # An operator lifts the block of one address on purpose: the next round leaves it alone.
    await senders.resume(pool, "acme", "ceo@acme.test")
    await pool.execute(
        "INSERT INTO oltp.senders (tenant_id, address, domain) VALUES ('acme', 'new@acme.test',"
        " 'acme.test')"
    )
    assert await service.housekeep(pool, c, resolve=resolver(zone(False))) == []  # not stale
    assert set(await paused(pool)) == {"news@acme.test"}
    (new,) = await senders.find(pool, "new@acme.test")
    assert new.paused and (new.paused_reason or "").startswith("compliance: spf:")


async def test_first_use_and_daily_due(pool: asyncpg.Pool, cfg: Config) -> None:
    await setup(pool)
    c = config(cfg, "block")
    assert await store.due(pool, 86400) == [("acme", "acme.test")]
    done = await service.check_due(pool, c, resolve=resolver(zone(False)))
    assert [v.domain for v in done] == ["acme.test"]
    assert await store.due(pool, 86400) == []
    await pool.execute(
        "INSERT INTO oltp.senders (tenant_id, address, domain) VALUES ('acme', 'new@acme.test',"
        " 'acme.test')"
    )
    v = await service.on_sender_first_use(
        pool, c, "acme", "new@acme.test", resolve=resolver(zone(False))
    )
    assert v.action == "block"
    (new,) = await senders.find(pool, "new@acme.test")
    assert new.paused and (new.paused_reason or "").startswith("compliance:")


async def test_daily_quota(pool: asyncpg.Pool) -> None:
    await tenants.add(pool, "acme")
    await tenants.add(pool, "free")
    assert await quota.set_daily_quota(pool, "acme", 100)
    assert not await quota.set_daily_quota(pool, "nobody", 1)
    await pool.execute(
        "INSERT INTO olap.daily_stats (tenant_id, day, sender, provider, relayed) VALUES"
        " ('acme', (now() AT TIME ZONE 'UTC')::date, 'a', 'gmail', 60),"
        " ('acme', (now() AT TIME ZONE 'UTC')::date, 'b', 'yahoo', 40),"
        " ('free', (now() AT TIME ZONE 'UTC')::date, 'a', 'gmail', 1000000)"
    )
    assert await quota.over_quota(pool) == {"acme"}
    (use,) = await quota.usage(pool, "acme")
    assert use.relayed_today == 100 and use.exhausted
    await quota.set_daily_quota(pool, "acme", None)
    assert await quota.over_quota(pool) == set()
    assert 0 < quota.seconds_to_reset() <= 86400
