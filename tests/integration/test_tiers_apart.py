"""The content and olap tiers on a second PostgreSQL server (docs/scaling.md, "Tiers on
separate servers"): the daemon end to end, the olap outbox exactly once through an outage of
the olap server and a crash of its drainer, the readers and sweeps of each tier."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import aiosmtplib
import asyncpg
import msgspec
import orjson
import pytest

from engine.config import Config
from engine.daemon import Daemon
from engine.demo import write_toml
from engine.enqueue import enqueue
from engine.errors import MigrationError
from engine.gdpr.erase import erase
from engine.olap_drain import Drainer
from engine.retention import run as run_retention
from engine.servers import ThrowawayPostgres, free_port
from engine.store import content as content_store
from engine.store import facts, olap_outbox, quota, tenants
from engine.store import pool as pool_mod
from engine.store.domains import publish_rules
from engine.store.migrate import migrate_tiers
from tests.conftest import make_config
from tests.fakes.mailu import FakeMailU
from tests.integration.test_inbound import SECRET, VERP_DOMAIN, arf, dkim_key, dsn

pytestmark = pytest.mark.timeout(180)

TOKEN = "t" * 32
AGE_BODIES = "UPDATE content.email_content SET created_at = now() - interval '3 days'"


@pytest.fixture(autouse=True)
async def _content_guard_off(clean_db: str) -> AsyncIterator[None]:
    """The session database is shared: the guard a content-apart start installs (migration
    141) is removed after each test here."""
    yield
    conn = await asyncpg.connect(clean_db)
    try:
        await conn.execute("SELECT engine.set_content_apart(false)")
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def second_pg() -> Iterator[ThrowawayPostgres]:
    """Another PostgreSQL server, for the tiers that live apart."""
    with ThrowawayPostgres() as pg:
        yield pg


async def _new_database(server_dsn: str) -> str:
    name = f"tier_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return server_dsn.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
async def apart_dsn(second_pg: ThrowawayPostgres) -> str:
    """A fresh database on the second server."""
    return await _new_database(second_pg.dsn)


def job(i: int, to: str, campaign: str = "c1") -> bytes:
    return orjson.dumps(
        {
            "tenant_id": "acme",
            "idempotency_key": f"k{i}",
            "from": "news@acme.example",
            "to": to,
            "subject": "hello",
            "text": f"hi {i % 3}",
            "campaign_id": campaign,
        }
    )


def apart_config(
    main: str, prefix: str, mailu: FakeMailU, tmp_path: Path, *, content: str | None, olap: str
) -> Config:
    database: dict[str, object] = {"olap": {"dsn": olap}}
    if content is not None:
        database["content"] = {"dsn": content}
    return make_config(
        main,
        prefix,
        database=database,
        relay={"nodes": [{"name": "n0", "host": "127.0.0.1", "port": mailu.port, "tls": "none"}]},
        queue={"feeder_interval_s": 0.1, "retry_base_s": 0.2, "retry_max_s": 1.0},
        shaping={"enabled": False},
        dkim=dkim_key(tmp_path),
        inbound={
            "listen": "127.0.0.1:0",
            "verp_domain": VERP_DOMAIN,
            "verp_secret": SECRET,
            "fbl_addresses": ["fbl@acme.example"],
        },
        admin={"listen": "127.0.0.1:0", "token": TOKEN},
        security={"enforce_sender_domains": False},
    )


async def _wait(db: asyncpg.Pool, sql: str, want: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        try:
            got = await db.fetchval(sql)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            got = exc
        if got == want:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{sql!r}: got {got!r}, want {want!r}")


@pytest.fixture
async def other(apart_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(apart_dsn, min_size=1, max_size=3)
    yield p
    await p.close()


async def _start(cfg: Config) -> tuple[Daemon, asyncio.Task[int]]:
    daemon = Daemon(cfg, None)
    return daemon, asyncio.create_task(daemon.run())


async def _stop(daemon: Daemon, task: asyncio.Task[int]) -> None:
    daemon._on_stop(__import__("signal").SIGTERM)
    assert await asyncio.wait_for(task, 20) == 0


async def test_daemon_with_content_and_olap_on_another_server(
    pool: asyncpg.Pool,
    clean_db: str,
    redis_prefix: str,
    mailu: FakeMailU,
    tmp_path: Path,
    apart_dsn: str,
    other: asyncpg.Pool,
) -> None:
    """Enqueue, relay, a bounce and a complaint: counts once on the olap server, content and
    raw inbound messages on the content server, none of either on the main one."""
    cfg = apart_config(clean_db, redis_prefix, mailu, tmp_path, content=apart_dsn, olap=apart_dsn)
    await migrate_tiers(cfg.database)
    await tenants.add(pool, "acme")
    tiers = await pool_mod.connect_tiers(cfg.database, pool)
    try:
        assert tiers.content_apart and tiers.olap_apart
        jobs = [job(i, f"user{i}@example.com") for i in range(20)]
        jobs += [job(20, "gone@example.com"), job(21, "angry@example.com")]
        res = await enqueue(
            pool, jobs, max_message_bytes=10**6, max_age_s=3600, content_pool=tiers.content
        )
        assert all(r.error is None for r in res), res
    finally:
        await tiers.close()
    # The SQL path cannot store content on another server: refused, with the reason. (The
    # session database keeps the [security] rules another test's daemon published: the job
    # must pass them to reach the content insert.)
    await publish_rules(clean_db, cfg.security)
    with pytest.raises(asyncpg.FeatureNotSupportedError, match="another server"):
        await pool.fetchval(
            "SELECT engine.enqueue($1::jsonb)", orjson.loads(job(99, "x@e.example"))
        )
    daemon, task = await _start(cfg)
    try:
        await _wait(pool, "SELECT count(*) FROM queue.jobs WHERE state = 'relayed'", 22)
        rows = {r["recipient"]: r for r in await pool.fetch("SELECT * FROM queue.jobs")}
        gone, angry = rows["gone@example.com"], rows["angry@example.com"]
        verp_addr = next(m.mail_from for m in mailu.received if "gone@" in m.rcpt_tos[0])
        received = next(m.data for m in mailu.received if "angry@" in m.rcpt_tos[0])
        assert daemon.inbound is not None and daemon.inbound.port
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=daemon.inbound.port)
        await smtp.connect()
        await smtp.sendmail("", [verp_addr], dsn("gone@example.com", gone["message_id"]))
        await smtp.sendmail(
            "fbl@isp.example",
            ["fbl@acme.example"],
            arf("angry@example.com", angry["message_id"], received),
        )
        await smtp.quit()
        await _wait(pool, f"SELECT state FROM queue.jobs WHERE id = {gone['id']}", "bounced")
        await _wait(pool, f"SELECT state FROM queue.jobs WHERE id = {angry['id']}", "complained")
        await _wait(
            other,
            "SELECT count(*) FROM content.inbound_messages WHERE processed_at IS NOT NULL",
            2,
        )
        await _wait(other, "SELECT sum(complained) FROM olap.daily_stats", 1)
        await _wait(pool, "SELECT count(*) FROM queue.olap_outbox", 0)
        # The admin API reads each tier on its server: a template stored on the content one,
        # the campaign's counters from the olap one.
        assert daemon.admin_address is not None
        base = f"http://127.0.0.1:{daemon.admin_address[1]}/v1/campaigns/c2"
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            put = await http.put(
                base, json={"tenant_id": "acme", "subject": "Hi", "text": "{{ name }}"}
            )
            assert put.status == 200, await put.text()
            stats = await http.get(base.replace("c2", "c1") + "/stats?tenant=acme")
            assert stats.status == 200, await stats.text()
            assert (await stats.json())["totals"]["relayed"] == 22
            # A templated job: its template version read on the content server at enqueue,
            # its body rendered from the template read there at send time.
            posted = await http.post(
                base.replace("/campaigns/c2", "/messages"),
                json=[
                    {
                        "tenant_id": "acme",
                        "idempotency_key": "t1",
                        "from": "news@acme.example",
                        "to": "ann@example.com",
                        "campaign_id": "c2",
                        "variables": {"name": "Ann Example"},
                    }
                ],
            )
            assert posted.status == 200, await posted.text()
        await _wait(pool, "SELECT state FROM queue.jobs WHERE idempotency_key = 't1'", "relayed")
        ann = next(m.data for m in mailu.received if m.rcpt_tos[0] == "ann@example.com")
        assert b"Ann Example" in ann
        await _wait(other, "SELECT sum(relayed) FROM olap.daily_stats", 23)
        await _wait(pool, "SELECT count(*) FROM queue.olap_outbox", 0)
        assert await other.fetchval("SELECT count(*) FROM content.campaign_templates") == 1
    finally:
        await _stop(daemon, task)
    assert mailu.count() == 23 and not mailu.duplicates()
    got = await other.fetchrow(
        "SELECT sum(sent) s, sum(relayed) r, sum(bounced_hard) b, sum(complained) c"
        " FROM olap.daily_stats"
    )
    assert tuple(got) == (23, 23, 1, 1)
    days = await facts.campaign_days(other, "acme", "c1")
    (counts,) = days.values()
    assert counts == {"relayed": 22, "bounced": 1, "complained": 1}
    assert (
        await other.fetchval("SELECT sum(n) FROM olap.latency_histogram WHERE kind = 'relay'") == 23
    )
    # Nothing of either tier on the main server; the bodies (4 distinct) on the other one.
    for table in ("olap.daily_stats", "olap.outcome_facts", "content.email_content"):
        assert await pool.fetchval(f"SELECT count(*) FROM {table}") == 0, table
    assert await pool.fetchval("SELECT count(*) FROM content.inbound_messages") == 0
    assert await other.fetchval("SELECT count(*) FROM content.email_content") == 4  # + t1 base
    assert await other.fetchval("SELECT count(*) FROM queue.jobs") == 0
    assert await other.fetchval("SELECT count(*) FROM olap.outbox_applied") <= 1000


async def test_olap_server_down_sending_goes_on_and_counts_catch_up_once(
    pool: asyncpg.Pool, clean_db: str, redis_prefix: str, mailu: FakeMailU, tmp_path: Path
) -> None:
    """The olap server stops mid-run: every job is still relayed, the outbox grows, a daemon
    restarted meanwhile starts and sends, and once the server is back the counts catch up to
    exactly the jobs sent."""
    with ThrowawayPostgres() as olap_pg:
        olap_dsn = await _new_database(olap_pg.dsn)
        cfg = apart_config(clean_db, redis_prefix, mailu, tmp_path, content=None, olap=olap_dsn)
        await tenants.add(pool, "acme")
        daemon, task = await _start(cfg)
        try:
            first = [job(i, f"a{i}@example.com") for i in range(30)]
            await enqueue(pool, first, max_message_bytes=10**6, max_age_s=3600)
            await _wait(pool, "SELECT count(*) FROM queue.jobs WHERE state = 'relayed'", 30)
            olap_pg.stop(hard=True)
            second = [job(i, f"b{i}@example.com") for i in range(30, 90)]
            await enqueue(pool, second, max_message_bytes=10**6, max_age_s=3600)
            await _wait(pool, "SELECT count(*) FROM queue.jobs WHERE state = 'relayed'", 90)
            await asyncio.sleep(1.5)  # a few drain rounds fail meanwhile
            assert await pool.fetchval("SELECT count(*) FROM queue.olap_outbox") > 0
        finally:
            await _stop(daemon, task)
        # A restart while the olap server is still down: the daemon starts and sends.
        daemon, task = await _start(cfg)
        try:
            third = [job(i, f"c{i}@example.com") for i in range(90, 120)]
            await enqueue(pool, third, max_message_bytes=10**6, max_age_s=3600)
            await _wait(pool, "SELECT count(*) FROM queue.jobs WHERE state = 'relayed'", 120)
            olap_pg.start()
            await _wait(pool, "SELECT count(*) FROM queue.olap_outbox", 0, timeout=40)
        finally:
            await _stop(daemon, task)
        conn = await asyncpg.connect(olap_dsn)
        try:
            got = await conn.fetchrow(
                "SELECT sum(sent) s, sum(relayed) r FROM olap.daily_stats WHERE tenant_id = 'acme'"
            )
            facts_n = await conn.fetchval(
                "SELECT sum(n) FROM olap.outcome_facts WHERE outcome = 'relayed'"
            )
        finally:
            await conn.close()
        assert tuple(got) == (120, 120)
        assert facts_n == 120
        assert mailu.count() == 120 and not mailu.duplicates()


class _Crash(Exception):
    pass


async def _outbox_batches(pool: asyncpg.Pool, n: int) -> None:
    """``n`` outcome-like batches written to the outbox, each in its own transaction."""
    today = facts.day_of(None)
    for i in range(n):
        async with pool.acquire() as conn, conn.transaction():
            await olap_outbox.put(
                conn,
                [
                    (("acme", "news@acme.example", "gmail"), "relayed", 1),
                    (("beta", "x@beta.example", ""), "sent", 2),
                ],
                [facts.Fact("acme", today, "c1", "news@acme.example", "gmail", "relayed")],
                [facts.Latency("acme", today, "c1", "relay", 120.0 + i)],
            )


async def _totals(olap: asyncpg.Pool) -> tuple[int, int, int, int]:
    row = await olap.fetchrow(
        "SELECT (SELECT coalesce(sum(relayed), 0) FROM olap.daily_stats"
        " WHERE tenant_id = 'acme') a,"
        " (SELECT coalesce(sum(sent), 0) FROM olap.daily_stats WHERE tenant_id = 'beta') b,"
        " (SELECT coalesce(sum(n), 0) FROM olap.outcome_facts) f,"
        " (SELECT coalesce(sum(n), 0) FROM olap.latency_histogram) l"
    )
    return (row["a"], row["b"], row["f"], row["l"])


async def test_drainer_crash_between_commits_counts_nothing_twice(
    pool: asyncpg.Pool, clean_db: str, redis_prefix: str, apart_dsn: str, other: asyncpg.Pool
) -> None:
    """The drainer dies after the olap commit and before deleting the outbox rows: the next
    drainer (a restart) deletes them without counting them again."""
    await migrate_tiers(
        make_config(clean_db, redis_prefix, database={"olap": {"dsn": apart_dsn}}).database
    )
    await _outbox_batches(pool, 25)
    assert await pool.fetchval("SELECT count(*) FROM queue.olap_outbox") == 50  # 2 tenants

    async def crash() -> None:
        raise _Crash

    with pytest.raises(_Crash):
        await Drainer(pool, other, batch=30, between_commits=crash).round()
    assert await _totals(other) == (15, 30, 15, 15)  # 30 rows: 15 batches of both tenants
    assert await pool.fetchval("SELECT count(*) FROM queue.olap_outbox") == 50
    # The restarted drainer: the 30 applied rows are deleted uncounted, the rest counted.
    drained = await Drainer(pool, other, batch=30).drain()
    assert drained == 50
    assert await _totals(other) == (25, 50, 25, 25)
    assert await pool.fetchval("SELECT count(*) FROM queue.olap_outbox") == 0
    await Drainer(pool, other, batch=30).round()  # drops the marks of the deleted rows
    assert await other.fetchval("SELECT count(*) FROM olap.outbox_applied") == 0
    # Two drainers at once (two daemons): still once.
    await _outbox_batches(pool, 40)
    await asyncio.gather(*(Drainer(pool, other, batch=7).drain() for _ in range(3)))
    for _ in range(3):
        await Drainer(pool, other, batch=7).drain()
    assert await _totals(other) == (65, 130, 65, 65)
    assert await pool.fetchval("SELECT count(*) FROM queue.olap_outbox") == 0


async def test_readers_and_sweeps_use_each_tiers_server(
    pool: asyncpg.Pool, clean_db: str, redis_prefix: str, apart_dsn: str, other: asyncpg.Pool
) -> None:
    """The quota (oltp quotas + olap counts in two queries) and the retention sweep of bodies
    (listed on the content server, checked against the jobs here) with the tiers apart."""
    cfg = make_config(
        clean_db,
        redis_prefix,
        database={"content": {"dsn": apart_dsn}, "olap": {"dsn": apart_dsn}},
        retention={"content_days": 1},
    )
    await migrate_tiers(cfg.database)
    await tenants.add(pool, "acme")
    await quota.set_daily_quota(pool, "acme", 5)
    async with other.acquire() as conn:
        await conn.execute(
            "INSERT INTO olap.daily_stats (tenant_id, day, sender, provider, relayed)"
            " VALUES ('acme', (now() AT TIME ZONE 'UTC')::date, 's', 'p', 5)"
        )
    assert await quota.over_quota(pool, other) == {"acme"}
    assert await quota.over_quota(pool) == set()  # the main server has no counts
    tiers = await pool_mod.connect_tiers(cfg.database, pool)
    try:
        res = await enqueue(
            pool,
            [job(1, "a@example.com"), job(2, "b@example.com"), job(3, "c@example.com")],
            max_message_bytes=10**6,
            max_age_s=3600,
            content_pool=tiers.content,
        )
        assert all(r.error is None for r in res)
        # Three bodies, all old; one job finished (its body may go), and an orphan of a
        # failed enqueue (no job at all).
        await pool.execute("UPDATE queue.jobs SET state = 'relayed' WHERE idempotency_key = 'k1'")
        await other.execute(
            "INSERT INTO content.email_content (tenant_id, sha256, codec, body, size)"
            " VALUES ('acme', '\\x00ff', 'json', '\\x7b7d', 2)"
        )
        await other.execute(
            "UPDATE content.email_content SET created_at = now() - interval '3 days'"
        )
        dry = await run_retention(pool, cfg, dry_run=True, tiers=tiers)
        assert dry.content == 2
        done = await run_retention(pool, cfg, tiers=tiers)
        assert done.content == 2
        assert await other.fetchval("SELECT count(*) FROM content.email_content") == 2
        # A body an enqueue reuses (job 5 has job 2's text) is young again: kept by the next
        # sweep, although no unfinished job uses it any more; job 3's body goes.
        await other.execute(
            "UPDATE content.email_content SET created_at = now() - interval '3 days'"
        )
        res = await enqueue(
            pool,
            [job(5, "e@example.com")],
            max_message_bytes=10**6,
            max_age_s=3600,
            content_pool=tiers.content,
        )
        assert res[0].error is None
        await pool.execute("UPDATE queue.jobs SET state = 'relayed'")
        again = await run_retention(pool, cfg, tiers=tiers)
        assert again.content == 1
        kept = await other.fetchval("SELECT count(*) FROM content.email_content")
        assert kept == 1
    finally:
        await tiers.close()


async def _show_content(config: Path, job_id: int) -> tuple[int, str]:
    """``engine messages show JOB --content`` in a subprocess: (exit code, stdout + stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "engine", "messages", "show", str(job_id), "--content", "--config", str(config)),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_lagging_content_reads_use_the_content_servers_replica(
    pool: asyncpg.Pool,
    clean_db: str,
    redis_prefix: str,
    apart_dsn: str,
    other: asyncpg.Pool,
    second_pg: ThrowawayPostgres,
    tmp_path: Path,
) -> None:
    """``[database.content] replica_dsn``: a traced message's content is read there (the CLI
    and the admin API's service function), from the content server when the replica has not
    received it yet or does not answer. The stand-in replica is a database of its own whose
    copy of the body the test writes, with another text, so the output says where it came
    from."""
    replica = await _new_database(second_pg.dsn)
    cfg = make_config(clean_db, redis_prefix, database={"content": {"dsn": apart_dsn}})
    await migrate_tiers(cfg.database)
    await migrate_tiers(make_config(replica, redis_prefix).database)
    await tenants.add(pool, "acme")
    tiers = await pool_mod.connect_tiers(cfg.database, pool)
    try:
        res = await enqueue(
            pool,
            [job(1, "a@example.com")],
            max_message_bytes=10**6,
            max_age_s=3600,
            content_pool=tiers.content,
        )
        job_id = res[0].job_id
        assert job_id is not None, res
    finally:
        await tiers.close()

    def write(replica_dsn: str) -> Path:
        path = tmp_path / "engine.toml"
        write_toml(
            path,
            {
                "database": {
                    "dsn": clean_db,
                    "content": {"dsn": apart_dsn, "replica_dsn": replica_dsn},
                },
                "redis": {"url": cfg.redis.url, "prefix": redis_prefix},
            },
        )
        return path

    # The replica has not received the body yet: the content server's copy.
    code, out = await _show_content(write(replica), job_id)
    assert code == 0 and "hi 1" in out, out
    # The replica's copy, when it has one.
    row = await other.fetchrow("SELECT tenant_id, sha256, size FROM content.email_content")
    assert row is not None
    stored = await content_store.load(other, [(row["tenant_id"], bytes(row["sha256"]))])
    (content,) = stored.values()
    copy = msgspec.json.encode(msgspec.structs.replace(content, text="from the replica"))
    conn = await asyncpg.connect(replica)
    try:
        await conn.execute(
            "INSERT INTO content.email_content (tenant_id, sha256, codec, body, size)"
            " VALUES ($1, $2, 'json', $3, $4)",
            row["tenant_id"],
            row["sha256"],
            copy,
            row["size"],
        )
    finally:
        await conn.close()
    code, out = await _show_content(write(replica), job_id)
    assert code == 0 and "from the replica" in out and "hi 1" not in out, out
    # A replica that does not answer: the content server's copy, after one failed attempt.
    dead = f"postgresql://engine@127.0.0.1:{free_port()}/engine"
    code, out = await _show_content(write(dead), job_id)
    assert code == 0 and "hi 1" in out, out


