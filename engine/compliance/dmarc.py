"""DMARC record parsing and alignment (RFC 7489), sans-IO.

Gmail and Yahoo require bulk senders to publish a DMARC record (``p=none`` is accepted) and to
pass DMARC, which for mail from this engine means DKIM alignment: the envelope sender is the
engine's VERP domain, so SPF alignment normally fails and DKIM carries the pass. Organizational
domains come from the Public Suffix List (engine/psl.py).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from engine.psl import normalize, organizational_domain

__all__ = ["DmarcParseError", "DmarcRecord", "aligned", "organizational_domain", "parse_record"]

Policy = Literal["none", "quarantine", "reject"]
Alignment = Literal["r", "s"]


class DmarcRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The tags of a ``v=DMARC1`` record that matter to a sender."""

    policy: Policy
    subdomain_policy: Policy | None = None
    adkim: Alignment = "r"
    aspf: Alignment = "r"
    pct: int = 100
    rua: str | None = None


class DmarcParseError(ValueError):
    """The TXT record is not a valid DMARC record (the message says which tag)."""


_POLICIES: frozenset[str] = frozenset({"none", "quarantine", "reject"})


def parse_record(txt: str) -> DmarcRecord:
    """Parse a DMARC TXT record; :class:`DmarcParseError` when v= or p= is missing or bad."""
    tags: dict[str, str] = {}
    for part in txt.split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise DmarcParseError(f"tag {part.strip()!r} has no value")
        tags[key.strip().lower()] = value.strip()
    if tags.get("v") != "DMARC1":
        raise DmarcParseError("the record must start with v=DMARC1")
    policy = tags.get("p", "").lower()
    if policy not in _POLICIES:
        raise DmarcParseError(f"p={policy or '(missing)'} (must be none, quarantine or reject)")
    sp = tags.get("sp", "").lower() or None
    if sp is not None and sp not in _POLICIES:
        raise DmarcParseError(f"sp={sp} (must be none, quarantine or reject)")
    adkim, aspf = tags.get("adkim", "r").lower(), tags.get("aspf", "r").lower()
    if adkim not in ("r", "s") or aspf not in ("r", "s"):
        raise DmarcParseError("adkim and aspf must be r or s")
    try:
        pct = int(tags.get("pct", "100"))
    except ValueError:
        raise DmarcParseError(f"pct={tags['pct']} is not a number") from None
    return msgspec.convert(
        {
            "policy": policy,
            "subdomain_policy": sp,
            "adkim": adkim,
            "aspf": aspf,
            "pct": pct,
            "rua": tags.get("rua"),
        },
        DmarcRecord,
    )


def aligned(mode: Alignment, from_domain: str, other: str) -> bool:
    """Identifier alignment (§3.1): strict = same domain, relaxed = same organizational domain."""
    a, b = normalize(from_domain), normalize(other)
    if mode == "s":
        return a == b
    return organizational_domain(a) == organizational_domain(b)
