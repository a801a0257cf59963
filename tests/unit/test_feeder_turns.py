"""The feeder's turns between tenants (``store.feeding._in_turns``, the order ``take_due`` pushes
in): a tenant's huge backlog cannot delay another tenant's few messages, and a tenant's weight
is its share. ``tests/integration/test_queue.py`` checks the same through PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any, cast

from hypothesis import given
from hypothesis import strategies as st

from engine.store.feeding import _in_turns

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _rows(backlog: dict[str, int]) -> list[dict[str, Any]]:
    rows, job_id = [], 0
    for tenant, n in backlog.items():
        for i in range(n):
            job_id += 1
            rows.append(
                {"id": job_id, "tenant_id": tenant, "next_attempt_at": T0 + dt.timedelta(i)}
            )
    return rows


def _order(backlog: dict[str, int], weights: dict[str, float] | None = None) -> list[Any]:
    tenants = list(backlog)
    w = [(weights or {}).get(t, 1.0) for t in tenants]
    return _in_turns(cast(Any, _rows(backlog)), tenants, w)


def test_small_tenant_is_done_within_the_first_200_jobs() -> None:
    first = [r["tenant_id"] for r in _order({"A": 50_000, "B": 100})[:200]]
    assert first.count("B") == 100


def test_weights_share_in_proportion() -> None:
    counts = Counter(
        r["tenant_id"] for r in _order({"gold": 10_000, "free": 10_000}, {"gold": 3.0})[:4000]
    )
    assert counts["gold"] == 3000 and counts["free"] == 1000


@given(st.lists(st.sampled_from("abcde"), max_size=300))
def test_output_is_the_input_reordered_fifo_per_tenant(tenants: list[str]) -> None:
    backlog = Counter(tenants)
    out = _order(dict(backlog))
    assert sorted(r["id"] for r in out) == list(range(1, len(tenants) + 1))
    for tenant in backlog:
        due = [r["next_attempt_at"] for r in out if r["tenant_id"] == tenant]
        assert due == sorted(due)
