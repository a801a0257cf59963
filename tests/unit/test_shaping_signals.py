"""Relay outcomes → shaping signals (RFC 3463 classes), using the relay's own classifier."""

from __future__ import annotations

import pytest

from engine.model import OutcomeKind
from engine.relay.replies import classify_reply
from engine.shaping.model import SignalKind
from engine.shaping.signals import from_outcome, signal_kind


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (250, "2.0.0 Ok: queued", SignalKind.DELIVERED),
        (421, "4.7.0 Try again later, closing connection", SignalKind.THROTTLED),
        (451, "4.7.28 Our system has detected an unusual rate", SignalKind.THROTTLED),
        (450, "4.2.1 The user is receiving mail too quickly", SignalKind.THROTTLED),
        (451, "4.3.0 Temporary lookup failure", SignalKind.DEFERRED),
        (550, "5.1.1 The email account does not exist", SignalKind.HARD_BOUNCE),
        (550, "5.7.1 Message rejected due to poor reputation", SignalKind.BLOCKED),
        (552, "5.2.2 Mailbox full", SignalKind.SOFT_BOUNCE),
        (554, "Transaction failed", SignalKind.HARD_BOUNCE),
    ],
)  # fmt: skip
def test_reply_to_signal(code: int, text: str, expected: SignalKind) -> None:
    v = classify_reply(code, text)
    assert signal_kind(v.kind, v.throttled, v.reply_code, v.enhanced_status) is expected


def test_no_reply_is_a_deferral_and_holds_say_nothing() -> None:
    assert signal_kind(OutcomeKind.DEFERRED, False, None, None) is SignalKind.DEFERRED
    assert signal_kind(OutcomeKind.HELD, False, None, None) is None
    assert from_outcome("t", "a@b.c", "gmail", OutcomeKind.SUPPRESSED) is None
    s = from_outcome("t", "a@b.c", "gmail", OutcomeKind.DEFERRED, reply_code=421)
    assert s is not None and s.kind is SignalKind.THROTTLED
