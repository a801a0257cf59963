"""The Redis event stream platform services consume with their own consumer groups.

Key ``{prefix}:{events}:stream`` (one hash slot on Redis Cluster). One entry per event, flat
fields so ``XREADGROUP`` consumers can route without decoding JSON:
``v`` (format version, "1"), ``id`` (oltp.events id), ``tenant_id``, ``kind``, ``at`` (ISO 8601
UTC) and, when set, ``job_id``, ``message_id``, ``recipient``; ``event`` holds the whole event
as JSON (the same object webhooks receive). Delivery is at-least-once: dedupe on ``id``.

The :class:`Publisher` is the only writer. It tails ``oltp.events`` after a cursor kept in
``oltp.event_cursors`` and advances it only after ``XADD`` succeeded, so the send path never
waits on Redis (it only INSERTs the rows, in its own transaction) and a Redis outage delays the
stream without losing anything. One instance publishes at a time (a transaction-level advisory
lock taken per round); the others' rounds are no-ops.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import Counter
from collections.abc import Sequence

import asyncpg
import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from engine import metrics
from engine.config import Config, EventsConfig
from engine.events.model import Event, to_json
from engine.events.store import (
    Position,
    any_after,
    load_cursor,
    read_after,
    save_cursor,
    try_xact_lock,
)
from engine.luascript import LuaScript
from engine.periodic import Periodic, Retry, run_until

log = logging.getLogger("engine.events")

STREAM_CURSOR = "stream"
FORMAT_VERSION = "1"
_LOCK_KEY = 0x70657674  # "pevt": the publisher's advisory lock id
_MAX_BACKOFF_S = 5.0


def stream_key(prefix: str) -> str:
    """The event stream's Redis key for a ``[redis] prefix``."""
    return f"{prefix}:{{events}}:stream"


_PUBLISH = LuaScript("publish", "engine.events")
# MessagePack, not JSON, for the script's batch: cheaper to build here and for Redis to decode
# (the ``event`` field is itself JSON, which JSON would have to escape and Lua to unescape).
_PACK = msgspec.msgpack.Encoder().encode


def entry_fields(event: Event) -> dict[str, str]:
    """One stream entry: flat routing fields plus the JSON ``event`` (see the module doc)."""
    flat = _flat(event, (event.at or dt.datetime.now(dt.UTC)).isoformat())
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _flat(event: Event, at: str) -> list[str]:
    """:func:`entry_fields` as the flat field, value, ... list XADD takes, built directly (no
    dict, no pair iteration: this runs for every event, on the loop thread); ``at`` is the
    event's time in ISO 8601, which the caller formats once for the events that share it."""
    out = [
        "v",
        FORMAT_VERSION,
        "id",
        str(event.id) if event.id is not None else "",
        "tenant_id",
        event.tenant_id,
        "kind",
        event.kind,
        "at",
        at,
        "event",
        to_json(event).decode(),
    ]
    if event.job_id is not None:
        out += ("job_id", str(event.job_id))
    if event.message_id:
        out += ("message_id", event.message_id)
    if event.recipient:
        out += ("recipient", event.recipient)
    return out


async def publish(
    redis: aioredis.Redis, prefix: str, events: Sequence[Event], *, maxlen: int
) -> bool:
    """XADD ``events`` in one script call (trimmed to about ``maxlen``); False if Redis failed.

    Never raises for Redis being down or slow: the failure is logged and counted, and the
    caller (the publisher) keeps its cursor so the same events go out on a later round.
    """
    if not events:
        return True
    key = stream_key(prefix)
    # The outcome writer stamps a whole batch with one time: format each distinct one once.
    now = dt.datetime.now(dt.UTC)
    iso: dict[dt.datetime, str] = {}
    flat = []
    for e in events:
        when = e.at or now
        at = iso.get(when)
        if at is None:
            at = iso[when] = when.isoformat()
        flat.append(_flat(e, at))
    try:
        await _PUBLISH.call(redis, [key], maxlen, _PACK(flat))
    except (RedisError, OSError, TimeoutError) as exc:
        metrics.EVENTS_PUBLISH_FAILURES.inc()
        log.warning(
            "event stream publish failed; will retry",
            extra={"error": str(exc), "events": len(events)},
        )
        return False
    for kind, n in Counter(e.kind for e in events).items():
        metrics.EVENTS_PUBLISHED.labels(kind).inc(n)
    newest = events[-1].at
    if newest is not None:
        metrics.EVENTS_STREAM_LAG.set(max(0.0, (dt.datetime.now(dt.UTC) - newest).total_seconds()))
    return True


class Publisher:
    """Copies new ``oltp.events`` rows to the Redis stream, in commit order, at least once."""

    def __init__(
        self, pool: asyncpg.Pool, redis: aioredis.Redis, prefix: str, cfg: EventsConfig
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.prefix = prefix
        self.cfg = cfg
        self._wake = asyncio.Event()
        # The cursor as the last round left it when that round found nothing (None: unknown,
        # or it published): while no row lies after it, a round is one index probe instead of
        # a transaction with four statements (the publisher polls ten times a second).
        self._idle_at: Position | None = None

    def wake(self) -> None:
        """Publish now rather than at the next poll (call after committing events)."""
        self._wake.set()

    async def publish_once(self) -> int:
        """One round: publish up to ``publish_batch`` events; returns how many (-1: Redis down).

        The cursor row is advanced in the same transaction that holds the advisory lock, after
        XADD succeeded: a crash between the two re-publishes the batch (at-least-once).
        """
        if self._idle_at is not None and not await any_after(self.pool, self._idle_at):
            return 0  # nothing was written since the last empty round
        self._idle_at = None
        async with self.pool.acquire() as conn, conn.transaction():
            if not await try_xact_lock(conn, _LOCK_KEY):
                return 0  # another instance is publishing this round
            cursor = await load_cursor(conn, STREAM_CURSOR)
            batch = await read_after(conn, cursor, self.cfg.publish_batch)
            if not batch:
                self._idle_at = cursor
                return 0
            events = [e for _, e in batch]
            if not await publish(self.redis, self.prefix, events, maxlen=self.cfg.stream_maxlen):
                return -1
            last: Position = batch[-1][0]
            await save_cursor(conn, STREAM_CURSOR, last)
        return len(batch)

    async def publish_round(self) -> float | None:
        """One round for the runner: a full batch means a backlog, so go on without waiting."""
        n = await self.publish_once()
        if n < 0:
            raise Retry  # publish() logged and counted the Redis failure
        return 0.0 if n == self.cfg.publish_batch else None

    def task(self) -> Periodic:
        """Poll every ``publish_interval_ms`` (or when woken); back off while failing, since a
        dead publisher would stop the stream silently."""
        interval = self.cfg.publish_interval_ms / 1000
        return Periodic(
            "event-publisher",
            self.publish_round,
            interval,
            wake=self._wake,
            retry_s=interval * 2,
            max_backoff_s=_MAX_BACKOFF_S,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop``."""
        await run_until(self.task(), stop)


async def run_publisher(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    cfg: Config,
    stop: asyncio.Event,
    *,
    publisher: Publisher | None = None,
) -> None:
    """The daemon's background task: publish ``oltp.events`` to the stream until ``stop``."""
    pub = publisher or Publisher(pool, redis, cfg.redis.prefix, cfg.events)
    await pub.run(stop)
