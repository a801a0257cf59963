"""Sans-IO parts of the pipelined relay: the reply parser, address quoting, payload preparation."""

from __future__ import annotations

import itertools
import re

import pytest
from aiosmtplib.email import quote_address
from hypothesis import example, given
from hypothesis import strategies as st

from engine.relay.envelope import quote_mailbox
from engine.relay.node import prepare_payload
from engine.relay.wire import MAX_LINE, MalformedReply, Reply, ReplyParser

# -- ReplyParser ----------------------------------------------------------------------------------

GROUP = (
    b"250 2.1.0 Ok\r\n"
    b"250 2.1.5 Ok\r\n"
    b"550-5.1.1 no such user\r\n550 5.1.1 see https://example.test\r\n"
    b"354 End data with <CR><LF>.<CR><LF>\r\n"
)
EXPECTED = [
    Reply(250, "2.1.0 Ok"),
    Reply(250, "2.1.5 Ok"),
    Reply(550, "5.1.1 no such user\n5.1.1 see https://example.test"),
    Reply(354, "End data with <CR><LF>.<CR><LF>"),
]


def test_a_group_of_replies_in_one_read() -> None:
    parser = ReplyParser()
    assert parser.feed(GROUP) == 4
    assert parser.replies == EXPECTED


@given(st.lists(st.integers(min_value=0, max_value=len(GROUP)), max_size=12))
def test_replies_split_anywhere(cuts: list[int]) -> None:
    parser = ReplyParser()
    bounds = [0, *sorted(cuts), len(GROUP)]
    for a, b in itertools.pairwise(bounds):
        parser.feed(GROUP[a:b])
    assert parser.replies == EXPECTED


@pytest.mark.parametrize(
    ("raw", "reply"),
    [
        (b"250\r\n", Reply(250, "")),  # no text (RFC 5321 §4.2: the text is optional)
        (b"250 ok\n", Reply(250, "ok")),  # a bare LF from a sloppy server
        (b"421 4.7.0 bye \t\r\n", Reply(421, "4.7.0 bye")),
        (b"550 caf\xc3\xa9\r\n", Reply(550, "caf\u00e9")),
    ],
)
def test_reply_forms(raw: bytes, reply: Reply) -> None:
    parser = ReplyParser()
    parser.feed(raw)
    assert parser.replies == [reply]


def test_partial_reply_waits_for_the_rest() -> None:
    parser = ReplyParser()
    assert parser.feed(b"250-first\r\n250-sec") == 0
    assert parser.feed(b"ond\r\n250 last\r\n") == 1
    assert parser.replies == [Reply(250, "first\nsecond\nlast")]


@pytest.mark.parametrize(
    "raw",
    [b"hello\r\n", b"25 short\r\n", b"2500 no separator\r\n", b"abc text\r\n", b"250x\r\n"],
)
def test_malformed_lines(raw: bytes) -> None:
    with pytest.raises(MalformedReply):
        ReplyParser().feed(raw)


def test_endless_line_or_reply_is_refused() -> None:
    with pytest.raises(MalformedReply):
        ReplyParser().feed(b"250 " + b"x" * (MAX_LINE + 10))
    parser = ReplyParser()
    with pytest.raises(MalformedReply):
        for _ in range(100):
            parser.feed(b"250-" + b"y" * 1000 + b"\r\n")


def test_reset_forgets_everything() -> None:
    parser = ReplyParser()
    parser.feed(b"250 ok\r\n250-half")
    parser.reset()
    parser.feed(b"354 go\r\n")
    assert parser.replies == [Reply(354, "go")]


# -- quote_mailbox --------------------------------------------------------------------------------

_ADDR_CHARS = st.sampled_from(list("abcXYZ09.-_+=!#$%&'*/?^`{|}~@ <>\"()[],;:\\\t\r\n\x00é"))


def _aiosmtplib_quote(address: str) -> str:
    """What the command-by-command path puts on the wire (address quoting + argument check)."""
    quoted = quote_address(address)
    if re.search(r"[\x00-\x1f\x7f]", quoted):
        raise ValueError("control character")
    return quoted


@given(st.text(_ADDR_CHARS, max_size=30))
@example("bounce+abc.123=x@verp.example.test")
@example("")
@example("a..b@x.test")
@example(".a@x.test")
@example("a@x.test.")
@example("a@-x.test")
def test_quote_mailbox_matches_aiosmtplib(address: str) -> None:
    try:
        expected: str | None = _aiosmtplib_quote(address)
    except ValueError:
        expected = None
    try:
        got: str | None = quote_mailbox(address)
    except ValueError:
        got = None
    assert got == expected


# -- prepare_payload ------------------------------------------------------------------------------


def _normalised(message: bytes) -> bytes:
    body = re.sub(rb"\r\n|\n|\r(?!\n)", b"\r\n", message)
    return body if body.endswith(b"\r\n") else body + b"\r\n"


def _reference(message: bytes) -> bytes:
    """The two-regex implementation the fast path replaced."""
    return re.sub(rb"(?m)^\.", b"..", _normalised(message)) + b".\r\n"


_PIECES = st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"\xff"])


@given(st.binary(max_size=60) | st.lists(_PIECES, max_size=30).map(b"".join))
@example(b".")
@example(b"a\r\n.\r\n")
@example(b"a\r\r\n.b")
@example(b"Subject: x\r\n\r\nbody\r\n")
def test_prepare_payload_matches_the_reference(message: bytes) -> None:
    payload = prepare_payload(message)
    assert payload.data == _reference(message)
    assert payload.size == len(_normalised(message))  # RFC 1870: before dot-stuffing
    assert payload.eight_bit == (not message.isascii())
