"""Bulk message actions against real PostgreSQL: what each changes, what the claim and the
outcome writer then do with held, cancelled and in-flight jobs, and the backlog count."""

from __future__ import annotations

import asyncpg
import orjson
import pytest

from engine import audit
from engine.enqueue import enqueue
from engine.errors import UsageError
from engine.messages import actions, tracing
from engine.store import backlog as backlog_store
from engine.store import feeding, tenants
from engine.store import jobs as job_store
from engine.store.message_actions import BulkAction, Selection


def _job(i: int, to: str, campaign: str | None = "spring", tenant: str = "acme") -> bytes:
    doc: dict[str, object] = {
        "tenant_id": tenant,
        "idempotency_key": f"k{i}",
        "from": "news@acme.example",
        "to": to,
        "text": "hi",
    }
    if campaign:
        doc["campaign_id"] = campaign
    return orjson.dumps(doc)


async def _setup(pool: asyncpg.Pool) -> list[int]:
    await tenants.add(pool, "acme")
    await tenants.add(pool, "beta")
    items = [_job(i, f"u{i}@Example.COM") for i in range(6)]
    items += [
        _job(10, "v@other.net", campaign=None),
        _job(11, "w@example.com", campaign=None, tenant="beta"),
    ]
    res = await enqueue(pool, items, max_message_bytes=10**6, max_age_s=3600)
    return [r.job_id for r in res if r.job_id is not None]


async def _states(pool: asyncpg.Pool) -> dict[int, str]:
    return {r["id"]: r["state"] for r in await pool.fetch("SELECT id, state FROM queue.jobs")}


async def test_dry_run_counts_and_changes_nothing(pool: asyncpg.Pool) -> None:
    ids = await _setup(pool)
    sel = Selection(campaign_id="spring")
    dry = await actions.run(pool, BulkAction.CANCEL, sel, actor="t", dry_run=True)
    assert (dry.affected, dry.in_flight, dry.dry_run) == (6, 0, True)
    assert set((await _states(pool)).values()) == {"queued"}
    by_domain = Selection(domain="example.com.")  # case and trailing dot do not matter
    dry = await actions.run(pool, BulkAction.HOLD, by_domain, actor="t", dry_run=True)
    assert dry.affected == 7  # acme's six and beta's one
    both = Selection(domain="example.com", tenant_id="beta")
    assert (await actions.run(pool, BulkAction.HOLD, both, actor="t", dry_run=True)).affected == 1
    assert await audit.entries(pool) == []  # a dry run is not an action
    assert len(ids) == 8


async def test_empty_selection_is_refused(pool: asyncpg.Pool) -> None:
    await _setup(pool)
    with pytest.raises(UsageError, match="needs a selection"):
        await actions.run(pool, BulkAction.CANCEL, Selection(), actor="t")
    assert set((await _states(pool)).values()) == {"queued"}


async def test_hold_keeps_jobs_from_the_claim_until_released(pool: asyncpg.Pool) -> None:
    ids = await _setup(pool)
    held = await actions.run(pool, BulkAction.HOLD, Selection(sender="NEWS@acme.example"),
                             actor="cli:op")  # fmt: skip
    assert held.affected == 8
    assert (await backlog_store.read(pool)).by_state() == {"queued": 0, "deferred": 0, "held": 8}
    # A stream entry pushed before the hold finds nothing to claim.
    assert await job_store.claim(pool, ids, owner="w1", lease_s=30) == []
    async with pool.acquire() as conn:
        assert await feeding.take_due(conn, [100, 100, 100]) == []  # the feeder skips them
    again = await actions.run(pool, BulkAction.HOLD, Selection(tenant_id="acme"), actor="t")
    assert again.affected == 0  # already held
    released = await actions.run(pool, BulkAction.RELEASE, Selection(job_id=ids[0]), actor="t")
    assert released.affected == 1
    claimed = await job_store.claim(pool, ids, owner="w1", lease_s=30)
    assert [c.id for c in claimed] == [ids[0]]
    tl = await tracing.show(pool, ids[0])
    assert tl is not None
    assert [e.kind for e in tl.events] == ["queued", "held", "released"]
    assert tl.events[1].data == {"by": "cli:op"} and tl.events[1].reason == "operator"
    assert [e.action for e in await audit.entries(pool)] == ["messages.release", "messages.hold",
                                                             "messages.hold"]  # fmt: skip


async def test_retry_makes_deferred_jobs_due(pool: asyncpg.Pool) -> None:
    ids = await _setup(pool)
    await pool.execute(
        "UPDATE queue.jobs SET state = 'deferred', next_attempt_at = now() + interval '1 hour'"
        " WHERE id = ANY($1)",
        ids[:3],
    )
    await actions.run(pool, BulkAction.HOLD, Selection(job_id=ids[2]), actor="t")
    res = await actions.run(pool, BulkAction.RETRY, Selection(campaign_id="spring"), actor="t")
    assert res.affected == 2  # the held one waits for its release
    claimed = await job_store.claim(pool, ids, owner="w", lease_s=30)
    assert sorted(c.id for c in claimed) == sorted([*ids[:2], *ids[3:6], *ids[6:]])


