"""Per-provider in-flight limits of the dispatcher (max_connections, dispatch/inflight.py)."""

from __future__ import annotations

import asyncio

from engine.dispatch.inflight import ProviderSlots

LIMITS = {"gmail": 2, "outlook": 1}


def limits(provider: str) -> int:
    return LIMITS.get(provider, 0)


async def test_a_full_provider_waits_then_gets_the_released_slot() -> None:
    slots = ProviderSlots(limits, wait_s=1.0)
    a, b = await slots.take("gmail"), await slots.take("gmail")
    assert a is not None and b is not None and slots.in_flight("gmail") == 2
    other = await slots.take("outlook")  # another provider is not held up by gmail
    assert other is not None
    waiter = asyncio.create_task(slots.take("gmail"))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    a.release()
    a.release()  # a second release gives nothing back twice
    c = await asyncio.wait_for(waiter, 1.0)
    assert c is not None and slots.in_flight("gmail") == 2
    for s in (b, c, other):
        s.release()
    assert slots.in_flight("gmail") == 0 and not slots._gates  # idle gates are forgotten


async def test_waiting_is_bounded_in_time_and_in_number() -> None:
    slots = ProviderSlots(limits, wait_s=0.05)
    held = [await slots.take("outlook")]
    assert held[0] is not None
    # One waiter (the limit) may wait; a second is turned away at once.
    first = asyncio.create_task(slots.take("outlook"))
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert await slots.take("outlook") is None
    assert loop.time() - began < 0.02
    assert await first is None  # timed out after wait_s
    assert slots.in_flight("outlook") == 1


async def test_no_limit_without_a_provider_or_with_zero() -> None:
    slots = ProviderSlots(limits)
    taken = [await slots.take(p) for p in ("", "unknown", "unknown", "unknown")]
    assert all(t is not None for t in taken)
    assert slots.in_flight("unknown") == 0


async def test_a_changed_limit_applies_to_the_next_take() -> None:
    table = {"gmail": 1}
    slots = ProviderSlots(lambda p: table[p], wait_s=0.01)
    old = await slots.take("gmail")
    assert old is not None and await slots.take("gmail") is None
    table["gmail"] = 3  # a reload raised max_connections
    more = [await slots.take("gmail"), await slots.take("gmail")]
    assert all(m is not None for m in more)
    old.release()  # back to the old gate, not the new one
    assert slots.in_flight("gmail") == 2


async def test_the_waiting_room_holds_max_waiting_and_says_when_it_turns_away() -> None:
    # A campaign to one provider waits its turn in memory (up to max_waiting jobs) instead of
    # having most of each batch held and re-queued; past that the dispatcher is told to pause.
    slots = ProviderSlots(limits, wait_s=1.0, max_waiting=6)
    first = await slots.take("outlook")
    assert first is not None and not slots.crowded()
    waiters = [asyncio.create_task(slots.take("outlook")) for _ in range(6)]
    await asyncio.sleep(0)
    assert slots.crowded() and slots.waiting == 6
    assert await slots.take("outlook") is None  # the seventh is held
    first.release()
    for w in waiters:
        slot = await asyncio.wait_for(w, 1.0)
        assert slot is not None
        slot.release()
    assert slots.in_flight("outlook") == 0 and slots.waiting == 0
    assert slots.crowded()  # one was held just now
