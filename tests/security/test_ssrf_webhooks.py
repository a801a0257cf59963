"""Webhook SSRF: a tenant cannot make the engine call the internal network.

DNS is mocked at the engine's seam (a dict answering ``resolve(name, rdtype)``); everything else
is real: the rules of engine/events/ssrf.py, creation through the service, and delivery by the
real worker to a real loopback receiver. Names resolving into each forbidden range, IP literals
in decimal/octal/hex and IPv6-embedded spellings, a forbidden port, a redirect and a receiver's
error body are all refused or reduced to a status code; an operator CIDR lets loopback through.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from engine.errors import WebhookError
from engine.events import webhooks as endpoints
from engine.events.delivery import WebhookWorker
from engine.events.ssrf import Policy, check_url, forbidden, literal_ip, vet
from engine.store import tenants
from tests.conftest import make_config
from tests.integration.test_webhooks_delivery import Receiver, ev, eventually, write_committed


class FakeDns:
    """The DNS seam: answers from a table, counts lookups."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.lookups: list[tuple[str, str]] = []

    async def __call__(self, name: str, rdtype: str) -> list[str]:
        self.lookups.append((name, rdtype))
        return [a for a in self.table.get(name, []) if (":" in a) == (rdtype == "AAAA")]


PUBLIC = Policy()  # the defaults: any host name, global addresses, ports 80 and 443

FORBIDDEN_ANSWERS = [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.5.4", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "metadata"),
    ("169.254.10.10", "link-local"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("224.0.0.251", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("192.0.2.10", "reserved"),
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fe80::1", "link-local"),
    ("fd00:ec2::254", "metadata"),
    ("fd12:3456::1", "unique local"),
    ("ff02::1", "multicast"),
    ("::ffff:127.0.0.1", "loopback, inside an IPv6"),
    ("::ffff:169.254.169.254", "metadata"),
    ("::127.0.0.1", "IPv4-compatible"),
    ("2002:a00:1::1", "private (RFC 1918), inside an IPv6"),
    ("64:ff9b::7f00:1", "loopback, inside an IPv6"),
    ("2001:db8::1", "reserved"),
]


@pytest.mark.parametrize(("address", "why"), FORBIDDEN_ANSWERS)
async def test_a_name_resolving_into_a_forbidden_range_is_refused(address: str, why: str) -> None:
    dns = FakeDns({"hooks.tenant.example": [address]})
    with pytest.raises(WebhookError, match="resolves to a") as err:
        await vet("https://hooks.tenant.example/pm", PUBLIC, dns)
    assert why in err.value.message
    assert address not in err.value.message  # how internal names resolve stays private


async def test_one_forbidden_address_among_public_ones_refuses_the_name() -> None:
    dns = FakeDns({"hooks.tenant.example": ["93.184.216.34", "10.0.0.7", "2606:4700::1"]})
    with pytest.raises(WebhookError, match="private"):
        await vet("https://hooks.tenant.example/pm", PUBLIC, dns)


async def test_public_addresses_pass_and_unresolvable_names_do_not() -> None:
    dns = FakeDns({"hooks.tenant.example": ["93.184.216.34", "2606:4700::1"]})
    target = await vet("https://hooks.tenant.example/pm", PUBLIC, dns)
    assert (target.host, target.port) == ("hooks.tenant.example", 443)
    with pytest.raises(WebhookError, match="does not resolve"):
        await vet("https://nothing.tenant.example/pm", PUBLIC, dns)


@pytest.mark.parametrize(
    ("url", "spelled"),
    [
        ("http://2130706433/", "127.0.0.1"),  # decimal
        ("http://017700000001/", "127.0.0.1"),  # octal
        ("http://0x7f000001/", "127.0.0.1"),  # hex
        ("http://0x7f.1/", "127.0.0.1"),  # two parts, hex
        ("http://0177.0.0.1/", "127.0.0.1"),  # dotted octal
        ("http://127.1/", "127.0.0.1"),
        ("http://2852039166/latest/meta-data/", "169.254.169.254"),
        ("http://[::ffff:127.0.0.1]/", "::ffff:7f00:1"),
        ("http://[::ffff:7f00:1]/", "::ffff:7f00:1"),
        ("http://[0:0:0:0:0:ffff:a9fe:a9fe]/", "::ffff:a9fe:a9fe"),
        ("http://[::127.0.0.1]/", "::7f00:1"),
        ("http://[fd00:ec2::254]/", "fd00:ec2::254"),
        ("http://[fe80::1%25eth0]/", "fe80::1%eth0"),
        ("http://127.0.0.1./", "127.0.0.1"),
    ],
)
async def test_ip_literals_in_every_spelling_are_refused(url: str, spelled: str) -> None:
    dns = FakeDns({})
    with pytest.raises(WebhookError, match="resolves to a"):
        check_url(url, PUBLIC)
    with pytest.raises(WebhookError, match="resolves to a"):
        await vet(url, PUBLIC, dns)
    assert dns.lookups == []  # a literal is never sent to DNS


def test_literal_parsing_does_not_take_names_for_numbers() -> None:
    assert literal_ip("2130706433") is not None
    assert literal_ip("deadbeef.example") is None
    assert literal_ip("cafe") is None  # a name (hex digits only would need a 0x prefix)
    assert literal_ip("1.2.3.4.5") is None
    public = literal_ip("8.8.8.8")
    assert public is not None and forbidden(public) is None


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://hooks.tenant.example/pm", True),
        ("http://hooks.tenant.example/pm", True),
        ("https://hooks.tenant.example:443/pm", True),
        ("http://hooks.tenant.example:8080/pm", False),
        ("https://hooks.tenant.example:8025/v1/drain", False),
        ("http://hooks.tenant.example:22/", False),
    ],
)
async def test_only_ports_80_and_443_by_default(url: str, ok: bool) -> None:
    dns = FakeDns({"hooks.tenant.example": ["93.184.216.34"]})
    if ok:
        await vet(url, PUBLIC, dns)
    else:
        with pytest.raises(WebhookError, match=r"port \d+ is not allowed"):
            await vet(url, PUBLIC, dns)


