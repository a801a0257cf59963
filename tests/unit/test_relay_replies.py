"""Reply classification (sans-IO): RFC 5321 reply classes and RFC 3463 enhanced codes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.model import OutcomeKind
from engine.relay.replies import classify_reply, local_failure, parse_enhanced_status


@pytest.mark.parametrize(
    ("code", "text", "kind", "enhanced", "throttled"),
    [
        (250, "2.0.0 Ok: queued as 4Xyz", OutcomeKind.RELAYED, "2.0.0", False),
        (250, "Ok", OutcomeKind.RELAYED, None, False),
        (421, "4.7.0 mailu.test Error: too many connections", OutcomeKind.DEFERRED, "4.7.0", True),
        (421, "Service not available", OutcomeKind.DEFERRED, None, True),
        (
            450,
            "4.2.1 The user is receiving mail at a rate that prevents...",
            OutcomeKind.DEFERRED,
            "4.2.1",
            True,
        ),
        (450, "4.2.2 mailbox full", OutcomeKind.DEFERRED, "4.2.2", False),
        (451, "4.3.0 Temporary lookup failure", OutcomeKind.DEFERRED, "4.3.0", False),
        (451, "4.7.1 Please try again later", OutcomeKind.DEFERRED, "4.7.1", True),
        (452, "4.5.3 Too many recipients", OutcomeKind.DEFERRED, "4.5.3", False),
        (450, "Rate limit exceeded for sender", OutcomeKind.DEFERRED, None, True),
        (
            550,
            "5.1.1 <x@y.test>: Recipient address rejected: User unknown",
            OutcomeKind.FAILED,
            "5.1.1",
            False,
        ),
        (554, "5.7.1 too many complaints, blocked", OutcomeKind.FAILED, "5.7.1", False),
        (552, "5.3.4 Message size exceeds fixed limit", OutcomeKind.FAILED, "5.3.4", False),
    ],
)
def test_reply_classes(
    code: int, text: str, kind: OutcomeKind, enhanced: str | None, throttled: bool
) -> None:
    verdict = classify_reply(code, text)
    assert verdict.kind is kind
    assert verdict.reply_code == code
    assert verdict.enhanced_status == enhanced
    assert verdict.throttled is throttled
    assert verdict.text == text


def test_no_reply_is_deferred_without_code() -> None:
    verdict = classify_reply(None, "connection refused")
    assert (verdict.kind, verdict.reply_code, verdict.throttled) == (
        OutcomeKind.DEFERRED,
        None,
        False,
    )


def test_unexpected_codes_are_retried_not_lost() -> None:
    # A 354 or aiosmtplib's -1 for a malformed line is not a final verdict on the message.
    assert classify_reply(354, "go ahead").kind is OutcomeKind.DEFERRED
    assert classify_reply(-1, "Malformed SMTP response line").kind is OutcomeKind.DEFERRED


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5.1.1 user unknown", "5.1.1"),
        ("  4.7.0 later", "4.7.0"),
        ("2.0.0", "2.0.0"),
        ("5.001.010 padded", "5.1.10"),
        ("5.7.26 unauthenticated mail is prohibited", "5.7.26"),
        ("3.1.1 not a class", None),
        ("5.1 incomplete", None),
        ("user unknown 5.1.1", None),
        ("5.1.1.1 too long", None),
        ("", None),
    ],
)
def test_parse_enhanced_status(text: str, expected: str | None) -> None:
    assert parse_enhanced_status(text) == expected


def test_multiline_reply_uses_first_line_code() -> None:
    text = "5.7.1 blocked\n5.7.1 see https://example.test/why"
    assert classify_reply(550, text).enhanced_status == "5.7.1"


def test_local_failure() -> None:
    verdict = local_failure("5.6.7 non-ASCII address")
    assert verdict.kind is OutcomeKind.FAILED
    assert verdict.reply_code is None
    assert verdict.enhanced_status == "5.6.7"


@given(code=st.one_of(st.none(), st.integers(-1, 999)), text=st.text(max_size=200))
def test_classify_never_raises_and_class_follows_code(code: int | None, text: str) -> None:
    verdict = classify_reply(code, text)
    if code is not None and 200 <= code < 300:
        assert verdict.kind is OutcomeKind.RELAYED
    elif code is not None and 500 <= code < 600:
        assert verdict.kind is OutcomeKind.FAILED
    else:
        assert verdict.kind is OutcomeKind.DEFERRED
    if verdict.throttled:
        assert code is not None and 400 <= code < 500
