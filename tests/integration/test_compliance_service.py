"""The compliance verdict as a tenant's senders feel it: stored with reasons; on_fail = block
pauses every sender of the domain (visible reason), a later pass lifts only that pause;
throttle records a rate ceiling; a new sender of a blocked domain is paused at first use."""

from __future__ import annotations

import asyncpg
import pytest

from engine.compliance import quota, service, store
from engine.config import Config
from engine.dkim.keys import generate_key
from engine.errors import ComplianceDnsError
from engine.store import senders, tenants
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
