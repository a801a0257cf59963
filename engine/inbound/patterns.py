"""Diagnostic-text patterns for bounce reasons, loaded from ``bounce_patterns.toml``
(``/etc/penguinmails-engine/`` when the operator put one there, else the packaged
``engine/data/``).

The file is read and compiled once per process (``load_patterns`` is cached): every reason's
phrases become a :class:`~engine.inbound.phrases.PhraseSet`, searched in the file's priority
order over the lower-cased, whitespace-collapsed diagnostic.
"""

from __future__ import annotations

import functools
import re
import tomllib
from pathlib import Path

import msgspec

from engine.config import data_file, data_file_candidates
from engine.errors import ConfigError
from engine.inbound.phrases import PhraseSet
from engine.inbound.report import Reason

#: Where the data file is looked for, first match wins (engine.config.data_file).
PATTERN_FILE_CANDIDATES = data_file_candidates("bounce_patterns.toml")
DEFAULT_PATTERNS_FILE = data_file("bounce_patterns.toml")


class _ReasonEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Reason
    patterns: list[str]


class _PatternFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    reason: list[_ReasonEntry]


class ReasonPatterns:
    """Compiled reason patterns in priority order (one PhraseSet over the whole file)."""

    __slots__ = ("_all", "_primary", "_reason_of")

    def __init__(self, entries: list[tuple[Reason, list[str]]]) -> None:
        self._reason_of: list[Reason] = []
        flat: list[str] = []
        self._primary: dict[Reason, PhraseSet] = {}
        for reason, patterns in entries:
            self._reason_of.extend([reason] * len(patterns))
            flat.extend(patterns)
            if reason not in self._primary:
                self._primary[reason] = PhraseSet(patterns)
        self._all = PhraseSet(flat)

    def match(self, text: str) -> Reason | None:
        """The highest-priority reason whose pattern occurs in ``text`` (already normalised)."""
        index = self._all.first_index(text)
        return None if index is None else self._reason_of[index]

    def matches_specific(self, reason: Reason, text: str) -> bool:
        """Whether the first (specific-phrase) table of ``reason`` matches ``text``."""
        phrases = self._primary.get(reason)
        return bool(phrases and phrases.search(text))

    @property
    def reasons(self) -> list[Reason]:
        """The reasons that have patterns, in priority order (first table of each)."""
        return list(self._primary)


def normalise(text: str) -> str:
    """Lower-case and collapse whitespace: the form every pattern is written against."""
    return " ".join(text.lower().split())


@functools.cache
def load_patterns(path: Path = DEFAULT_PATTERNS_FILE) -> ReasonPatterns:
    """Read and compile the pattern file once; raises ConfigError naming the bad entry."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        spec = msgspec.convert(data, _PatternFile)
    except FileNotFoundError:
        raise ConfigError(
            f"bounce pattern file {path} is missing",
            hint="it ships in the package (engine/data/); reinstall, or copy one to"
            " /etc/penguinmails-engine/",
        ) from None
    except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise ConfigError(f"bounce pattern file {path} is invalid: {exc}") from None
    entries: list[tuple[Reason, list[str]]] = []
    for entry in spec.reason:
        if not entry.patterns:
            raise ConfigError(f"bounce pattern file {path}: reason {entry.name} has no patterns")
        for pattern in entry.patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(
                    f"bounce pattern file {path}: bad pattern {pattern!r} for {entry.name}: {exc}"
                ) from None
        entries.append((entry.name, entry.patterns))
    return ReasonPatterns(entries)
