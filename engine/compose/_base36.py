"""Lower-case base 36 for job ids: short, and immune to MTAs that lower-case local parts."""

from __future__ import annotations

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
# Two digits per step halves the Python-level loop (this runs for every message sent).
_PAIRS = [a + b for a in _DIGITS for b in _DIGITS]


def encode(number: int, width: int = 0) -> str:
    """Non-negative int -> lower-case base 36 (``0`` -> ``"0"``), left-padded with zeros to
    ``width`` characters."""
    if number < 0:
        raise ValueError("base36 encodes non-negative integers only")
    out: list[str] = []
    while number:
        number, rem = divmod(number, 1296)
        out.append(_PAIRS[rem])
    text = "".join(reversed(out)).lstrip("0") or "0"
    return text.rjust(width, "0") if width else text


def decode(text: str) -> int | None:
    """Lower-case base 36 -> int, or None when ``text`` is not canonical base 36.

    Canonical means no sign, no leading zero and at most 13 digits (fits a PostgreSQL bigint), so
    exactly one string maps to each id: that is what lets the HMAC cover the text directly.
    """
    if not text or len(text) > 13 or (text[0] == "0" and len(text) > 1):
        return None
    if not all(c in _DIGITS for c in text):
        return None
    value = int(text, 36)
    return value if value < 2**63 else None
