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


def _reloadable(rate: float, **shaping: Any) -> Any:
    return config_mod.parse(
        {
            "shaping": {
                "providers": [{"name": "gmail", "mx_suffixes": ["google.com"], "rate_per_s": rate}],
                **shaping,
            },
            "dns": {"overrides": {"gm.example": ["gmail-smtp-in.l.google.com"]}},
        }
    )


async def test_reload_swaps_provider_limits_everywhere() -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0")  # never called here
    shaper = Shaper(_reloadable(10.0), client)
    assert (await shaper.resolve_providers(["gm.example"]))["gm.example"].rate_per_s == 10.0
    assert shaper.store is not None and shaper.store.policy("gmail").ceiling == 10.0
    shaper.reload(_reloadable(40.0, sender_rate_per_s=3.0))
    assert shaper.provider_limits("gmail").rate_per_s == 40.0
    assert (await shaper.resolve_providers(["gm.example"]))["gm.example"].rate_per_s == 40.0
    assert shaper.limiter is not None and shaper.store is not None
    assert shaper.limiter.cfg.sender_rate_per_s == 3.0
    assert shaper.store.policy("gmail").ceiling == 40.0  # AIMD adapts towards the new ceiling
    await client.aclose()


async def test_reload_with_an_unreadable_providers_file_changes_nothing(tmp_path: Any) -> None:
    import pytest
    import redis.asyncio as aioredis

    from engine.errors import EngineError

    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0")
    shaper = Shaper(_reloadable(10.0), client)
    with pytest.raises(EngineError):
        shaper.reload(_reloadable(40.0, providers_file=str(tmp_path / "missing.toml")))
    assert shaper.provider_limits("gmail").rate_per_s == 10.0
    await client.aclose()
