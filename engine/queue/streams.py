"""Per-priority Redis streams with one consumer group shared by every daemon instance.

Entries carry only the job id and tenant; PostgreSQL holds the job. Entries are XACKed and
XDELed only after the job's outcome is committed, so a consumer that dies leaves its entries
pending for XAUTOCLAIM (or for the reaper, which notices its heartbeat is gone).

Each priority stream is split into ``shards``; shard ``i`` keeps its three priority streams, its
epoch key and its push counter under one hash tag (``{q}`` for shard 0, ``{q<i>}`` after), so a
push script and a multi-stream read touch one Redis Cluster slot while the shards spread the
queue over the cluster's masters.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Sequence
from typing import Any, cast

import msgspec
import orjson
import redis.asyncio as aioredis
from redis._parsers import AsyncCommandsParser
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.exceptions import ResponseError

from engine.config import RedisConfig, read_secret
from engine.errors import QueueError
from engine.luascript import LuaScript, ScriptCall, call_all
from engine.model import Priority
from engine.redaction import redact

GROUP = "engine"
_PUSH = LuaScript("push", "engine.queue")
_TAKE_NAME = LuaScript("take_name", "engine.queue")
_BACKLOG = LuaScript("backlog", "engine.queue")
_READ = LuaScript("read", "engine.queue")


class Entry(msgspec.Struct, frozen=True):
    """One stream entry: which stream, its id, and the job it names."""

    stream: str
    entry_id: str
    job_id: int
    tenant_id: str


def connect(cfg: RedisConfig) -> aioredis.Redis:
    """The Redis client for ``[redis] mode`` (lazy: the first command connects).

    The one place a client is built (daemon, CLI, admin). A cluster client is typed as the
    plain one: it offers the same commands, routing each to the master of its key's slot.
    """
    common: dict[str, Any] = {
        "socket_timeout": cfg.socket_timeout_s,
        "socket_connect_timeout": cfg.socket_timeout_s,
        "health_check_interval": 30,
    }
    if cfg.mode == "cluster":
        cluster = RedisCluster.from_url(cfg.url, **common)
        cluster.commands_parser = _StreamKeys()
        return cast(aioredis.Redis, cluster)
    if cfg.mode == "sentinel":
        opts = {k: v for k, v in parse_url(cfg.url).items() if k in _SENTINEL_URL_KEYS}
        hosts = [(h, int(p)) for h, _, p in (a.rpartition(":") for a in cfg.sentinels)]
        own: dict[str, Any] = {"socket_timeout": cfg.socket_timeout_s}
        password = read_secret(None, cfg.sentinel_password_file, "redis sentinel password")
        if password is not None:
            own["password"] = password
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            hosts,
            sentinel_kwargs=own,
            **common,
            **opts,
        )
        return cast(aioredis.Redis, sentinel.master_for(cfg.service_name))
    return aioredis.Redis.from_url(cfg.url, **common)


async def close(client: aioredis.Redis) -> None:
    """Close a client from :func:`connect`, and in sentinel mode its connections to the
    sentinels too (the master's client does not own them)."""
    await client.aclose()
    # A cluster client has no connection_pool (one per node).
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    if isinstance(manager, Sentinel):
        for sentinel in manager.sentinels:
            await sentinel.aclose()


class _StreamKeys(AsyncCommandsParser):
    """The cluster client's key finder, reading XREADGROUP's keys from its arguments
    (redis-py's parser lives in a private module: uv.lock pins the version it is written for).

    redis-py asks a server (COMMAND GETKEYS, twice a call) for the keys of every command whose
    keys move, XREADGROUP among them: two round trips before each read of a stream.
    """

    async def get_keys(self, *args: Any) -> tuple[str, ...] | None:
        if args and _word(args[0]) == b"XREADGROUP":
            # GROUP <group> <consumer> come first; the consumer may be any word.
            for i in range(4, len(args)):
                if _word(args[i]) == b"STREAMS":
                    rest = args[i + 1 :]
                    return tuple(rest[: len(rest) // 2])
        return await super().get_keys(*args)


#: What a sentinel-mode ``url`` contributes: the master's database and credentials.
_SENTINEL_URL_KEYS = ("db", "username", "password")


def shard_count(cfg: RedisConfig) -> int:
    """Shards per priority stream: ``stream_shards``, or 8 on a cluster and 1 elsewhere."""
    if cfg.stream_shards > 0:
        return cfg.stream_shards
    return 8 if cfg.mode == "cluster" else 1


def queue_error(exc: Exception, cfg: RedisConfig) -> QueueError:
    """Wrap a redis error in one an operator can act on."""
    if isinstance(exc, MasterNotFoundError):
        # redis-py's text repeats the sentinel client's repr; the cause is after the last " - ".
        _, _, cause = str(exc).rpartition(" - ")
        return QueueError(
            redact(
                f"no Redis sentinel of {', '.join(cfg.sentinels)} named a master for"
                f" {cfg.service_name!r}: {cause or 'none answered'}"
            ),
            hint="check [redis] sentinels, service_name and sentinel_password_file"
            " (AuthenticationError: the sentinels' requirepass)",
        )
    return QueueError(
        redact(f"Redis at {cfg.url} failed: {exc}"),
        hint="check [redis] url / mode (ENGINE_REDIS__URL) and that redis-server is running",
    )


class Streams:
    """The priority streams (times their shards) and the group's bookkeeping keys."""

    def __init__(self, client: aioredis.Redis, prefix: str, shards: int = 1) -> None:
        self.client = client
        self.prefix = prefix
        # What this process writes to its heartbeat key: who holds the consumer name (see
        # engine/queue/identity.py), so a successor on the same host can tell it is gone.
        self.holder = "1"
        tags = ["{q}"] + [f"{{q{i}}}" for i in range(1, max(1, shards))]
        #: Per shard, its stream of each priority (highest first).
        self.shards = [[f"{prefix}:{t}:stream:{p.label}" for p in Priority] for t in tags]
        self.keys = [key for shard in self.shards for key in shard]
        self.epoch_keys = [f"{prefix}:{t}:epoch" for t in tags]
        self.epoch_key = self.epoch_keys[0]
        #: Per shard, entries ever pushed to it (the feeder measures the send rate from them).
        self.pushed_keys = [f"{prefix}:{t}:pushed" for t in tags]
        self._next_shard = 0
        self._blocked: dict[int, asyncio.Task[Any]] = {}

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

        Each shard's epoch key is written once; if one has vanished (a cluster master lost
        with its slots' data, too), every job PostgreSQL believes is on a stream must be pushed
        again.
        """
        pipe = self.client.pipeline(transaction=False)
        for key in self.epoch_keys:
            pipe.exists(key)
        present = await pipe.execute()
        if all(present):
            return False
        token = secrets.token_hex(8)
        for key, there in zip(self.epoch_keys, present, strict=True):
            if not there:
                await self.client.set(key, token, nx=True)
        await self.ensure_groups()
        return True

    async def push(self, jobs: Sequence[tuple[int, str, int]]) -> None:
        """XADD (job_id, tenant_id, priority) entries in one script call, to one shard.

        Each push goes to the next shard in turn: the queue spreads over the shards from one
        push to the next, while a batch stays together, so its reads and acknowledgements touch
        few streams (a command per stream each, routed one by one on a cluster).
        """
        if not jobs:
            return
        shard = self._next_shard
        self._next_shard = (shard + 1) % len(self.shards)
        keys = [*self.shards[shard], self.pushed_keys[shard]]
        await _PUSH.call(self.client, keys, _pack(jobs))

    async def backlog(self) -> tuple[list[int], int, int]:
        """(entries not yet read per priority, entries on the streams, entries ever pushed).

        One script call per shard (``lua/backlog.lua``), all in one pipeline: the feeder asks
        every round, and on a cluster a command per stream and counter is routed one by one.
        """
        calls = [
            ScriptCall(_BACKLOG, [*shard, pushed], [GROUP])
            for shard, pushed in zip(self.shards, self.pushed_keys, strict=True)
        ]
        unread = [0] * len(Priority)
        length = pushed_total = 0
        for reply in await call_all(self.client, calls):
            *per_stream, shard_length, shard_pushed = (int(v) for v in reply)
            for i, n in enumerate(per_stream):
                unread[i] += n
            length += shard_length
            pushed_total += shard_pushed
        return unread, length, pushed_total

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
        three at once, so new work of any priority wakes the consumer immediately. With several
        shards each one is blocked on concurrently (one slot per command); a blocking read
        still outstanding when another returns keeps running, and what it reads is returned by
        a later call.
        """
        n = len(self.shards)
        entries = self._collect_blocked()
        counts = [[max(1, -(-weight * scale // n)) for weight in weights] for _ in range(n)]
        got = await self._read_shards(consumer, counts)
        for per_stream in got:
            for part in per_stream:
                entries.extend(part)
        # Work-conserving: what an empty (or short) priority did not take goes to the streams
        # that filled their share, in weight proportion, so a round with one busy priority (a
        # campaign) reads its whole budget instead of that priority's share of it: fewer,
        # larger rounds (each a claim, a suppression check and a shaping call).
        left = sum(map(sum, counts)) - sum(len(part) for per in got for part in per)
        full = [
            (s, p)
            for s, per_stream in enumerate(got)
            for p, part in enumerate(per_stream)
            if len(part) == counts[s][p]
        ]
        if full and left >= len(full):
            total_w = sum(weights[p] for _, p in full)
            more = [[0] * len(weights) for _ in self.shards]
            for s, p in full:
                more[s][p] = max(1, left * weights[p] // total_w)
            for per_stream in await self._read_shards(consumer, more):
                for part in per_stream:
                    entries.extend(part)
        if entries or block_ms <= 0:
            return entries
        count = max(1, -(-weights[0] * scale // n))
        if n == 1:
            reply = await self.client.xreadgroup(
                GROUP, consumer, dict.fromkeys(self.keys, ">"), count=count, block=block_ms
            )
            return self._entries(reply)
        for i, shard in enumerate(self.shards):
            if i not in self._blocked:
                self._blocked[i] = asyncio.ensure_future(
                    self.client.xreadgroup(
                        GROUP, consumer, dict.fromkeys(shard, ">"), count=count, block=block_ms
                    )
                )
        await asyncio.wait(
            self._blocked.values(),
            timeout=block_ms / 1000 + 1.0,
            return_when=asyncio.FIRST_COMPLETED,
        )
        return self._collect_blocked()

    async def _read_shards(
        self, consumer: str, counts: Sequence[Sequence[int]]
    ) -> list[list[list[Entry]]]:
        """Per shard, per stream: the new entries read (``counts[shard][stream]`` at most), one
        script call per shard that reads anything (``lua/read.lua``), all in one pipeline."""
        asked = [s for s, per in enumerate(counts) if any(per)]
        calls = [ScriptCall(_READ, self.shards[s], [GROUP, consumer, *counts[s]]) for s in asked]
        out: list[list[list[Entry]]] = [[[] for _ in per] for per in counts]
        for s, reply in zip(asked, await call_all(self.client, calls), strict=True):
            for p, flat in enumerate(reply):
                stream = self.shards[s][p]
                out[s][p] = [
                    Entry(stream, _s(flat[k]), int(flat[k + 1]), _s(flat[k + 2]))
                    for k in range(0, len(flat), 3)
                ]
        return out

    def _collect_blocked(self) -> list[Entry]:
        """Entries of the blocking reads that have returned; the first error, if none had any."""
        entries: list[Entry] = []
        error: BaseException | None = None
        for i, task in list(self._blocked.items()):
            if not task.done():
                continue
            del self._blocked[i]
            if task.cancelled():
                continue
            exc = task.exception()
            if exc is not None:
                error = error or exc
                continue
            entries.extend(self._entries(task.result()))
        if error is not None and not entries:
            raise error
        return entries

    async def close(self) -> None:
        """Stop outstanding blocking reads (what they had read stays pending, and is claimed
        again by XAUTOCLAIM)."""
        for task in self._blocked.values():
            task.cancel()
        for task in self._blocked.values():
            with contextlib.suppress(BaseException):
                await task
        self._blocked.clear()

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
        """Entries waiting per priority (XLEN: acked entries are deleted), over every shard."""
        pipe = self.client.pipeline(transaction=False)
        for key in self.keys:
            pipe.xlen(key)
        lengths = await pipe.execute()
        out = dict.fromkeys((p.label for p in Priority), 0)
        for i, n in enumerate(lengths):
            out[Priority(i % len(Priority)).label] += int(n)
        return out

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


def _pack(jobs: Sequence[tuple[int, str, int]]) -> bytes:
    # Job ids as strings: Lua numbers are doubles, printed with 14 significant digits.
    return orjson.dumps([(str(job_id), tenant, priority) for job_id, tenant, priority in jobs])


def _word(value: object) -> bytes:
    """A command argument as upper-case bytes (redis-py passes its keywords as bytes)."""
    return (value if isinstance(value, bytes) else str(value).encode()).upper()


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


__all__ = ["GROUP", "Entry", "Streams", "connect", "queue_error", "shard_count"]
