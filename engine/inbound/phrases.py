"""Sets of regex phrases searched fast in lower-case text.

Python's ``re`` tries every branch of an alternation at every position, so a few hundred
phrases joined with ``|`` cost milliseconds per diagnostic (and ten times more with
IGNORECASE). Most phrases contain a plain literal run ("mailbox", "quota exceeded"); a
``str.__contains__`` check on it (C speed) rules a phrase out before its regex runs. Callers
lower-case the text once and write phrases in lower case.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable

#: Shorter literals filter too little to be worth the check.
MIN_LITERAL = 3
_QUANTIFIERS = frozenset("?*{")
_ESCAPED_LITERALS = frozenset(".-()[]|/#+*?{}^$\\:'\"<>@&=!%,;_ ")


def required_literal(pattern: str) -> str | None:
    """The longest literal run every match of ``pattern`` must contain, or None.

    Only top-level text counts (groups, classes and top-level alternations give no guarantee);
    a character followed by ``?``/``*``/``{`` is optional and ends the run.
    """
    runs: list[str] = []
    run: list[str] = []
    depth = 0
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if depth:
            if char == "\\":
                index += 1
            elif char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
            index += 1
            continue
        literal, width = _literal_at(pattern, index)
        if literal is None:
            if char == "|":
                return None  # a top-level alternative: nothing is required
            runs.append("".join(run))
            run = []
            if char == "(":
                depth = 1
            elif char == "[":
                index = _skip_class(pattern, index)
            elif char == "{":
                # A counted repeat: its digits are not text ("a{0,10}" does not require "0,10").
                close = pattern.find("}", index)
                index = close if close >= 0 else index
            index += width
            continue
        following = pattern[index + width : index + width + 1]
        if following and following in _QUANTIFIERS:
            runs.append("".join(run))
            run = []
        else:
            run.append(literal)
        index += width
    runs.append("".join(run))
    best = max(runs, key=len)
    return best if len(best) >= MIN_LITERAL else None


def needs_non_ascii(pattern: str) -> bool:
    """Whether every match of ``pattern`` contains a non-ASCII character (so it cannot occur
    in ASCII text): a required top-level literal character is non-ASCII, or a required
    top-level group has only plain literal branches that each contain one."""
    depth = 0
    index = 0
    group_start = -1
    needed = False  # decided at the end: a later top-level "|" makes nothing required
    while index < len(pattern):
        char = pattern[index]
        following = pattern[index + 1 : index + 2]
        optional = bool(following) and following in _QUANTIFIERS
        if char == "\\":
            index += 2
            continue
        if char == "[":
            index = _skip_class(pattern, index) + 1
            continue
        if char == "|" and depth == 0:
            return False  # a top-level alternative: nothing is required
        if char == "(":
            if depth == 0:
                group_start = index
            depth += 1
        elif char == ")" and depth:
            depth -= 1
            if depth == 0 and not optional:
                branches = _literal_branches(pattern[group_start + 1 : index])
                if branches and not any(branch.isascii() for branch in branches):
                    needed = True
        elif depth == 0 and not char.isascii() and not optional:
            needed = True
        index += 1
    return needed


def _literal_branches(body: str) -> tuple[str, ...] | None:
    """The branches of a group body made of plain literals only (``?:`` allowed), or None."""
    if body.startswith("?:"):
        body = body[2:]
    elif body.startswith("?"):
        return None  # a look-around or a named group
    branches: list[str] = []
    run: list[str] = []
    index = 0
    while index < len(body):
        if body[index] == "|":
            branches.append("".join(run))
            run = []
            index += 1
            continue
        literal, width = _literal_at(body, index)
        following = body[index + width : index + width + 1]
        if literal is None or (following and following in _QUANTIFIERS):
            return None
        run.append(literal)
        index += width
    branches.append("".join(run))
    return tuple(branches) if all(branches) else None


def _literal_at(pattern: str, index: int) -> tuple[str | None, int]:
    """(literal character, width) at ``index``, or (None, width) for a regex construct."""
    char = pattern[index]
    if char == "\\":
        escaped = pattern[index + 1 : index + 2]
        if escaped and escaped in _ESCAPED_LITERALS:
            return escaped, 2
        return None, 2
    if char in ".^$*+?{}[]|()":
        return None, 1
    return char, 1


def _skip_class(pattern: str, index: int) -> int:
    """Index of the ``]`` closing the character class that starts at ``index``."""
    index += 1
    if pattern[index : index + 1] == "^":
        index += 1
    if pattern[index : index + 1] == "]":
        index += 1
    while index < len(pattern) and pattern[index] != "]":
        index += 2 if pattern[index] == "\\" else 1
    return index


#: Up to this length a text may be indexed by its 4-grams; longer ones are scanned literal by
#: literal.
_GRAM_TEXT_LIMIT = 600
#: Characters of the literal gram the index is keyed on (shorter literals are always tried): 4
#: leaves fewer false candidates than 3 for the same cost of cutting the text.
#: ``first_index`` cuts the text with a zip of this many shifted copies.
_GRAM = 4
#: A text is indexed only when the set has more than this many phrases per character: cutting
#: it into grams costs about as much per character as two literal checks (measured on the
#: fixture corpus), so small sets and long texts are cheaper to scan.
_GRAM_SET_RATIO = 2


def _grams_of(literal: str | None) -> list[tuple[str, ...]]:
    """The grams of a literal, in order (none for a missing or short one)."""
    if literal is None or len(literal) < _GRAM:
        return []
    return [tuple(literal[start : start + _GRAM]) for start in range(len(literal) - _GRAM + 1)]


class PhraseSet:
    """Regex phrases with literal prefilters, kept in order.

    ``first_index`` finds the first phrase (in the given order) that occurs. Against a large set
    a short text (a diagnostic) is cut into 4-grams and only the phrases whose literal's key gram
    is one of them are tried; otherwise the phrases are checked literal by literal. Both ways
    try, in order, every phrase whose literal occurs, so they always give the same answer.
    """

    __slots__ = ("_always", "_always_ascii", "_by_gram", "_grams", "_phrases")

    def __init__(self, patterns: Iterable[str]) -> None:
        self._phrases: list[tuple[str | None, re.Pattern[str]]] = []
        # Grams are tuples of characters: zip() cuts a text into them in C, faster than
        # slicing it in a Python loop.
        self._by_gram: dict[tuple[str, ...], list[int]] = {}
        self._always: list[int] = []
        for pattern in patterns:
            self._phrases.append((required_literal(pattern), re.compile(pattern)))
        # Each phrase is keyed on the gram of its literal that the fewest literals of the set
        # share: "mail" is in most diagnostics, so keying "mailbox unavailable" on it would
        # make it a candidate for nearly every text.
        literal_grams = [_grams_of(literal) for literal, _ in self._phrases]
        shared = collections.Counter(gram for grams in literal_grams for gram in set(grams))
        for index, grams in enumerate(literal_grams):
            if not grams:
                self._always.append(index)
            else:
                # min keeps the first of equally shared grams.
                key = min(grams, key=shared.__getitem__)
                self._by_gram.setdefault(key, []).append(index)
        self._grams = frozenset(self._by_gram)
        #: The always-tried phrases that can occur in ASCII text (most texts are ASCII; the
        #: phrases in other scripts are the ones with no literal long enough to key).
        self._always_ascii = [
            index for index in self._always if not needs_non_ascii(self._phrases[index][1].pattern)
        ]

    def __len__(self) -> int:
        return len(self._phrases)

    def first_index(self, text: str) -> int | None:
        """Position of the first phrase that occurs in ``text`` (lower-cased), or None."""
        phrases = self._phrases
        if len(text) > _GRAM_TEXT_LIMIT or len(text) * _GRAM_SET_RATIO >= len(phrases):
            for index, (literal, regex) in enumerate(phrases):
                if (literal is None or literal in text) and regex.search(text):
                    return index
            return None
        candidates = list(self._always_ascii if text.isascii() else self._always)
        by_gram = self._by_gram
        for gram in self._grams.intersection(zip(text, text[1:], text[2:], text[3:], strict=False)):
            candidates.extend(by_gram[gram])
        candidates.sort()
        for index in candidates:
            literal, regex = phrases[index]
            if (literal is None or literal in text) and regex.search(text):
                return index
        return None

    def search(self, text: str) -> bool:
        """True when some phrase occurs in ``text`` (already lower-cased)."""
        return self.first_index(text) is not None
