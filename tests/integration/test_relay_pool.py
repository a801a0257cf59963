"""RelayPool against real SMTP servers (the fake MailU node): what a job's sender would see."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from engine.config import RelayConfig, RelayNode
from engine.model import OutcomeKind
from engine.relay import NO_RELAY_AVAILABLE, BreakerState, RelayPool
from engine.relay.select import rendezvous_order
from tests.fakes.fixtures import MAILU_PASSWORD, MAILU_USER, mailu, mailu_tls  # noqa: F401
from tests.fakes.mailu import FakeMailU

pytestmark = pytest.mark.timeout(60)


def message(i: int, domain: str = "sender.test") -> bytes:
    return (
        f"From: news@{domain}\r\nTo: rcpt{i}@example.test\r\nSubject: hello {i}\r\n"
        f"Message-ID: <job-{i}@{domain}>\r\n\r\nbody {i}\r\n.leading dot line\r\n"
    ).encode()


def relay_cfg(*nodes: RelayNode, **overrides: Any) -> RelayConfig:
    fields: dict[str, Any] = {
        "nodes": list(nodes),
        "helo_name": "engine.test",
        "connect_timeout_s": 2.0,
        "command_timeout_s": 2.0,
        "breaker_failures": 3,
        "breaker_cooldown_s": 30.0,
    }
    fields.update(overrides)
    return RelayConfig(**fields)


@pytest.fixture
async def pool_for(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """Factory: ``await pool_for(cfg)`` → started pool, closed at teardown."""
    pools: list[RelayPool] = []

    async def make(cfg: RelayConfig) -> RelayPool:
        pool = RelayPool(cfg)
        await pool.start(health_checks=False)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.close()


@pytest.fixture
def second() -> Iterator[FakeMailU]:
    with FakeMailU() as node:
        yield node


def key_preferring(first: str, nodes: list[tuple[str, int]]) -> str:
    """An affinity key whose rendezvous order starts with ``first``."""
    for i in range(1000):
        key = f"d{i}.test"
        if rendezvous_order(key, nodes)[0] == first:
            return key
    raise AssertionError("no key found")


# -- happy paths ----------------------------------------------------------------------------------


async def test_plain_relay(mailu: FakeMailU, pool_for: Any) -> None:
    pool = await pool_for(relay_cfg(mailu.relay_node("a")))
    result = await pool.send("bounce@sender.test", "rcpt@example.test", message(1))
    assert result.kind is OutcomeKind.RELAYED
    assert (result.reply_code, result.enhanced_status, result.node) == (250, "2.0.0", "a")
    [got] = mailu.received
    assert got.mail_from == "bounce@sender.test"
    assert got.rcpt_tos == ("rcpt@example.test",)
    assert got.message_id == "<job-1@sender.test>"
    assert b"\r\n.leading dot line\r\n" in got.data  # dot-stuffing undone by the server


async def test_starttls_with_auth(mailu_tls: FakeMailU, pool_for: Any) -> None:
    node = mailu_tls.relay_node("a", port=mailu_tls.port)
    assert node.username == MAILU_USER and node.password == MAILU_PASSWORD
    pool = await pool_for(relay_cfg(node))
    result = await pool.send("b@sender.test", ["r@example.test"], message(1))
    assert result.kind is OutcomeKind.RELAYED
    [got] = mailu_tls.received
    assert got.tls and got.authenticated_as == MAILU_USER


async def test_implicit_tls_with_auth_and_password_file(tmp_path: Any, pool_for: Any) -> None:
    secret = tmp_path / "relay.pass"
    secret.write_text("pw-465\n")
    secret.chmod(0o600)
    with FakeMailU(auth=("u465", "pw-465"), tls="implicit") as fake:
        node = fake.relay_node("a", password=None, password_file=str(secret))
        pool = await pool_for(relay_cfg(node))
        result = await pool.send("b@sender.test", ["r@example.test"], message(1))
        assert result.kind is OutcomeKind.RELAYED
        [got] = fake.received
        assert got.tls and got.authenticated_as == "u465"
        await pool.close()


async def test_unknown_ca_is_refused_then_verify_off_works(
    mailu_tls: FakeMailU, pool_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    strict = await pool_for(relay_cfg(mailu_tls.relay_node("a", ca_file=None)))
    result = await strict.send("b@sender.test", ["r@example.test"], message(1))
    assert result.kind is OutcomeKind.DEFERRED and result.reply_code is None
    assert NO_RELAY_AVAILABLE in result.reply and "certificate" in result.reply.lower()
    assert mailu_tls.count() == 0

    with caplog.at_level(logging.WARNING, logger="engine.relay"):
        lax = await pool_for(relay_cfg(mailu_tls.relay_node("a", ca_file=None, verify_tls=False)))
    assert any("verification is off" in r.getMessage() for r in caplog.records)
    for i in range(3):
        assert (await lax.send("b@sender.test", ["r@example.test"], message(i))).kind is (
            OutcomeKind.RELAYED
        )
    assert sum("verification is off" in r.getMessage() for r in caplog.records) == 1


async def test_wrong_password_is_a_node_failure(mailu_tls: FakeMailU, pool_for: Any) -> None:
    pool = await pool_for(relay_cfg(mailu_tls.relay_node("a", password="wrong")))
    result = await pool.send("b@sender.test", ["r@example.test"], message(1))
    assert result.kind is OutcomeKind.DEFERRED
    assert "535" in result.reply
    [status] = pool.snapshot()
    assert status.failures == 1 and not status.healthy


# -- connection reuse and recycling ---------------------------------------------------------------


async def test_sequential_messages_share_one_connection(mailu: FakeMailU, pool_for: Any) -> None:
    pool = await pool_for(relay_cfg(mailu.relay_node("a", max_connections=4)))
    for i in range(30):
        assert (await pool.send("b@sender.test", [f"r{i}@x.test"], message(i))).kind is (
            OutcomeKind.RELAYED
        )
    assert mailu.count() == 30
    assert mailu.connections == 1


async def test_concurrent_sends_stay_within_max_connections(
    mailu: FakeMailU, pool_for: Any
) -> None:
    pool = await pool_for(relay_cfg(mailu.relay_node("a", max_connections=4)))
    results = await asyncio.gather(
        *(pool.send("b@sender.test", [f"r{i}@x.test"], message(i)) for i in range(200))
    )
    assert {r.kind for r in results} == {OutcomeKind.RELAYED}
    assert mailu.count() == 200
    assert mailu.connections <= 4
    [status] = pool.snapshot()
    assert status.connections_open <= 4 and status.connections_in_use == 0
    assert status.sent == 200


async def test_connection_recycled_after_n_messages(mailu: FakeMailU, pool_for: Any) -> None:
    pool = await pool_for(relay_cfg(mailu.relay_node("a", max_messages_per_connection=5)))
    for i in range(12):
        await pool.send("b@sender.test", ["r@x.test"], message(i))
    per_connection = Counter(m.connection for m in mailu.received)
    assert sorted(per_connection.values()) == [2, 5, 5]
    assert mailu.connections == 3


async def test_session_closed_by_node_is_replaced_transparently(
    mailu: FakeMailU, pool_for: Any
) -> None:
    pool = await pool_for(relay_cfg(mailu.relay_node("a")))
    assert (await pool.send("b@sender.test", ["r@x.test"], message(1))).kind is (
        OutcomeKind.RELAYED
    )
    mailu.stop()  # cuts the pooled session
    mailu.start()
    result = await pool.send("b@sender.test", ["r@x.test"], message(2))
    assert result.kind is OutcomeKind.RELAYED
    assert mailu.count() == 2
    assert pool.snapshot()[0].failures == 0  # a dead idle session is not a node failure


# -- reply classes --------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["MAIL", "RCPT", "DATA"])
@pytest.mark.parametrize(
    ("code", "text", "kind", "throttled"),
    [
        (421, "4.7.0 Error: too many connections, try later", OutcomeKind.DEFERRED, True),
        (450, "4.2.1 rate limited, slow down", OutcomeKind.DEFERRED, True),
        (451, "4.3.0 temporary failure", OutcomeKind.DEFERRED, False),
        (550, "5.1.1 <r@x.test>: Recipient address rejected", OutcomeKind.FAILED, False),
    ],
)
async def test_reply_classes_at_each_stage(
    mailu: FakeMailU,
    pool_for: Any,
    stage: Any,
    code: int,
    text: str,
    kind: OutcomeKind,
    throttled: bool,
) -> None:
    pool = await pool_for(relay_cfg(mailu.relay_node("a")))
    mailu.set_reply(stage, code, text, times=1)
    result = await pool.send("b@sender.test", ["r@x.test"], message(1))
    assert result.kind is kind
    assert result.reply_code == code
    assert result.enhanced_status == text.split()[0]
    assert result.throttled is throttled
    assert result.node == "a" and result.nodes_tried == 1
    assert mailu.count() == 0
    # The session was reset (or replaced after a 421): the next message goes through.
    assert (await pool.send("b@sender.test", ["r@x.test"], message(2))).kind is (
        OutcomeKind.RELAYED
    )
    assert mailu.message_ids() == ["<job-2@sender.test>"]
    assert pool.snapshot()[0].failures == 0  # replies are not node failures


async def test_some_recipients_refused(mailu: FakeMailU, pool_for: Any) -> None:
    pool = await pool_for(relay_cfg(mailu.relay_node("a")))
    mailu.fail_rcpt(r"^bad", 550, "5.1.1 no such user")
    result = await pool.send("b@sender.test", ["good@x.test", "bad@x.test"], message(1))
    assert result.kind is OutcomeKind.RELAYED
    [refusal] = result.refused
    assert (refusal.recipient, refusal.kind, refusal.reply_code) == (
        "bad@x.test",
        OutcomeKind.FAILED,
        550,
    )
    assert mailu.received[0].rcpt_tos == ("good@x.test",)


async def test_all_recipients_refused_deferred_wins(mailu: FakeMailU, pool_for: Any) -> None:
    pool = await pool_for(relay_cfg(mailu.relay_node("a")))
    mailu.fail_rcpt(r"^gone", 550, "5.1.1 no such user")
    mailu.fail_rcpt(r"^full", 452, "4.2.2 mailbox full")
    result = await pool.send("b@sender.test", ["gone@x.test", "full@x.test"], message(1))
    assert (result.kind, result.reply_code, result.enhanced_status) == (
        OutcomeKind.DEFERRED,
        452,
        "4.2.2",
    )
    assert len(result.refused) == 2 and mailu.count() == 0


# -- failover, drops, timeouts --------------------------------------------------------------------


async def test_node_down_fails_over_to_the_next(
    mailu: FakeMailU, second: FakeMailU, pool_for: Any
) -> None:
    nodes = [("a", 1), ("b", 1)]
    affinity = key_preferring("a", nodes)
    pool = await pool_for(relay_cfg(mailu.relay_node("a"), second.relay_node("b")))
    mailu.stop()
    result = await pool.send("b@sender.test", ["r@x.test"], message(1), affinity=affinity)
    assert result.kind is OutcomeKind.RELAYED
    assert (result.node, result.nodes_tried) == ("b", 2)
    assert second.count() == 1 and mailu.count() == 0


async def test_affinity_keeps_a_sender_on_its_node(
    mailu: FakeMailU, second: FakeMailU, pool_for: Any
) -> None:
    pool = await pool_for(relay_cfg(mailu.relay_node("a"), second.relay_node("b")))
    nodes = [("a", 1), ("b", 1)]
    for i in range(10):
        key = f"tenant{i}.test"
        result = await pool.send("b@x.test", ["r@x.test"], message(i), affinity=key)
        assert result.node == rendezvous_order(key, nodes)[0]
    for i in range(5):
        again = await pool.send("b@x.test", ["r@x.test"], message(i), affinity="tenant0.test")
        assert again.node == rendezvous_order("tenant0.test", nodes)[0]


async def test_drop_before_data_fails_over_once(
    mailu: FakeMailU, second: FakeMailU, pool_for: Any
) -> None:
    affinity = key_preferring("a", [("a", 1), ("b", 1)])
    pool = await pool_for(relay_cfg(mailu.relay_node("a"), second.relay_node("b")))
    mailu.drop("RCPT")
    result = await pool.send("b@sender.test", ["r@x.test"], message(1), affinity=affinity)
    assert (result.kind, result.node) == (OutcomeKind.RELAYED, "b")
    assert mailu.count() + second.count() == 1


async def test_drop_after_data_is_deferred_not_failed_over(
    mailu: FakeMailU, second: FakeMailU, pool_for: Any
) -> None:
    affinity = key_preferring("a", [("a", 1), ("b", 1)])
    pool = await pool_for(relay_cfg(mailu.relay_node("a"), second.relay_node("b")))
    mailu.drop_after_data(accept=True)  # the node queued it, then died before saying so
    result = await pool.send("b@sender.test", ["r@x.test"], message(1), affinity=affinity)
    assert result.kind is OutcomeKind.DEFERRED
    assert (result.reply_code, result.node) == (None, "a")
    assert "may have it" in result.reply
    assert second.count() == 0 and mailu.count() == 1


async def test_slow_end_of_data_times_out_deferred(mailu: FakeMailU, pool_for: Any) -> None:
    pool = await pool_for(relay_cfg(mailu.relay_node("a"), command_timeout_s=0.3))
    mailu.set_delay("DATA", 1.0)
    result = await pool.send("b@sender.test", ["r@x.test"], message(1))
    assert result.kind is OutcomeKind.DEFERRED and result.reply_code is None
    assert "end of DATA" in result.reply
    mailu.reset_faults()
    assert (await pool.send("b@sender.test", ["r@x.test"], message(2))).kind is (
        OutcomeKind.RELAYED
    )


async def test_slow_mail_reply_fails_over(
    mailu: FakeMailU, second: FakeMailU, pool_for: Any
) -> None:
    affinity = key_preferring("a", [("a", 1), ("b", 1)])
    cfg = relay_cfg(mailu.relay_node("a"), second.relay_node("b"), command_timeout_s=0.3)
    pool = await pool_for(cfg)
    mailu.delay_s = 1.0
    result = await pool.send("b@sender.test", ["r@x.test"], message(1), affinity=affinity)
    assert (result.kind, result.node, result.nodes_tried) == (OutcomeKind.RELAYED, "b", 2)


async def test_all_nodes_down_is_deferred_not_an_exception(
    mailu: FakeMailU, second: FakeMailU, pool_for: Any
) -> None:
    pool = await pool_for(relay_cfg(mailu.relay_node("a"), second.relay_node("b")))
    mailu.stop()
    second.stop()
    result = await pool.send("b@sender.test", ["r@x.test"], message(1))
    assert result.kind is OutcomeKind.DEFERRED
    assert result.reply.startswith(NO_RELAY_AVAILABLE)
    assert (result.node, result.reply_code, result.nodes_tried) == (None, None, 2)


async def test_breaker_opens_and_recovers(mailu: FakeMailU, pool_for: Any) -> None:
    pool = await pool_for(
        relay_cfg(mailu.relay_node("a"), breaker_failures=2, breaker_cooldown_s=0.3)
    )
    mailu.stop()
    for _ in range(2):
        assert (await pool.send("b@x.test", ["r@x.test"], message(0))).nodes_tried == 1
    assert pool.snapshot()[0].breaker is BreakerState.OPEN
    # Open: no connect attempt at all, the answer is immediate.
    fast = await pool.send("b@x.test", ["r@x.test"], message(0))
    assert (fast.kind, fast.nodes_tried, fast.reply) == (
        OutcomeKind.DEFERRED,
        0,
        NO_RELAY_AVAILABLE,
    )
    assert not pool.available()

    mailu.start()
    await asyncio.sleep(0.35)
    assert pool.snapshot()[0].breaker is BreakerState.HALF_OPEN
    result = await pool.send("b@x.test", ["r@x.test"], message(1))
    assert result.kind is OutcomeKind.RELAYED
    status = pool.snapshot()[0]
    assert status.breaker is BreakerState.CLOSED and status.healthy


async def test_health_check_reports_and_closes_breaker(
    mailu: FakeMailU, second: FakeMailU, pool_for: Any
) -> None:
    pool = await pool_for(
        relay_cfg(mailu.relay_node("a"), second.relay_node("b"), breaker_failures=1)
    )
    second.stop()
    statuses = {s.name: s for s in await pool.check_health()}
    assert statuses["a"].healthy and statuses["a"].breaker is BreakerState.CLOSED
    assert not statuses["b"].healthy and statuses["b"].breaker is BreakerState.OPEN
    assert statuses["b"].last_error and "health check failed" in statuses["b"].last_error
    second.start()
    statuses = {s.name: s for s in await pool.check_health()}
    assert statuses["b"].healthy and statuses["b"].breaker is BreakerState.CLOSED
    assert statuses["a"].connections_open == 0  # probes do not stay in the pool


async def test_periodic_health_task_runs(mailu: FakeMailU) -> None:
    pool = RelayPool(relay_cfg(mailu.relay_node("a"), health_interval_s=0.05))
    await pool.start()
    try:
        for _ in range(100):
            if mailu.connections >= 2:
                break
            await asyncio.sleep(0.02)
        assert mailu.connections >= 2
    finally:
        await pool.close()


# -- concurrency and shutdown ---------------------------------------------------------------------


async def test_500_messages_50_tasks_arrive_exactly_once(
    mailu: FakeMailU, second: FakeMailU, pool_for: Any
) -> None:
    pool = await pool_for(
        relay_cfg(mailu.relay_node("a", max_connections=8), second.relay_node("b"))
    )
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(500):
        queue.put_nowait(i)
    outcomes: list[OutcomeKind] = []

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            r = await pool.send("b@x.test", [f"r{i}@x.test"], message(i), affinity=f"s{i % 37}")
            outcomes.append(r.kind)

    await asyncio.gather(*(worker() for _ in range(50)))
    assert outcomes.count(OutcomeKind.RELAYED) == 500
    ids = Counter(mailu.message_ids() + second.message_ids())
    assert len(ids) == 500 and set(ids.values()) == {1}
    assert mailu.count() > 0 and second.count() > 0


async def test_close_quits_every_session(mailu: FakeMailU) -> None:
    pool = RelayPool(relay_cfg(mailu.relay_node("a", max_connections=3)))
    await pool.start(health_checks=False)
    await asyncio.gather(*(pool.send("b@x.test", ["r@x.test"], message(i)) for i in range(9)))
    assert pool.snapshot()[0].connections_open >= 1
    await pool.close()
    assert pool.snapshot()[0].connections_open == 0
    await pool.close()  # idempotent
