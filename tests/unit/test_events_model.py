"""Events, sans-IO: outcome rows → events, JSON round trip, webhook signatures (Standard Webhooks,
checked with the reference library, and the deprecated header), allow-list."""

from __future__ import annotations

import base64
import datetime as dt

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from engine.errors import WebhookError
from engine.events import Event, OutcomeEventInput, from_outcome_rows
from engine.events.model import from_json, to_json
from engine.events.signature import new_secret, sign, standard_headers, verify, verify_standard
from engine.events.ssrf import Policy, check_url, host_allowed

AT = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
ALLOW = ["127.0.0.1", "localhost", "::1", "*.hooks.example.com"]


def test_outcome_rows_become_events_and_holds_do_not() -> None:
    rows = [
        {"id": 1, "tenant_id": "acme", "sender": "a@acme.example", "state": "relayed"},
        {"id": 2, "tenant_id": "acme", "sender": "a@acme.example", "state": "deferred"},
        {"id": 3, "tenant_id": "acme", "sender": "a@acme.example", "state": "queued"},
        {"id": 4, "tenant_id": "acme", "sender": "a@acme.example", "state": "failed"},
        {"id": 5, "tenant_id": "acme", "sender": "a@acme.example", "state": "sending"},
    ]
    inputs = [
        OutcomeEventInput(1, "<m1@x>", "u1@example.com", "250 2.0.0 queued as X", 250, "2.0.0"),
        OutcomeEventInput(2, "<m2@x>", "u2@example.com", "421 4.7.0 slow down", 421, "4.7.0"),
        OutcomeEventInput(3, hold=True),
        OutcomeEventInput(4, "<m4@x>", "u4@example.com", "550 5.1.1 no such user", 550, "5.1.1"),
        OutcomeEventInput(99, "<lost@x>"),  # lease lost: not in rows, no event
    ]
    events = from_outcome_rows(rows, inputs, at=AT)
    assert [(e.job_id, e.kind, e.reason) for e in events] == [
        (1, "relayed", None),
        (2, "deferred", "4.7.0"),
        (4, "failed", "5.1.1"),
    ]
    assert events[0].reply == "250 2.0.0 queued as X" and events[0].at == AT
    assert events[2].data == {"sender": "a@acme.example", "code": 550, "status": "5.1.1"}
    assert events[1].message_id == "<m2@x>" and events[1].recipient == "u2@example.com"
    held = from_outcome_rows(rows[2:3], inputs, at=AT, holds=True)
    assert [e.kind for e in held] == ["deferred"]


@given(
    st.builds(
        Event,
        tenant_id=st.text(min_size=1, max_size=20),
        kind=st.sampled_from(["relayed", "bounced"]),
        job_id=st.none() | st.integers(0, 2**62),
        recipient=st.none() | st.text(max_size=40),
        reply=st.none() | st.text(max_size=80),
        at=st.just(AT),
        data=st.none() | st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
        id=st.none() | st.integers(1, 2**62),
    )
)
def test_event_json_round_trip(event: Event) -> None:
    assert from_json(to_json(event)) == event


def test_signature_verifies_and_rejects() -> None:
    body = b'{"events":[]}'
    header = sign("whsec_k", body, timestamp=1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert verify("whsec_k", body, header, now=1_700_000_100)
    assert not verify("whsec_k", body, header, now=1_700_001_000)  # too old: replay refused
    assert not verify("whsec_other", body, header, now=1_700_000_000)
    assert not verify("whsec_k", body + b"x", header, now=1_700_000_000)
    rotated = header + ",v1=" + "0" * 64
    assert verify("whsec_k", body, rotated, now=1_700_000_000)
    for bad in ("", "t=abc,v1=00", "v1=00", "t=1700000000"):
        assert not verify("whsec_k", body, bad, now=1_700_000_000)


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("127.0.0.1", True),
        ("LOCALHOST", True),
        ("[::1]", True),
        ("a.hooks.example.com", True),
        ("hooks.example.com", False),
        ("a.hooks.example.com.evil.net", False),
        ("169.254.169.254", False),
        ("10.1.2.3", False),
    ],
)
def test_allow_list(host: str, ok: bool) -> None:
    assert host_allowed(host, ALLOW) is ok


def test_check_url() -> None:
    policy = Policy(hosts=tuple(ALLOW), cidrs=("::1/128",), ports=(8080,))
    assert check_url("http://[::1]:8080/hook", policy).literal == "::1"
    with pytest.raises(WebhookError, match="user name or password"):
        check_url("http://user@10.0.0.1/", policy)
    with pytest.raises(WebhookError, match="no host"):
        check_url("http:///path", policy)


def test_standard_signature_verifies_with_the_reference_library() -> None:
    body = b'{"endpoint_id":1,"attempt":1,"events":[]}'
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    headers = standard_headers(secret, "msg_1_5_9", body)
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(body, headers) == orjson.loads(body)
    assert verify_standard(secret, body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, {**headers, "webhook-id": "msg_other"})


def test_standard_signature_of_a_secret_from_before_standard_base64() -> None:
    # Secrets created before this release are URL-safe base64 without padding.
    old = "whsec_" + "Ab-_" * 10 + "xyz"
    body = b'{"events":[]}'
    headers = standard_headers(old, "msg_1_1_1", body, timestamp=1_700_000_000)
    assert Webhook(old).sign("msg_1_1_1", _utc(1_700_000_000), body) == headers["webhook-signature"]
    assert verify_standard(old, body, headers, now=1_700_000_010)
    assert not verify_standard(old, body, headers, now=1_700_001_000)  # too old: replay refused
    rotated = {**headers, "webhook-signature": "v1,AAAA " + headers["webhook-signature"]}
    assert verify_standard(old, body, rotated, now=1_700_000_000)
    assert not verify_standard(old, body, {**headers, "webhook-id": ""}, now=1_700_000_000)


def _utc(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


@given(
    key=st.binary(min_size=1, max_size=64),
    msg_id=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40),
    body=st.binary(max_size=300),
)
def test_any_standard_signature_verifies_with_the_reference_library(
    key: bytes, msg_id: str, body: bytes
) -> None:
    secret = "whsec_" + base64.b64encode(key).decode()
    headers = standard_headers(secret, msg_id, body, timestamp=1_700_000_000)
    assert Webhook(secret).sign(msg_id, _utc(1_700_000_000), body) == headers["webhook-signature"]
    assert verify_standard(secret, body, headers, now=1_700_000_000)
