"""A bounce that arrives before its job's relay outcome is written (the provider's DSN came
back through the node faster than the outcome writer flushed): it waits for the outcome.

Applied at once, it would set the job's final state while the job is still 'sending', and the
outcome (written only for a job still 'sending') would be dropped: no "relayed" event, no relay
node, message id or send day. Waiting, the history reads queued → relayed → bounced.
"""

from __future__ import annotations

import asyncpg

from engine.enqueue import enqueue
from engine.inbound.effects import InboundItem, apply
from engine.inbound.evidence import analyse
from engine.store import jobs as job_store
from engine.store import tenants
from tests.integration.test_inbound import dsn
from tests.integration.test_inbound_trust import job

MID = "<pm.race.aaaaaaaaaaaaa@acme.example>"


async def _kinds(pool: asyncpg.Pool, job_id: int) -> list[str]:
    rows = await pool.fetch("SELECT kind FROM oltp.events WHERE job_id = $1 ORDER BY id", job_id)
    return [r["kind"] for r in rows]


async def test_a_bounce_that_outruns_the_relay_outcome_waits_for_it(pool: asyncpg.Pool) -> None:
    await tenants.add(pool, "acme")
    (res,) = await enqueue(
        pool, [job("race", "gone@gmail.test")], max_message_bytes=10**6, max_age_s=3600
    )
    assert res.job_id is not None
    job_id = res.job_id
    (claimed,) = await job_store.claim(pool, [job_id], owner="w1", lease_s=60)
    a = analyse(dsn("gone@gmail.test", MID), None)
    item = InboundItem(0, a.report, job_id, False, "192.0.2.7", "", a.evidence)

    # The bounce first: it waits, nothing changes.
    (effect,) = await apply(pool, [item])
    assert (effect.kind, effect.job_id) == ("waiting", job_id)
    assert await pool.fetchval("SELECT state FROM queue.jobs WHERE id = $1", job_id) == "sending"
    assert await _kinds(pool, job_id) == ["queued"]
    assert await pool.fetchval("SELECT count(*) FROM oltp.suppressions") == 0

    # The relay outcome lands (the job still holds its lease), then the bounce applies.
    async with pool.acquire() as conn:
        written = await job_store.write_outcomes(
            conn,
            "w1",
            [
                job_store.OutcomeRow(
                    job_id, claimed.attempts, "relayed", code=250, node="mailu-1", message_id=MID
                )
            ],
        )
    assert [r["id"] for r in written] == [job_id]
    (effect,) = await apply(pool, [item])
    assert effect.kind == "bounced_hard"
    row = await pool.fetchrow(
        "SELECT state, relay_node, message_id, relayed_at FROM queue.jobs WHERE id = $1", job_id
    )
    assert (row["state"], row["relay_node"], row["message_id"]) == ("bounced", "mailu-1", MID)
    assert row["relayed_at"] is not None
    assert await pool.fetchval("SELECT count(*) FROM oltp.suppressions") == 1
