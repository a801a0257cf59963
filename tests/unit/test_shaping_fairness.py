"""Deficit round robin: a tenant's huge backlog cannot delay another tenant's few messages."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.model import Priority
from engine.shaping.fairness import DrrScheduler, fair_order


def test_small_tenant_is_done_within_the_first_200_picks() -> None:
    drr: DrrScheduler[str, int] = DrrScheduler()
    drr.extend("A", range(50_000))
    drr.extend("B", range(100))
    first = [key for key, _ in drr.drain(200)]
    assert first.count("B") == 100
    assert len(drr) == 50_000 - 100


def test_new_flow_joins_the_round_without_waiting_for_the_backlog() -> None:
    drr: DrrScheduler[str, int] = DrrScheduler()
    drr.extend("A", range(1000))
    for _ in range(10):
        drr.pop()
    drr.push("B", 0)
    picks = [key for key, _ in drr.drain(3)]
    assert "B" in picks


def test_weights_share_in_proportion() -> None:
    drr: DrrScheduler[str, int] = DrrScheduler(weights={"gold": 3.0})
    drr.extend("gold", range(10_000))
    drr.extend("free", range(10_000))
    counts = Counter(key for key, _ in drr.drain(4000))
    assert counts["gold"] == 3000 and counts["free"] == 1000


def test_costs_share_bytes_not_messages() -> None:
    drr: DrrScheduler[str, int] = DrrScheduler(quantum=10.0, cost=lambda size: float(size))
    drr.extend("big", [10] * 100)
    drr.extend("small", [1] * 1000)
    counts = Counter(key for key, _ in drr.drain(220))
    assert counts["small"] == 200 and counts["big"] == 20


def test_empty_pop_raises() -> None:
    with pytest.raises(IndexError):
        DrrScheduler[str, int]().pop()


@given(st.lists(st.tuples(st.sampled_from("abcde"), st.integers()), max_size=300))
def test_output_is_the_input_reordered_fifo_per_flow(items: list[tuple[str, int]]) -> None:
    drr: DrrScheduler[str, int] = DrrScheduler()
    for key, value in items:
        drr.push(key, value)
    out = list(drr.drain())
    assert sorted(out) == sorted(items)
    for key in "abcde":
        assert [v for k, v in out if k == key] == [v for k, v in items if k == key]


def test_fair_order_interleaves_tenants_and_prefers_high_priority() -> None:
    batch = [("A", Priority.LOW, i) for i in range(100)] + [("B", Priority.NORMAL, 0)]
    batch += [("A", Priority.HIGH, 1000)]
    ordered = fair_order(batch, tenant_of=lambda j: j[0], priority_of=lambda j: j[1])
    assert sorted(ordered) == sorted(batch)
    assert ordered[:2] in (
        [("A", Priority.HIGH, 1000), ("B", Priority.NORMAL, 0)],
        [("B", Priority.NORMAL, 0), ("A", Priority.HIGH, 1000)],
    )
    # Within a tenant and priority the original order is kept.
    lows = [j[2] for j in ordered if j[1] is Priority.LOW]
    assert lows == list(range(100))


def test_fair_order_weights_priorities_8_4_1() -> None:
    batch = [("A", p, i) for p in Priority for i in range(1000)]
    first = Counter(j[1] for j in fair_order(batch, lambda j: j[0], lambda j: j[1])[:130])
    assert first == {Priority.HIGH: 80, Priority.NORMAL: 40, Priority.LOW: 10}
