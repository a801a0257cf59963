"""The dispatcher's cache of composed bodies: bounded by bytes, least recently used out."""

from __future__ import annotations

from engine.dispatch.worker import BodyCache
from engine.model import Content


def content(i: int, size: int = 1000) -> Content:
    return Content(from_="news@acme.example", subject=f"n{i}", text="x" * size)


def test_many_small_campaigns_stay_while_they_fit() -> None:
    cache = BodyCache(max_bytes=8 * 1024 * 1024)
    keys = [(f"t{i}", b"h") for i in range(2000)]  # more campaigns than the old 512 entries
    for k, i in zip(keys, range(2000), strict=True):
        cache.put(k, content(i))
    # Round robin over all of them (what the fair feeder deals): every one is still there.
    assert all(cache.get(k) is not None for k in keys)
    assert len(cache) == 2000 and cache.bytes <= cache.max_bytes


def test_bytes_bound_evicts_least_recently_used() -> None:
    one = BodyCache().put(("x", b"h"), content(0, 50_000)).size
    cache = BodyCache(max_bytes=3 * one + one // 2)
    for i in range(3):
        cache.put((f"t{i}", b"h"), content(i, 50_000))
    assert cache.get(("t0", b"h")) is not None  # t1 is now the least recently used
    cache.put(("t3", b"h"), content(3, 50_000))
    assert cache.get(("t1", b"h")) is None
    assert all(cache.get((f"t{i}", b"h")) is not None for i in (0, 2, 3))
    assert cache.bytes == 3 * one


def test_a_body_larger_than_the_budget_is_still_kept_alone() -> None:
    cache = BodyCache(max_bytes=1000)
    cache.put(("a", b"h"), content(0, 500))
    big = cache.put(("b", b"h"), content(1, 10_000))
    assert cache.get(("b", b"h")) is big and cache.get(("a", b"h")) is None
    again = cache.put(("b", b"h"), content(1, 10_000))  # replacing an entry keeps the count
    assert cache.bytes == again.size and len(cache) == 1
