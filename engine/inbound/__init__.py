"""Inbound mail understanding (sans-IO): bounces, complaints and auto-replies.

``parse_bounce(raw, envelope_to=None)`` turns one inbound message into a :class:`BounceReport`
(recipients with RFC 3463 status, SMTP reply code, DESIGN §7 reason and hard/soft, plus the
candidates that map it back to a job). ``BounceReport.to_record(file)`` is the Bounce JSON
contract of DESIGN §8. The SMTP listener and the database effects live elsewhere.
"""

from engine.inbound.classify import Classification, classify
from engine.inbound.parse import parse_bounce
from engine.inbound.report import (
    BounceKind,
    BounceRecord,
    BounceReport,
    Feedback,
    JobHints,
    Reason,
    Recipient,
    RecipientRecord,
)

__all__ = [
    "BounceKind",
    "BounceRecord",
    "BounceReport",
    "Classification",
    "Feedback",
    "JobHints",
    "Reason",
    "Recipient",
    "RecipientRecord",
    "classify",
    "parse_bounce",
]