def test_content_and_olap_may_name_another_server_queue_and_oltp_may_not() -> None:
    """The config accepts content/olap apart (with their own replica, none by default),
    refuses queue/oltp apart with the reason, and a tier replica without its own server."""
    from engine import config as config_mod
    from engine.errors import ConfigError

    main = "postgresql://engine@db1:5432/engine"
    far = "postgresql://engine@db2:5432/engine"
    cfg = config_mod.parse(
        {
            "database": {
                "dsn": main,
                "replica_dsn": "postgresql://engine@db1r:5432/engine",
                "content": {"dsn": far},
                "olap": {"dsn": far, "replica_dsn": "postgresql://engine@db2r:5432/engine"},
            }
        }
    ).database
    assert cfg.apart("content") and cfg.apart("olap") and not cfg.apart("queue")
    assert cfg.servers == [main, far]
    assert cfg.for_tier("content").dsn == far and cfg.for_tier("content").replica_dsn is None
    assert cfg.for_tier("olap").replica_dsn == "postgresql://engine@db2r:5432/engine"
    assert cfg.for_tier("queue") is cfg
    for tier in ("queue", "oltp"):
        with pytest.raises(ConfigError, match=f"the {tier} tier cannot live apart"):
            config_mod.parse({"database": {"dsn": main, tier: {"dsn": far}}})
    with pytest.raises(ConfigError, match=r"database\.olap\.replica_dsn is set"):
        config_mod.parse({"database": {"dsn": main, "olap": {"replica_dsn": far}}})


