"""Diagnostic-text patterns for bounce reasons, loaded from ``bounce_patterns.toml``
(``/etc/penguinmails-engine/`` when the operator put one there, else the packaged
``engine/data/``).

The file is read and compiled once per process (``load_patterns`` is cached): every reason's
phrases become a :class:`~engine.inbound.phrases.PhraseSet`, searched in the file's priority
order over the lower-cased, whitespace-collapsed diagnostic. Each phrase has a rule id
(``phrase:mailboxfull/de/2``: reason, language of its table, position among that reason's
phrases of that language) so a classification can be traced to the one pattern that made it.
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
#: Rule-id prefix of a specific phrase and of a generic word ("spam", "denied").
PHRASE_RULE = "phrase"
GENERIC_RULE = "generic"
_LANG = re.compile(r"^[a-z]{2,3}$")


class _ReasonEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Reason
    patterns: list[str]
    lang: str = "en"
    generic: bool = False


class _PatternFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    reason: list[_ReasonEntry]


class PhraseMatch(msgspec.Struct, frozen=True):
    """The first phrase of the file that occurs in a text: its reason and rule id."""

    reason: Reason
    rule: str
    generic: bool


class PatternTable(msgspec.Struct, frozen=True):
    """One ``[[reason]]`` table of the pattern file."""

    reason: Reason
    patterns: list[str]
    lang: str = "en"
    generic: bool = False


class ReasonPatterns:
    """Compiled reason patterns in priority order (one PhraseSet over the whole file)."""

    __slots__ = ("_all", "_matches", "_specific")

    def __init__(self, tables: list[PatternTable]) -> None:
        self._matches: list[PhraseMatch] = []
        flat: list[str] = []
        specific: dict[Reason, list[str]] = {}
        counters: dict[tuple[str, Reason, str], int] = {}
        for table in tables:
            prefix = GENERIC_RULE if table.generic else PHRASE_RULE
            for pattern in table.patterns:
                key = (prefix, table.reason, table.lang)
                position = counters.get(key, 0)
                counters[key] = position + 1
                rule = f"{prefix}:{table.reason.value}/{table.lang}/{position}"
                self._matches.append(PhraseMatch(table.reason, rule, table.generic))
                flat.append(pattern)
            if not table.generic:
                specific.setdefault(table.reason, []).extend(table.patterns)
        self._specific = {reason: PhraseSet(found) for reason, found in specific.items()}
        self._all = PhraseSet(flat)

    def first(self, text: str) -> PhraseMatch | None:
        """The highest-priority phrase that occurs in ``text`` (already normalised), or None."""
        index = self._all.first_index(text)
        return None if index is None else self._matches[index]

    def match(self, text: str) -> Reason | None:
        """The highest-priority reason whose pattern occurs in ``text`` (already normalised)."""
        found = self.first(text)
        return None if found is None else found.reason

    def matches_specific(self, reason: Reason, text: str) -> bool:
        """Whether a specific (not generic-word) phrase of ``reason`` matches ``text``."""
        phrases = self._specific.get(reason)
        return bool(phrases and phrases.search(text))

    @property
    def reasons(self) -> list[Reason]:
        """The reasons that have specific patterns, in the order of their first table."""
        return list(self._specific)

    @property
    def rules(self) -> list[str]:
        """Every phrase's rule id, in priority order."""
        return [found.rule for found in self._matches]


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
    tables: list[PatternTable] = []
    for entry in spec.reason:
        if not entry.patterns:
            raise ConfigError(f"bounce pattern file {path}: reason {entry.name} has no patterns")
        if not _LANG.match(entry.lang):
            raise ConfigError(
                f"bounce pattern file {path}: reason {entry.name} has lang {entry.lang!r}",
                hint="use a two- or three-letter ISO 639 code such as en, de, ja",
            )
        for pattern in entry.patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(
                    f"bounce pattern file {path}: bad pattern {pattern!r} for {entry.name}: {exc}"
                ) from None
        tables.append(PatternTable(entry.name, entry.patterns, entry.lang, entry.generic))
    return ReasonPatterns(tables)
