"""Tenant relay pools and node IP warm-up, sans-IO: which nodes a tenant may use, and caps."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from engine import config as config_mod
from engine.config import RelayNode
from engine.errors import ConfigError
from engine.relay.ip_warmup import NODE_PLAN, NodeWarmup, daily_cap, started_day
from engine.relay.tenant_pools import TenantPools


def node(name: str, **kw: object) -> RelayNode:
    return RelayNode(name=name, host="127.0.0.1", **kw)  # type: ignore[arg-type]


def test_dedicated_nodes_are_only_their_tenants() -> None:
    pools = TenantPools(
        [
            node("shared-1"),
            node("shared-2", weight=2),
            node("acme-1", tenants=["acme"]),
            node("big-1", tenants=["acme", "bigco"], fallback_shared=True),
        ]
    )
    assert pools.partitioned
    assert pools.choices(None) == ((("shared-1", 1), ("shared-2", 2)), ())
    assert pools.choices("small") == pools.choices(None)
    primary, fallback = pools.choices("acme")
    assert [n for n, _ in primary] == ["acme-1", "big-1"]
    assert [n for n, _ in fallback] == ["shared-1", "shared-2"]  # big-1 allows fallback
    assert pools.choices("bigco")[0] == (("big-1", 1),)


def test_without_dedicated_nodes_nothing_changes() -> None:
    pools = TenantPools([node("a"), node("b")])
    assert not pools.partitioned
    assert pools.choices("acme") == ((("a", 1), ("b", 1)), ())


def test_config_accepts_the_new_node_keys() -> None:
    cfg = config_mod.parse(
        {
            "relay": {
                "nodes": [
                    {"name": "a", "host": "h", "tenants": ["acme"], "fallback_shared": True},
                    {"name": "b", "host": "h", "warmup": True, "warmup_started": "2025-01-01"},
                ]
            },
            "compliance": {"relay_ips": ["203.0.113.5"], "on_fail": "block"},
            "retention": {"content_days": 7},
        }
    )
    assert cfg.relay.nodes[0].tenants == ["acme"] and cfg.relay.nodes[1].warmup
    assert cfg.compliance.on_fail == "block" and cfg.retention.content_days == 7
    with pytest.raises(ConfigError):
        config_mod.parse({"compliance": {"on_fail": "ignore"}})


def test_node_warmup_cap_grows_over_thirty_days() -> None:
    start = dt.date(2025, 3, 1)
    caps = [daily_cap(start, start + dt.timedelta(days=d)) for d in range(31)]
    assert caps[0] == NODE_PLAN[0] and caps[29] == NODE_PLAN[-1] and caps[30] is None
    assert all(a < b for a, b in itertools.pairwise(caps[:30]))  # type: ignore[operator]
    assert daily_cap(None, start) is None


def test_node_warmup_counter_resets_each_day() -> None:
    today = [dt.date(2025, 3, 1)]
    warm = node("new", warmup=True, warmup_started="2025-03-01")
    w = NodeWarmup([warm, node("old")], today=lambda: today[0])
    for _ in range(NODE_PLAN[0]):
        assert w.allows("new")
        w.count("new")
    assert not w.allows("new") and w.allows("old")
    today[0] = dt.date(2025, 3, 2)
    assert w.allows("new") and w.sent_today("new") == 0 and w.cap("new") == NODE_PLAN[1]


def test_node_warmup_needs_a_start_date() -> None:
    with pytest.raises(ConfigError, match="warmup_started"):
        started_day(node("n", warmup=True))
    with pytest.raises(ConfigError, match="YYYY-MM-DD"):
        started_day(node("n", warmup=True, warmup_started="March"))
