"""The façade with shaping disabled: everything allowed, zero Redis calls."""

from __future__ import annotations

from typing import Any

from engine import config as config_mod
from engine.shaping.model import DeliverySignal, ShapeRequest, SignalKind
from engine.shaping.shaper import Shaper


class ExplodingRedis:
    """Fails the test on any use: proves the disabled path never touches Redis."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"Redis was used ({name}) with shaping disabled")


async def test_disabled_shaping_allows_everything_without_redis() -> None:
    cfg = config_mod.parse({"shaping": {"enabled": False}})
    shaper = Shaper(cfg, ExplodingRedis())  # type: ignore[arg-type]
    requests = [ShapeRequest("t", "a@b.example", recipient_domain="x.example")] * 1000
    decisions = await shaper.acquire(requests)
    assert len(decisions) == 1000 and all(d.allowed for d in decisions)
    await shaper.feedback([DeliverySignal("t", "a@b.example", "gmail", SignalKind.THROTTLED)])
    shaper.record(DeliverySignal("t", "a@b.example", "gmail", SignalKind.COMPLAINT))
    await shaper.flush()
    assert await shaper.is_paused("t", "a@b.example") is None


async def test_disabled_shaping_needs_no_client_at_all() -> None:
    shaper = Shaper(config_mod.parse({"shaping": {"enabled": False}}), None)
    assert (await shaper.acquire([ShapeRequest("t", "a@b.c", "gmail")]))[0].allowed
    assert shaper.provider_limits("gmail").max_connections >= 1