async def test_an_operator_cidr_lets_loopback_through() -> None:
    policy = Policy(cidrs=("127.0.0.0/8",), ports=(80, 443, 8080))
    dns = FakeDns({"hooks.internal.example": ["127.0.0.1"], "meta.example": ["169.254.169.254"]})
    await vet("http://hooks.internal.example:8080/x", policy, dns)
    await vet("http://2130706433:8080/x", policy, dns)
    with pytest.raises(WebhookError, match="metadata"):
        await vet("http://meta.example/x", policy, dns)


# -- the real worker, a real loopback receiver --------------------------------------------------


@pytest.fixture
async def receiver() -> Any:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


#: What creation is given in these tests: anything goes, so that delivery's own checks (which
#: use the running config) are what is exercised, as after a config change or a DNS change.
ANYTHING = Policy(cidrs=("0.0.0.0/0", "::/0"), ports=tuple(range(1, 65536)))


async def _one_round(
    pool: asyncpg.Pool, dsn: str, prefix: str, dns: FakeDns, url: str, **events: object
) -> endpoints.Endpoint:
    """Create an endpoint, write one event, run the real worker until the endpoint delivered
    or failed once; return its state as ``GET /v1/webhooks`` shows it."""
    cfg = make_config(
        dsn,
        prefix,
        events={
            "webhook_flush_ms": 20,
            "webhook_timeout_s": 2,
            "webhook_retry_base_s": 30,
            **events,
        },
    )
    await tenants.add(pool, "acme")
    await endpoints.create(pool, tenant_id="acme", url=url, policy=ANYTHING)
    worker = WebhookWorker(pool, cfg.events, dsn, resolve=dns, refresh_s=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait_for(worker.leading.wait(), 5)
        await write_committed(pool, [ev(1)])

        async def settled() -> bool:
            state = (await endpoints.list_endpoints(pool, "acme"))[0]
            return state.delivered > 0 or state.attempts > 0

        await eventually(settled)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    return (await endpoints.list_endpoints(pool, "acme"))[0]


async def test_delivery_refuses_a_name_that_now_resolves_to_loopback(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool, receiver: Receiver
) -> None:
    dns = FakeDns({"hooks.tenant.example": ["127.0.0.1"]})
    url = f"http://hooks.tenant.example:{receiver.port}/hook/a"
    state = await _one_round(pool, clean_db, redis_prefix, dns, url, webhook_ports=[receiver.port])
    assert state.delivered == 0 and state.last_status is None
    assert state.last_error is not None and state.last_error.startswith("refused:")
    assert "loopback" in state.last_error and "127.0.0.1" not in state.last_error
    assert receiver.requests == []


async def test_delivery_refuses_a_literal_and_a_port_outside_the_rules(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool, receiver: Receiver
) -> None:
    url = f"http://[::ffff:127.0.0.1]:{receiver.port}/hook/a"
    state = await _one_round(pool, clean_db, redis_prefix, FakeDns({}), url)
    assert state.last_error is not None and "port" in state.last_error
    assert receiver.requests == []


async def test_allow_listed_loopback_is_reached_through_the_vetted_address(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool, receiver: Receiver
) -> None:
    # The system resolver knows nothing of this name: the request can only arrive through the
    # address the seam answered and the vetting resolver pinned; Host still carries the name.
    dns = FakeDns({"hooks.tenant.example": ["127.0.0.1"]})
    url = f"http://hooks.tenant.example:{receiver.port}/hook/a"
    state = await _one_round(
        pool,
        clean_db,
        redis_prefix,
        dns,
        url,
        webhook_allow_cidrs=["127.0.0.0/8"],
        webhook_ports=[receiver.port],
    )
    assert state.delivered == 1 and state.last_status == 200
    (_, headers, _), *_ = receiver.requests
    assert headers["Host"] == f"hooks.tenant.example:{receiver.port}"
    assert ("hooks.tenant.example", "A") in dns.lookups


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_redirects_are_not_followed(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool, receiver: Receiver, status: int
) -> None:
    receiver.status = status
    url = f"http://127.0.0.1:{receiver.port}/hook/a"
    state = await _one_round(
        pool,
        clean_db,
        redis_prefix,
        FakeDns({}),
        url,
        webhook_allow_cidrs=["127.0.0.1/32"],
        webhook_ports=[receiver.port],
    )
    assert state.delivered == 0 and state.last_status == status
    assert state.last_error == f"HTTP {status} (redirects are not followed)"
    assert len(receiver.requests) == 1  # the redirect's target was never asked


async def test_a_receivers_error_body_is_never_shown(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool, receiver: Receiver
) -> None:
    receiver.status = 500  # answers "nope": no part of it may come back
    url = f"http://127.0.0.1:{receiver.port}/hook/a"
    state = await _one_round(
        pool,
        clean_db,
        redis_prefix,
        FakeDns({}),
        url,
        webhook_allow_cidrs=["127.0.0.1/32"],
        webhook_ports=[receiver.port],
    )
    assert state.last_error == "HTTP 500" and state.last_status == 500


async def test_creation_resolves_and_refuses_internal_names(pool: asyncpg.Pool) -> None:
    await tenants.add(pool, "acme")
    dns = FakeDns({"hooks.tenant.example": ["10.0.0.5"], "ok.tenant.example": ["93.184.216.34"]})
    with pytest.raises(WebhookError, match="private"):
        await endpoints.create(
            pool, tenant_id="acme", url="https://hooks.tenant.example/", policy=PUBLIC, resolve=dns
        )
    ep, _ = await endpoints.create(
        pool, tenant_id="acme", url="https://ok.tenant.example/", policy=PUBLIC, resolve=dns
    )
    assert [e.id for e in await endpoints.list_endpoints(pool, "acme")] == [ep.id]
