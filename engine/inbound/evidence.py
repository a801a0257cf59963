"""What an inbound message proves about itself, gathered where it is parsed (off the event loop).

A complaint or a bounce may only change state when it proves it is about our mail (DESIGN §7):
our own DKIM signature in the embedded original, an authenticated feedback-loop reporter, our
ENVID, or a valid VERP address (checked by the listener). Everything that costs CPU on attacker
bytes (canonicalisation, hashing) happens here, in the parse worker under its CPU budget; the
event loop is left with key lookups and one signature check per signature.
"""

from __future__ import annotations

import msgspec

from engine.inbound.parse import parse_bounce
from engine.inbound.report import BounceReport


class DkimEvidence(msgspec.Struct, frozen=True, kw_only=True):
    """One DKIM-Signature field, canonicalised and hashed: only the public-key check is left."""

    domain: str
    selector: str
    algorithm: str
    digest: bytes  # what b= signs (hash of the canonicalised signed fields)
    signature: bytes  # b=, decoded
    body_ok: bool | None = None  # None: the body was not there to check


class Evidence(msgspec.Struct, frozen=True, kw_only=True):
    """DKIM material of the report itself (``outer``) and of the original it quotes."""

    outer: tuple[DkimEvidence, ...] = ()
    original: tuple[DkimEvidence, ...] = ()
    envid: str | None = None


class Analysis(msgspec.Struct, frozen=True):
    """What the parse worker returns for one inbound message."""

    report: BounceReport
    evidence: Evidence = Evidence()


def gather(raw: bytes, report: BounceReport) -> Evidence:
    """The authentication material of ``raw`` (see the module doc)."""
    return Evidence()


def analyse(raw: bytes, envelope_to: str | None = None) -> Analysis:
    """Parse one inbound message and gather its evidence: the parse worker's one call."""
    report = parse_bounce(raw, envelope_to)
    return Analysis(report, gather(raw, report))
