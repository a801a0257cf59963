"""Node selection: weighted rendezvous hashing and payload preparation (sans-IO)."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from engine.relay.node import prepare_payload
from engine.relay.select import random_order, rendezvous_order

NODES = [("a", 1), ("b", 1), ("c", 1)]


def test_same_key_same_order_on_every_call() -> None:
    first = rendezvous_order("example.com", NODES)
    assert sorted(first) == ["a", "b", "c"]
    assert all(rendezvous_order("example.com", NODES) == first for _ in range(10))


def test_removing_a_node_only_moves_its_own_keys() -> None:
    keys = [f"sender{i}.test" for i in range(2000)]
    before = {k: rendezvous_order(k, NODES)[0] for k in keys}
    without_c = [("a", 1), ("b", 1)]
    after = {k: rendezvous_order(k, without_c)[0] for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert all(before[k] == "c" for k in moved)
    # ...and a key whose first choice was c falls back to its own second choice.
    assert all(after[k] == rendezvous_order(k, NODES)[1] for k in moved)


def test_weights_shift_the_share() -> None:
    nodes = [("big", 3), ("small", 1)]
    wins = Counter(rendezvous_order(f"d{i}.test", nodes)[0] for i in range(8000))
    share = wins["big"] / 8000
    assert 0.70 < share < 0.80  # expected 0.75


def test_weight_zero_is_never_chosen() -> None:
    assert rendezvous_order("x.test", [("a", 0), ("b", 1)]) == ("b",)


def test_random_order_is_weighted() -> None:
    rng = random.Random(7)
    nodes = [("big", 2), ("small", 1)]
    wins = Counter(random_order(nodes, rng)[0] for _ in range(6000))
    assert 0.60 < wins["big"] / 6000 < 0.73  # expected 2/3


def test_payload_is_crlf_and_dot_stuffed() -> None:
    p = prepare_payload(b"Subject: x\n\n.hidden\nline\r.\rend")
    assert p.data == b"Subject: x\r\n\r\n..hidden\r\nline\r\n..\r\nend\r\n.\r\n"
    assert p.size == len(b"Subject: x\r\n\r\n.hidden\r\nline\r\n.\r\nend\r\n")


@given(st.binary(max_size=300))
def test_payload_never_ends_the_data_early(raw: bytes) -> None:
    data = prepare_payload(raw).data
    assert data.endswith(b"\r\n.\r\n")
    # The only "<CRLF>.<CRLF>" is the terminator (RFC 5321 §4.5.2).
    assert data[:-3].find(b"\r\n.\r\n") == -1
    assert not data.startswith(b".\r\n") or raw == b""