async def test_one_database_under_two_dsns_is_refused(clean_db: str, redis_prefix: str) -> None:
    """A tier "apart" that is [database]'s own database under another name would get the
    content guard on its own tables: migrating refuses it, naming both DSNs."""
    assert "127.0.0.1" in clean_db
    alias = clean_db.replace("127.0.0.1", "localhost")
    cfg = make_config(clean_db, redis_prefix, database={"content": {"dsn": alias}})
    with pytest.raises(MigrationError, match="same database under two DSNs"):
        await migrate_tiers(cfg.database)


async def test_gdpr_erasure_sweeps_each_tiers_server(
    pool: asyncpg.Pool, clean_db: str, redis_prefix: str, apart_dsn: str, other: asyncpg.Pool
) -> None:
    """An erasure with content apart: no clear address left on either server, the bodies and
    raw bounces mentioning it gone from the content one, the jobs cancelled here."""
    from tests.integration.test_gdpr_erase import BOB, clear_mentions, compressed_mentions, seed

    cfg = make_config(clean_db, redis_prefix, database={"content": {"dsn": apart_dsn}})
    await migrate_tiers(cfg.database)
    tiers = await pool_mod.connect_tiers(cfg.database, pool)
    try:
        ids = await seed(pool, tiers.content)
        assert await clear_mentions(other, BOB, skip_tenant="other")
        result = await erase(pool, "acme", BOB, actor="cli:test", tiers=tiers)
    finally:
        await tiers.close()
    for server in (pool, other):
        assert await clear_mentions(server, BOB, skip_tenant="other") == []
    assert await compressed_mentions(other, BOB.encode()) == 0
    assert (result.jobs, result.jobs_cancelled, result.contents_deleted) == (2, 1, 1)
    assert result.inbound_deleted == 1
    state = await pool.fetchval("SELECT state FROM queue.jobs WHERE id = $1", ids["news-bob"])
    assert state == "cancelled"
    assert await other.fetchval("SELECT count(*) FROM content.email_content") == 2
    assert await other.fetchval("SELECT count(*) FROM content.inbound_messages") == 1
