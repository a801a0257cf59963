"""Text scans shared by the bounce parsers: e-mail addresses in free text, an index-keeping
lower-casing, and a quoted field of the original message pasted below a notification.

Each runs in linear time on hostile input (the parsers read text an attacker writes)."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

#: Characters of pasted text searched for a quoted field of the original (its header block
#: follows the notification; the rest is the body of the mail we sent).
MAX_QUOTED_CHARS = 64 * 1024
_ADDRESS_IN_ANGLES = re.compile(r"<([^<>\s@]+@[^<>\s@]+)>")
# The look-behind starts a match only where a run of local-part characters starts: a match
# from inside a run exists only if one from its start does, and without it an @-less run of n
# characters costs n²/2 steps (a long To: field would stall the parse for seconds).
_BARE_ADDRESS = re.compile(
    r"(?<![A-Za-z0-9._%+=&'/!#$*?^`{|}~-])"
    r"([A-Za-z0-9._%+=&'/!#$*?^`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"
)

_LONG_LOWER = "\u0130"
_STAND_IN = "\U000f0000"


def first_address(text: str) -> str | None:
    """The first e-mail address in ``text`` (angle-bracketed preferred), or None."""
    if "@" not in text:
        return None  # both patterns need one; the bare one tries every position otherwise
    found = _ADDRESS_IN_ANGLES.search(text)
    if found:
        return found.group(1)
    bare = _BARE_ADDRESS.search(text)
    return bare.group(1) if bare else None


def addresses_in(text: str) -> list[str]:
    """Every e-mail address-looking token in ``text`` in order of appearance."""
    if "@" not in text:
        return []
    return [m.group(1) for m in _BARE_ADDRESS.finditer(text)]


def same_length_lower(text: str) -> str:
    """``text.lower()``, keeping indexes valid (the few characters that change length when
    lower-cased are left as they are)."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    # U+0130 (I with dot above) is the one character whose lower case is longer: it is swapped
    # for a private-use character around the lower-casing (C-speed passes, no per-piece loop).
    if _STAND_IN not in text:
        swapped = text.replace(_LONG_LOWER, _STAND_IN).lower()
        return swapped.replace(_STAND_IN, _LONG_LOWER)
    return _LONG_LOWER.join(piece.lower() for piece in text.split(_LONG_LOWER))


def quoted_field(text: str, lowered: str, name: str, *, indented: bool) -> str | None:
    """The value of the first ``Name: value`` line in pasted header text, or None.

    ``lowered`` is :func:`same_length_lower` of ``text`` (or of its start: only the first
    :data:`MAX_QUOTED_CHARS` are searched). Unless ``indented``, the field must
    start its line (so ``h=From:To:Subject`` inside a DKIM signature is not taken for it).
    """
    key = name.lower() + ":"
    # A newline is put in front so a field on the first line is found like the others.
    searched = "\n" + lowered[:MAX_QUOTED_CHARS]
    for position in _field_starts(searched, key, indented):
        position -= 1  # the index in ``text``
        end = text.find("\n", position)
        value = text[position + len(key) : end if end >= 0 else len(text)].strip()
        if value:
            return value
    return None


def _field_starts(searched: str, key: str, indented: bool) -> Iterator[int]:
    """Where ``key`` starts after a newline (and blanks when ``indented``) in ``searched``.

    Literal search (C's fast search) without blanks; with them one regex scan that hops from
    newline to newline. Both replace a find-then-look-back loop that took a Python step per
    occurrence of the key anywhere in a line.
    """
    if not indented:
        needle = "\n" + key
        position = searched.find(needle)
        while position >= 0:
            yield position + 1
            position = searched.find(needle, position + len(needle))
        return
    if key not in searched:
        return  # the regex would try every position of the text for nothing
    for found in _indented_field(key).finditer(searched):
        yield found.end() - len(key)


@functools.lru_cache(maxsize=32)
def _indented_field(key: str) -> re.Pattern[str]:
    return re.compile(rf"\n[^\S\n]*{re.escape(key)}")
