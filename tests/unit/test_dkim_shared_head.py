"""Signing with a shared header block (``sign_shared``): a campaign's content-level fields are
parsed once per signer process, each recipient's own fields per message. The signature must be
byte for byte the one :func:`sign` makes over the whole header block, whatever the fields."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.dkim import canon, worker
from engine.dkim.sign import sign, sign_shared
from engine.errors import DkimMessageError
from tests.unit.dkim_support import dkimpy_verify_all, key
from tests.unit.test_dkim_properties import _header, _names

TS = 1_700_000_000
BH = canon.body_hash(b"Hello.\r\n")
_any_name = st.one_of(_names, st.just(b"From"), st.just(b"from"))


def _block(fields: list[bytes], eol: bytes) -> bytes:
    return b"".join(f.replace(b"\n", eol) + eol for f in fields)


def _whole(prefix: bytes, head: bytes) -> bytes:
    return prefix + head + b"\r\n"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    own=st.lists(_header(_any_name), max_size=6),
    shared=st.lists(_header(_any_name), min_size=1, max_size=8),
    eol=st.sampled_from([b"\n", b"\r\n"]),
)
def test_shared_head_signs_exactly_as_the_whole_block(
    own: list[bytes], shared: list[bytes], eol: bytes
) -> None:
    """Same fields, duplicates, From counts and folds as the whole path, or the same refusal."""
    k = key("rsa", 1024, "example.com", "prop")
    prefix, head = _block(own, eol), _block(shared, eol)
    try:
        expected: bytes | str = sign(_whole(prefix, head), [k], body_hash=BH, timestamp=TS)
    except DkimMessageError as exc:
        expected = type(exc).__name__
    try:
        got: bytes | str = sign_shared(
            prefix, canon.SharedHead(head), [k], body_hash=BH, timestamp=TS
        )
    except DkimMessageError as exc:
        got = type(exc).__name__
    assert got == expected


def test_campaign_message_verifies_with_dkimpy() -> None:
    k = key("rsa", 2048, "example.com", "rsa1")
    prefix = (
        b"Message-ID: <1@example.com>\r\nDate: Mon, 07 Dec 2026 07:52:52 +0000\r\nTo: a@b.c\r\n"
    )
    head = b"From: news@example.com\r\nSubject: Hi\r\nMIME-Version: 1.0\r\n"
    body = b"Hello.\r\n"
    fields = sign_shared(prefix, canon.SharedHead(head), [k], body_hash=BH)
    assert dkimpy_verify_all(fields + prefix + head + b"\r\n" + body, k) == [True]


def test_a_from_in_both_parts_is_refused_like_two_froms() -> None:
    k = key("rsa", 1024, "example.com", "prop")
    shared = canon.SharedHead(b"From: a@example.com\r\n")
    try:
        sign_shared(b"From: b@example.com\r\n", shared, [k], body_hash=BH)
    except DkimMessageError as exc:
        assert "2 From header fields" in str(exc)
    else:
        raise AssertionError("two From fields were signed")


def test_is_field_block() -> None:
    assert canon.is_field_block(b"")
    assert canon.is_field_block(b"To: a\r\n Folded\r\nCc: b\n")
    assert not canon.is_field_block(b"To: a")  # not ending in a line break
    assert not canon.is_field_block(b"To: a\r\n\r\nbody\r\n")  # an empty line inside
    assert not canon.is_field_block(b"To: a\n\nbody\n")
    assert not canon.is_field_block(b"\r\nTo: a\r\n")


def test_worker_signs_split_items_as_whole_ones() -> None:
    """The signer process's entry point: a split item (own fields + shared head) gives the
    fields of the whole-header item, the cached head is reused, and a block that cannot be
    parsed apart falls back to the whole path."""
    k = key("rsa", 2048, "example.com", "rsa1")
    pem = k.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    specs = [(pem, k.domain, k.selector)]
    head = b"From: news@example.com\r\nSubject: Hi\r\nMIME-Version: 1.0\r\n"
    odd_head = b" folded onto the prefix\r\nFrom: news@example.com\r\n"
    prefixes = [f"Message-ID: <{i}@example.com>\r\nTo: u{i}@b.c\r\n".encode() for i in range(3)]
    split = [(p, BH, TS, head) for p in prefixes]
    split.append((prefixes[0], BH, TS, odd_head))  # a head that starts with a fold
    split.append((b"To: x\r\n\r\nX-Not: header\r\n", BH, TS, head))  # an empty line in own
    whole = [(p + h + b"\r\n", BH, TS, None) for p, _, _, h in split]
    assert worker.sign_fields(specs, split) == worker.sign_fields(specs, whole)
    assert worker._heads[head] is not None
    assert worker._heads[odd_head] is None
