"""The limit hierarchy in Redis: one Lua call per hash tag, all calls of a batch in one pipeline.

For each request the levels are, in order: tenant → sender domain → sender address → sender x
provider (the AIMD-adapted rate) → warm-up daily cap of sender x provider → relay node. A paused
sender is not a level: the dispatcher holds its jobs before asking (:mod:`engine.senders`). A
request is allowed only when every level allows, and then one unit is consumed at every level;
a held request consumes nothing and gets the wait of the level that holds it longest (the
caller re-queues it with that delay: held, never dropped, never spun on).

Every key of a tenant carries the tag ``{t:<tenant>}``, so the caller's batch is grouped by
tenant and each group is one EVALSHA touching one slot; the groups go out as one pipeline, one
round trip. Relay-node buckets are shared across tenants: on a single Redis they are checked in
the same call (exact), on Redis Cluster (``split_nodes``) in a second pipelined call per node,
and the few requests a node then refuses have their tenant-side units refunded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from engine.config import ShapingConfig
from engine.gcra import burst_for
from engine.luascript import LuaScript
from engine.shaping.clock import Clock
from engine.shaping.keys import ShapingKeys
from engine.shaping.model import LEVEL_BY_CODE, LEVEL_CODES, Level, ShapeDecision, ShapeRequest
from engine.shaping.providers import ProviderTable
from engine.shaping.scripts import ScriptCall, ScriptRunner
from engine.shaping.warmup import WarmupPlan

_msgpack = msgspec.msgpack.Encoder()
_unpack = msgspec.msgpack.Decoder(list[int]).decode

ACQUIRE = 0
REFUND = 1
PEEK = 2

_GCRA, _AIMD, _DAILY = 2, 3, 4
_LEVEL_CACHE_MAX = 100_000

#: One level as the script reads it: code kind key1 key2 a b c (keys as strings here).
_Level = tuple[int, int, str | bytes, str | bytes | None, float, float, float]


class LevelStatus(msgspec.Struct, frozen=True):
    """One level as ``explain`` sees it: the limit in force and how close the request is."""

    level: Level
    limit: float  # msg/s for rates, messages/day for the warm-up cap (-1: none)
    used: float  # units ahead of schedule (rates), sent today (warm-up)
    retry_after_s: float  # 0: this level would let the message go now


class _Call:
    """Accumulates the keys and arguments of one script call (one hash tag).

    Requests with the same tenant, sender, provider and node share one level list (a "set"),
    sent once; this keeps a 256-request batch to a few hundred bytes of msgpack.
    """

    def __init__(self) -> None:
        self.keys: list[str | bytes] = []
        self.index: dict[str | bytes, int] = {}
        self.sets: list[list[float]] = []
        self.set_of: dict[object, int] = {}
        self.requests: list[int] = []

    @property
    def count(self) -> int:
        return len(self.requests)

    def key(self, name: str | bytes | None) -> int:
        if name is None:
            return 0
        i = self.index.get(name)
        if i is None:
            self.keys.append(name)
            i = self.index[name] = len(self.keys)
        return i

    def add(self, combo: object, levels: Callable[[], Sequence[_Level]]) -> None:
        """Append a request; ``levels`` is only called the first time ``combo`` is seen."""
        i = self.set_of.get(combo)
        if i is None:
            flat: list[float] = []
            for code, kind, k1, k2, a, b, c in levels():
                flat.extend((code, kind, self.key(k1), self.key(k2), a, b, c))
            i = self.set_of[combo] = len(self.sets)
            self.sets.append(flat)
        self.requests.append(i)

    def to_call(self, script: LuaScript, now_ms: float, mode: int) -> ScriptCall:
        blob = _msgpack.encode((self.sets, self.requests))
        return ScriptCall(script, self.keys, [repr(now_ms), mode, blob])


class RedisLimiter:
    """Checks and consumes the hierarchy for batches of requests."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: ShapingKeys,
        cfg: ShapingConfig,
        table: ProviderTable,
        plan: WarmupPlan,
        *,
        tenant_rates: Callable[[str], float] | None = None,
        sender_domain_rates: Callable[[str, str], float] | None = None,
        clock: Clock | None = None,
        split_nodes: bool | None = None,
        runner: ScriptRunner | None = None,
    ) -> None:
        self.keys = keys
        self.cfg = cfg
        self.table = table
        self.plan = plan
        self.runner = runner or ScriptRunner(client)
        self.script = LuaScript("acquire", "engine.shaping")
        self._tenant_rates = tenant_rates or (lambda _t: self.cfg.tenant_rate_per_s)
        # (tenant, sender address) → the sender-domain rate: the configured one, or lower when
        # the domain fails its compliance check under ``[compliance] on_fail = "throttle"``.
        self._sender_domain_rates = sender_domain_rates or (
            lambda _t, _s: self.cfg.sender_domain_rate_per_s
        )
        self._clock = clock  # None: the Redis server's clock, shared by every instance
        self.split_nodes = isinstance(client, RedisCluster) if split_nodes is None else split_nodes
        # Level lists per (tenant, sender, provider, node): building keys is most of the Python
        # cost of a batch, and the same senders recur batch after batch.
        self._levels: dict[tuple[str, str, str, str | None], list[_Level]] = {}

    def reload(self, cfg: ShapingConfig, table: ProviderTable, plan: WarmupPlan) -> None:
        """Apply reloaded ``[shaping]`` limits from the next batch on."""
        self.cfg, self.table, self.plan = cfg, table, plan
        self.forget_levels()

    def forget_levels(self) -> None:
        """Drop cached level lists (after tenant quotas or the provider table changed)."""
        self._levels.clear()

    def levels(self, r: ShapeRequest, *, with_node: bool) -> list[_Level]:
        """The levels of a request under its tenant's tag (and its node's, if ``with_node``)."""
        combo = (r.tenant_id, r.sender, r.provider, r.node if with_node else None)
        levels = self._levels.get(combo)
        if levels is None:
            if len(self._levels) >= _LEVEL_CACHE_MAX:
                self._levels.clear()
            levels = self.tenant_levels(r, self.table.get(r.provider).rate_per_s)
            node = self.node_level(r) if with_node else None
            if node is not None:
                levels.append(node)
            # Keys as bytes: redis-py then sends them without re-encoding on every batch.
            levels = [
                (c, kind, _b(k1), None if k2 is None else _b(k2), a, b, x)
                for c, kind, k1, k2, a, b, x in levels
            ]
            self._levels[combo] = levels
        return levels

    def _now_ms(self) -> float:
        return -1.0 if self._clock is None else self._clock() * 1000.0

    def _gcra(self, level: Level, key: str, rate: float) -> _Level:
        return (LEVEL_CODES[level], _GCRA, key, None, rate, burst_for(rate, self.cfg.burst_s), 0)

    def tenant_levels(self, r: ShapeRequest, ceiling: float) -> list[_Level]:
        """Every level of ``r`` that lives under the tenant's hash tag."""
        k, cfg, t, s = self.keys, self.cfg, r.tenant_id, r.sender
        levels: list[_Level] = []
        tenant_rate = self._tenant_rates(t)
        if tenant_rate > 0:
            levels.append(self._gcra(Level.TENANT, k.tenant(t), tenant_rate))
        domain_rate = self._sender_domain_rates(t, s)
        if domain_rate > 0:
            levels.append(self._gcra(Level.SENDER_DOMAIN, k.sender_domain(t, s), domain_rate))
        if cfg.sender_rate_per_s > 0:
            levels.append(self._gcra(Level.SENDER, k.sender(t, s), cfg.sender_rate_per_s))
        floor = min(cfg.min_rate_per_s, ceiling)
        start = max(floor, ceiling * cfg.aimd_initial)
        levels.append(
            (
                LEVEL_CODES[Level.PROVIDER],
                _AIMD,
                k.provider(t, s, r.provider),
                k.rate(t, s, r.provider),
                start,
                cfg.burst_s,
                ceiling,
            )
        )
        if cfg.warmup:
            levels.append(
                (
                    LEVEL_CODES[Level.WARMUP],
                    _DAILY,
                    k.warmup(t, s),
                    k.daily(t, s, r.provider),
                    self.plan.cap(0),
                    0,
                    0,
                )
            )
        return levels

    def node_level(self, r: ShapeRequest) -> _Level | None:
        if r.node is None or self.cfg.node_rate_per_s <= 0:
            return None
        return self._gcra(Level.NODE, self.keys.node(r.node), self.cfg.node_rate_per_s)

    async def acquire(self, requests: Sequence[ShapeRequest]) -> list[ShapeDecision]:
        """One decision per request, in order (see the module docstring)."""
        if not requests:
            return []
        now_ms = self._now_ms()
        groups: dict[str, tuple[_Call, list[int]]] = {}
        split = self.split_nodes and self.cfg.node_rate_per_s > 0
        for i, r in enumerate(requests):
            group = groups.get(r.tenant_id)
            if group is None:
                group = groups[r.tenant_id] = (_Call(), [])
            combo = (r.sender, r.provider, None if split else r.node)
            group[0].add(combo, lambda r=r: self.levels(r, with_node=not split))  # type: ignore[misc]
            group[1].append(i)
        results = await self.runner.run(
            [call.to_call(self.script, now_ms, ACQUIRE) for call, _ in groups.values()]
        )
        decisions: list[ShapeDecision] = [ShapeDecision.allow()] * len(requests)
        for (_, indexes), packed in zip(groups.values(), results, strict=True):
            flat = _unpack(packed)
            for j, i in enumerate(indexes):
                if flat[2 * j]:
                    decisions[i] = _decision(flat[2 * j], flat[2 * j + 1])
        if split:
            await self._node_phase(requests, decisions, now_ms)
        return decisions

    async def _node_phase(
        self, requests: Sequence[ShapeRequest], decisions: list[ShapeDecision], now_ms: float
    ) -> None:
        """Cluster mode: node buckets in their own slots, refunding what a node refuses."""
        by_node: dict[str | bytes, tuple[_Call, list[int]]] = {}
        for i, r in enumerate(requests):
            level = self.node_level(r)
            if level is None or not decisions[i].allowed:
                continue
            entry = by_node.setdefault(level[2], (_Call(), []))
            entry[0].add(level[2], lambda lv=level: [lv])  # type: ignore[misc]
            entry[1].append(i)
        if not by_node:
            return
        results = await self.runner.run(
            [call.to_call(self.script, now_ms, ACQUIRE) for call, _ in by_node.values()]
        )
        refund: dict[str, _Call] = {}
        for (_, indexes), packed in zip(by_node.values(), results, strict=True):
            flat = _unpack(packed)
            for j, i in enumerate(indexes):
                if not flat[2 * j]:
                    continue
                decisions[i] = _decision(flat[2 * j], flat[2 * j + 1])
                r = requests[i]
                refund.setdefault(r.tenant_id, _Call()).add(
                    (r.sender, r.provider),
                    lambda r=r: self.levels(r, with_node=False),  # type: ignore[misc]
                )
        if refund:
            await self.runner.run(
                [call.to_call(self.script, now_ms, REFUND) for call in refund.values()]
            )

    async def peek(self, request: ShapeRequest) -> list[LevelStatus]:
        """Every level of one request, evaluated without consuming anything (for explain)."""
        now_ms = self._now_ms()
        levels = self.tenant_levels(request, self.table.get(request.provider).rate_per_s)
        calls: list[list[_Level]] = [levels]
        node = self.node_level(request)
        if node is not None:
            calls.append([node])  # its own call: on a cluster it lives in another slot
        scripted = []
        for lv in calls:
            call = _Call()
            call.add(0, lambda lv=lv: lv)  # type: ignore[misc]
            scripted.append(call.to_call(self.script, now_ms, PEEK))
        out: list[LevelStatus] = []
        for packed in await self.runner.run(scripted):
            flat = _unpack(packed)
            for j in range(0, len(flat), 4):
                out.append(
                    LevelStatus(
                        level=LEVEL_BY_CODE[flat[j]],
                        retry_after_s=flat[j + 1] / 1000,
                        limit=flat[j + 2] / 1000,
                        used=flat[j + 3] / 1000,
                    )
                )
        return out


def _b(key: str | bytes) -> bytes:
    return key.encode() if isinstance(key, str) else key


def _decision(code: int, retry_ms: int) -> ShapeDecision:
    if not code:
        return ShapeDecision.allow()
    return ShapeDecision(
        allowed=False, retry_after_s=int(retry_ms) / 1000, level=LEVEL_BY_CODE[code]
    )
