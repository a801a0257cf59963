"""A delay notice (RFC 3464 ``Action: delayed``) is a provider signal and an event, never a bounce.

An MTA that is still retrying (Postfix's ``delay_warning_time``, MailU's relay) may yet deliver
the message: the job keeps its state, nothing is suppressed, the soft-bounce count does not grow,
and shaping hears that the job's provider is deferring (``throttled`` for 421 / 4.7.x).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import asyncpg

from engine.inbound.effects import InboundItem, apply
from engine.inbound.evidence import analyse
from engine.shaping.model import DeliverySignal, SignalKind
from tests.integration.test_inbound import dsn
from tests.integration.test_inbound_trust import _relayed_job


class Signals:
    """The shaping side of the effects layer, recorded (the interface effects.py feeds)."""

    def __init__(self) -> None:
        self.seen: list[DeliverySignal] = []

    def record(self, signal: DeliverySignal | None) -> None:
        if signal is not None:
            self.seen.append(signal)

    async def resolve_providers(self, domains: Iterable[str]) -> Mapping[str, Any]:
        return {}


def delay_notice(rcpt: str, message_id: str, status: str, code: str, text: str) -> bytes:
    return (
        dsn(rcpt, message_id, status, code)
        .replace(b"Action: failed", b"Action: delayed")
        .replace(b"user unknown", text.encode())
        .replace(b"could not be delivered", b"is delayed; we will keep trying")
    )


async def test_delay_notices_are_signals_not_bounces(pool: asyncpg.Pool) -> None:
    mid = "<pm.d1.aaaaaaaaaaaaa@acme.example>"
    job_id = await _relayed_job(pool, "d1", "slow@gmail.test", mid)
    signals = Signals()
    throttle = delay_notice("slow@gmail.test", mid, "4.7.0", "421", "try again later")
    busy = delay_notice("slow@gmail.test", mid, "4.4.1", "450", "connection timed out")
    for raw in (throttle, busy, throttle):
        a = analyse(raw, None)
        item = InboundItem(0, a.report, job_id, False, "192.0.2.1", "", a.evidence)
        effects = await apply(pool, [item], shaping=signals)
        assert [e.kind for e in effects] == ["delayed"]

    assert await pool.fetchval("SELECT state FROM queue.jobs WHERE id = $1", job_id) == "relayed"
    assert await pool.fetchval("SELECT count(*) FROM oltp.suppressions") == 0
    events = await pool.fetch(
        "SELECT kind, reply FROM oltp.events WHERE job_id = $1 AND kind <> 'queued' ORDER BY id",
        job_id,
    )
    assert [e["kind"] for e in events] == ["delayed"] * 3
    assert "421" in events[0]["reply"] and "try again later" in events[0]["reply"]
    assert [s.kind for s in signals.seen] == [
        SignalKind.THROTTLED,
        SignalKind.DEFERRED,
        SignalKind.THROTTLED,
    ]
    assert not any(s.attempt for s in signals.seen)  # the relay's 250 already counted it

    # The job can still bounce for real afterwards, and that counts.
    a = analyse(dsn("slow@gmail.test", mid, "5.1.1", "550"), None)
    item = InboundItem(0, a.report, job_id, False, "192.0.2.1", "", a.evidence)
    assert [e.kind for e in await apply(pool, [item], shaping=signals)] == ["bounced_hard"]
    assert await pool.fetchval("SELECT state FROM queue.jobs WHERE id = $1", job_id) == "bounced"


def success_notice(rcpt: str, message_id: str, action: str) -> bytes:
    return (
        dsn(rcpt, message_id, "2.0.0", "250")
        .replace(b"Action: failed", f"Action: {action}".encode())
        .replace(b"user unknown", b"Ok: queued as 4XyZ")
        .replace(b"could not be delivered", b"was successfully relayed")
    )


async def test_success_notices_are_delivered_events(pool: asyncpg.Pool) -> None:
    mid = "<pm.d2.aaaaaaaaaaaaa@acme.example>"
    job_id = await _relayed_job(pool, "d2", "fine@gmail.test", mid)
    signals = Signals()
    for action in ("relayed", "delivered"):
        a = analyse(success_notice("fine@gmail.test", mid, action), None)
        assert a.report.recipients[0].action == action
        item = InboundItem(0, a.report, job_id, False, "192.0.2.1", "", a.evidence)
        effects = await apply(pool, [item], shaping=signals)
        assert [e.kind for e in effects] == ["delivered"]
    assert await pool.fetchval("SELECT state FROM queue.jobs WHERE id = $1", job_id) == "relayed"
    assert await pool.fetchval("SELECT count(*) FROM oltp.suppressions") == 0
    rows = await pool.fetch(
        "SELECT kind, reason, reply, data FROM oltp.events WHERE job_id = $1"
        " AND kind = 'delivered' ORDER BY id",
        job_id,
    )
    assert len(rows) == 2
    assert "250" in rows[0]["reply"] and "queued as 4XyZ" in rows[0]["reply"]
    assert rows[0]["reason"] == "2.0.0"
    assert signals.seen == []  # the relay's 250 already fed shaping; no second success

    # A success notice after a bounce (a forged or confused one) does not undo the bounce.
    a = analyse(dsn("fine@gmail.test", mid, "5.1.1", "550"), None)
    item = InboundItem(0, a.report, job_id, False, "192.0.2.1", "", a.evidence)
    assert [e.kind for e in await apply(pool, [item], shaping=signals)] == ["bounced_hard"]
    a = analyse(success_notice("fine@gmail.test", mid, "relayed"), None)
    item = InboundItem(0, a.report, job_id, False, "192.0.2.1", "", a.evidence)
    assert [e.kind for e in await apply(pool, [item], shaping=signals)] == ["delivered"]
    assert await pool.fetchval("SELECT state FROM queue.jobs WHERE id = $1", job_id) == "bounced"
