"""Per-priority Redis streams with one consumer group shared by every daemon instance.

Entries carry only the job id and tenant; PostgreSQL holds the job. Entries are XACKed and
XDELed only after the job's outcome is committed, so a consumer that dies leaves its entries
pending for XAUTOCLAIM (or for the reaper, which notices its heartbeat is gone).
Every key carries the ``{q}`` hash tag so the streams live in one Redis Cluster slot.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

import msgspec
import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from engine.config import RedisConfig
from engine.errors import QueueError
from engine.model import Priority
from engine.redaction import redact
from engine.shaping.scripts import LuaScript

GROUP = "engine"
_PUSH = LuaScript("push", "engine.queue")
_TAKE_NAME = LuaScript("take_name", "engine.queue")


class Entry(msgspec.Struct, frozen=True):
    """One stream entry: which stream, its id, and the job it names."""

    stream: str
    entry_id: str
    job_id: int
    tenant_id: str


def connect(cfg: RedisConfig) -> aioredis.Redis:
    """A Redis client (lazy: the first command connects)."""
    return aioredis.Redis.from_url(
        cfg.url,
        socket_timeout=cfg.socket_timeout_s,
        socket_connect_timeout=cfg.socket_timeout_s,
        health_check_interval=30,
    )


def queue_error(exc: Exception, url: str) -> QueueError:
    """Wrap a redis error in one an operator can act on."""
    return QueueError(
        redact(f"Redis at {url} failed: {exc}"),
        hint="check [redis] url / ENGINE_REDIS__URL and that redis-server is running",
    )


class Streams:
    """The three priority streams and the group's bookkeeping keys."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        # What this process writes to its heartbeat key: who holds the consumer name (see
        # engine/queue/identity.py), so a successor on the same host can tell it is gone.
        self.holder = "1"
        self.keys = [f"{prefix}:{{q}}:stream:{p.label}" for p in Priority]
        self.epoch_key = f"{prefix}:{{q}}:epoch"

    def heartbeat_key(self, consumer: str) -> str:
        return f"{self.prefix}:{{q}}:alive:{consumer}"

    async def ensure_groups(self) -> None:
        """Create the streams and the consumer group (idempotent)."""
        for key in self.keys:
            try:
                await self.client.xgroup_create(key, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def check_epoch(self) -> bool:
        """True when Redis lost our data (flushed, restarted without persistence, replaced).

        The epoch key is written once; if it has vanished, every job PostgreSQL believes is
        on a stream must be pushed again.
        """
        if await self.client.exists(self.epoch_key):
            return False
        await self.client.set(self.epoch_key, secrets.token_hex(8), nx=True)
        await self.ensure_groups()
        return True

    async def push(self, jobs: Sequence[tuple[int, str, int]]) -> None:
        """XADD (job_id, tenant_id, priority) entries in one script call."""
        if not jobs:
            return
        # Job ids as strings: Lua numbers are doubles, printed with 14 significant digits.
        batch = orjson.dumps([(str(job_id), tenant, priority) for job_id, tenant, priority in jobs])
        await _PUSH.call(self.client, self.keys, batch)

    def _entries(self, reply: Any) -> list[Entry]:
        out: list[Entry] = []
        for stream, items in reply or []:
            name = stream.decode() if isinstance(stream, bytes) else stream
            for entry_id, fields in items:
                if not fields:  # deleted while pending: nothing to do but ack it
                    out.append(Entry(name, _s(entry_id), 0, ""))
                    continue
                out.append(Entry(name, _s(entry_id), int(fields[b"j"]), _s(fields[b"t"])))
        return out

    async def read(
        self, consumer: str, weights: Sequence[int], scale: int, block_ms: int
    ) -> list[Entry]:
        """Read new entries, high before normal before low in ``weights`` proportion.

        A non-blocking weighted read first; only when all streams are empty does it block on all
        three at once, so new work of any priority wakes the consumer immediately.
        """
        pipe = self.client.pipeline(transaction=False)
        for key, weight in zip(self.keys, weights, strict=True):
            pipe.xreadgroup(GROUP, consumer, {key: ">"}, count=max(1, weight * scale))
        entries: list[Entry] = []
        for reply in await pipe.execute():
            entries.extend(self._entries(reply))
        if entries or block_ms <= 0:
            return entries
        reply = await self.client.xreadgroup(
            GROUP,
            consumer,
            dict.fromkeys(self.keys, ">"),
            count=max(1, weights[0] * scale),
            block=block_ms,
        )
        return self._entries(reply)

    async def ack(self, entries: Sequence[Entry]) -> None:
        """XACK + XDEL in one pipeline, so stream length is the outstanding work."""
        if not entries:
            return
        by_stream: dict[str, list[str]] = {}
        for e in entries:
            by_stream.setdefault(e.stream, []).append(e.entry_id)
        pipe = self.client.pipeline(transaction=False)
        for stream, ids in by_stream.items():
            pipe.xack(stream, GROUP, *ids)
            pipe.xdel(stream, *ids)
        await pipe.execute()

    async def autoclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        """Take over entries that another consumer read and never acknowledged."""
        out: list[Entry] = []
        for key in self.keys:
            reply = await self.client.xautoclaim(key, GROUP, consumer, min_idle_ms, "0", count)
            out.extend(self._entries([(key, reply[1])]))
        return out

    async def depth(self) -> dict[str, int]:
        """Entries waiting per priority (XLEN: acked entries are deleted)."""
        pipe = self.client.pipeline(transaction=False)
        for key in self.keys:
            pipe.xlen(key)
        lengths = await pipe.execute()
        return {p.label: int(n) for p, n in zip(Priority, lengths, strict=True)}

    async def heartbeat(self, consumer: str, ttl_s: float) -> None:
        await self.client.set(self.heartbeat_key(consumer), self.holder, px=int(ttl_s * 1000))

    async def take_name(self, consumer: str, seen: bytes | None, holder: str, ttl_s: float) -> bool:
        """Hold ``consumer``'s heartbeat key if it still holds ``seen`` (None: no key)."""
        key = self.heartbeat_key(consumer)
        px = int(ttl_s * 1000)
        if seen is None:
            return bool(await self.client.set(key, holder, px=px, nx=True))
        taken = await _TAKE_NAME.call(self.client, [key], seen, holder, px)
        return bool(taken)

    async def holder_of(self, consumer: str) -> bytes | None:
        """The heartbeat value of ``consumer`` (None: no live holder)."""
        value = await self.client.get(self.heartbeat_key(consumer))
        return value.encode() if isinstance(value, str) else value

    async def take_pending(self, owner: str, me: str, count: int = 500) -> list[Entry]:
        """Move every entry ``owner`` read and never acknowledged to ``me``, with its fields.

        A consumer that is gone (or this process's predecessor under the same name) leaves
        entries whose jobs it may never have claimed; the caller makes those jobs pushable
        again and acknowledges the entries.
        """
        out: list[Entry] = []
        for key in self.keys:
            start = "-"
            while True:
                pending = await self.client.xpending_range(
                    key, GROUP, min=start, max="+", count=count, consumername=owner
                )
                if not pending:
                    break
                ids = [_s(p["message_id"]) for p in pending]  # type: ignore[arg-type]
                claimed = await self.client.xclaim(key, GROUP, me, 0, ids)  # type: ignore[arg-type]
                out.extend(self._entries([(key, claimed)]))
                if len(pending) < count:
                    break
                start = "(" + ids[-1]  # exclusive: claiming to oneself keeps them listed
        return out

    async def dead_consumers(self, me: str) -> list[str]:
        """Consumers in the group whose heartbeat expired (their process is gone)."""
        names: set[str] = set()
        for key in self.keys:
            try:
                for info in await self.client.xinfo_consumers(key, GROUP):
                    names.add(_s(info["name"]))
            except ResponseError:
                continue
        names.discard(me)
        if not names:
            return []
        ordered = sorted(names)
        pipe = self.client.pipeline(transaction=False)
        for name in ordered:
            pipe.exists(self.heartbeat_key(name))
        alive = await pipe.execute()
        return [n for n, a in zip(ordered, alive, strict=True) if not a]

    async def forget_consumer(self, name: str) -> None:
        """Drop a dead consumer; call after :meth:`take_pending` (DELCONSUMER drops whatever it
        still has pending)."""
        pipe = self.client.pipeline(transaction=False)
        for key in self.keys:
            pipe.xgroup_delconsumer(key, GROUP, name)
        await pipe.execute(raise_on_error=False)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


__all__ = ["GROUP", "Entry", "Streams", "connect", "queue_error"]