async def test_in_flight_jobs_end_cancelled_or_held_unless_relayed(pool: asyncpg.Pool) -> None:
    ids = await _setup(pool)
    claimed = await job_store.claim(pool, ids[:4], owner="w", lease_s=30)
    assert len(claimed) == 4
    res = await actions.run(pool, BulkAction.CANCEL, Selection(job_id=ids[0]), actor="t")
    assert (res.affected, res.in_flight) == (0, 1)
    await actions.run(pool, BulkAction.CANCEL, Selection(job_id=ids[1]), actor="t")
    await actions.run(pool, BulkAction.HOLD, Selection(job_id=ids[2]), actor="t")
    cancel_rest = await actions.run(pool, BulkAction.CANCEL, Selection(campaign_id="spring"),
                                    actor="t")  # fmt: skip
    assert cancel_rest.affected == 2  # ids[4], ids[5]: waiting
    assert cancel_rest.in_flight == 2  # ids[2] (held) and ids[3]: in flight, not yet marked
    # The attempts end: ids[0] deferred -> cancelled; ids[1] relayed -> stays relayed;
    # ids[2] held and cancelled -> cancelled (cancel wins); ids[3]'s lease expires.
    async with pool.acquire() as conn:
        rows = await job_store.write_outcomes(
            conn,
            "w",
            [
                job_store.OutcomeRow(ids[0], 1, "deferred", next_attempt_in_s=60, code=451),
                job_store.OutcomeRow(ids[1], 1, "relayed", code=250),
                job_store.OutcomeRow(ids[2], 1, "deferred", next_attempt_in_s=60, code=421),
            ],
        )
    assert {r["id"]: r["state"] for r in rows} == {
        ids[0]: "cancelled",
        ids[1]: "relayed",
        ids[2]: "cancelled",
    }
    await pool.execute("UPDATE queue.jobs SET lease_until = now() - interval '1 s'"
                       " WHERE id = $1", ids[3])  # fmt: skip
    assert await job_store.claim(pool, [ids[3]], owner="w2", lease_s=30) == []  # not re-sent
    assert await job_store.release_leases(pool) == 1
    states = await _states(pool)
    assert [states[i] for i in ids[:6]] == ["cancelled", "relayed", "cancelled", "cancelled",
                                           "cancelled", "cancelled"]  # fmt: skip
    finished = await pool.fetchval(
        "SELECT count(*) FROM queue.jobs WHERE state = 'cancelled' AND finished_at IS NOT NULL"
    )
    assert finished == 5


async def test_hold_in_flight_parks_the_job_after_its_attempt(pool: asyncpg.Pool) -> None:
    ids = await _setup(pool)
    await job_store.claim(pool, ids[:1], owner="w", lease_s=30)
    res = await actions.run(pool, BulkAction.HOLD, Selection(job_id=ids[0]), actor="t")
    assert res.in_flight == 1
    async with pool.acquire() as conn:
        await job_store.write_outcomes(
            conn, "w", [job_store.OutcomeRow(ids[0], 1, "deferred", next_attempt_in_s=0.0)]
        )
    assert await job_store.claim(pool, ids[:1], owner="w", lease_s=30) == []
    assert (await backlog_store.read(pool)).waiting["held"]["normal"] == 1
    await actions.run(pool, BulkAction.RELEASE, Selection(job_id=ids[0]), actor="t")
    assert len(await job_store.claim(pool, ids[:1], owner="w", lease_s=30)) == 1


async def test_search_filters_and_pages(pool: asyncpg.Pool) -> None:
    ids = await _setup(pool)
    page = await tracing.search(pool, tracing.SearchFilter(campaign_id="spring"), limit=4)
    assert [m.id for m in page.messages] == sorted(ids[:6], reverse=True)[:4]
    rest = await tracing.search(
        pool, tracing.SearchFilter(campaign_id="spring"), limit=4, after=page.next
    )
    assert [m.id for m in rest.messages] == sorted(ids[:6], reverse=True)[4:]
    assert rest.next is None
    created = await pool.fetchval("SELECT created_at FROM queue.jobs WHERE id = $1", ids[0])
    window = tracing.SearchFilter(since=created, sender="news@acme.example", priority=1)
    assert len((await tracing.search(pool, window)).messages) == 8
    before = tracing.SearchFilter(until=created)
    assert (await tracing.search(pool, before)).messages == []
    by_tenant = tracing.SearchFilter(tenant_id="beta", state="queued")
    assert [m.recipient for m in (await tracing.search(pool, by_tenant)).messages] == [
        "w@example.com"
    ]


async def test_release_keeps_a_future_send_at(pool: asyncpg.Pool) -> None:
    ids = await _setup(pool)
    await pool.execute(
        "UPDATE queue.jobs SET send_at = now() + interval '1 hour',"
        " next_attempt_at = now() + interval '1 hour' WHERE id = $1",
        ids[0],
    )
    await actions.run(pool, BulkAction.HOLD, Selection(campaign_id="spring"), actor="t")
    await actions.run(pool, BulkAction.RELEASE, Selection(campaign_id="spring"), actor="t")
    due = await pool.fetch(
        "SELECT id FROM queue.jobs WHERE next_attempt_at <= now() AND id = ANY($1)", ids[:6]
    )
    assert sorted(r["id"] for r in due) == sorted(ids[1:6])  # the scheduled one waits its time
    later = await pool.fetchval(
        "SELECT next_attempt_at - now() > interval '50 minutes' FROM queue.jobs WHERE id = $1",
        ids[0],
    )
    assert later is True
