"""Tenant relay pools through the real RelayPool and two fake MailU nodes: a tenant's mail
leaves only from its own node; others never use it; fallback only when allowed."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from engine.config import RelayConfig, RelayNode
from engine.model import OutcomeKind
from engine.relay import RelayPool
from engine.relay.select import rendezvous_order
from tests.fakes.mailu import FakeMailU

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def nodes() -> Iterator[tuple[FakeMailU, FakeMailU]]:
    with FakeMailU() as dedicated, FakeMailU() as shared:
        yield dedicated, shared


def cfg(*nodes: RelayNode) -> RelayConfig:
    return RelayConfig(
        nodes=list(nodes), helo_name="engine.test", connect_timeout_s=2.0, command_timeout_s=2.0
    )


def msg(i: int) -> bytes:
    return f"From: a@s.test\r\nTo: r{i}@x.test\r\nMessage-ID: <m{i}@s.test>\r\n\r\nhi\r\n".encode()


async def test_tenant_uses_only_its_dedicated_node(nodes: tuple[FakeMailU, FakeMailU]) -> None:
    dedicated, shared = nodes
    config = cfg(dedicated.relay_node("acme-1", tenants=["acme"]), shared.relay_node("shared"))
    async with RelayPool(config) as pool:
        await pool.start(health_checks=False)
        for i in range(20):
            r = await pool.send("b@s.test", f"r{i}@x.test", msg(i), affinity=f"s{i}.test",
                                tenant="acme")  # fmt: skip
            assert r.kind is OutcomeKind.RELAYED and r.node == "acme-1"
        for i in range(20, 40):
            r = await pool.send("b@s.test", f"r{i}@x.test", msg(i), affinity=f"s{i}.test",
                                tenant="other")  # fmt: skip
            assert r.node == "shared"
        r = await pool.send("b@s.test", "r@x.test", msg(99))  # no tenant: shared nodes
        assert r.node == "shared"
    assert dedicated.count() == 20 and shared.count() == 21


async def test_no_fallback_unless_allowed(nodes: tuple[FakeMailU, FakeMailU]) -> None:
    dedicated, shared = nodes
    dedicated.stop()
    strict = cfg(dedicated.relay_node("acme-1", tenants=["acme"]), shared.relay_node("shared"))
    async with RelayPool(strict) as pool:
        r = await pool.send("b@s.test", "r@x.test", msg(1), tenant="acme")
        assert r.kind is OutcomeKind.DEFERRED and r.node is None
    loose = cfg(
        dedicated.relay_node("acme-1", tenants=["acme"], fallback_shared=True),
        shared.relay_node("shared"),
    )
    async with RelayPool(loose) as pool:
        r = await pool.send("b@s.test", "r@x.test", msg(2), tenant="acme")
        assert r.kind is OutcomeKind.RELAYED and r.node == "shared"
    assert shared.count() == 1


async def test_warming_node_past_its_cap_is_skipped(nodes: tuple[FakeMailU, FakeMailU]) -> None:
    new, old = nodes
    today = dt.datetime.now(dt.UTC).date().isoformat()
    config = cfg(new.relay_node("new", warmup=True, warmup_started=today), old.relay_node("old"))
    # A sender whose preferred node is the new one.
    affinity = next(
        f"s{i}.test"
        for i in range(100)
        if rendezvous_order(f"s{i}.test", (("new", 1), ("old", 1)))[0] == "new"
    )
    async with RelayPool(config) as pool:
        cap = pool.warmup.cap("new")
        assert cap is not None
        for _ in range(cap - 1):  # as if it had relayed all but one message today
            pool.warmup.count("new")
        sent = [
            (await pool.send("b@s.test", "r@x.test", msg(i), affinity=affinity)).node
            for i in range(3)
        ]
    assert sent == ["new", "old", "old"]  # the cap is reached after the first: failover
    assert new.count() == 1 and old.count() == 2
    assert pool.warmup.sent_today("new") == cap
