"""The pseudonym of an erased address, and the suppression check that still matches it, sans-IO.

An erased recipient must never be mailed again, yet their address may not stay in clear. The
suppression row keeps ``sha256:<hex of lower(address)>`` instead; the dispatcher's suppression
check (:func:`engine.store.suppressions.check`) compares each recipient both in clear and hashed.
The same pseudonym replaces the address in jobs, events and every other text column, so
per-recipient history still groups together.

An unkeyed hash can be reversed by someone who guesses the address (hash the candidate and
compare) — that is what lets the suppression check work without a secret, and it is what the
GDPR calls pseudonymisation, not anonymisation: the rows stay personal data, merely unreadable.
"""

from __future__ import annotations

import hashlib
import re

PREFIX = "sha256:"


def normalise(address: str) -> str:
    """The form the engine compares addresses in: stripped, lower-cased."""
    return address.strip().lower()


def pseudonym(address: str) -> str:
    """``sha256:<hex>`` of the lower-cased address (what replaces it everywhere)."""
    return PREFIX + hashlib.sha256(normalise(address).encode("utf-8")).hexdigest()


def is_pseudonym(value: str) -> bool:
    return value.startswith(PREFIX) and len(value) == len(PREFIX) + 64


def sql_regex(address: str) -> str:
    """A PostgreSQL regular expression matching the address literally (use flags 'gi')."""
    return re.sub(r"([^0-9A-Za-z])", r"\\\1", normalise(address))


def like_pattern(address: str) -> str:
    """An ILIKE pattern ``%address%`` with the LIKE wildcards of the address escaped."""
    escaped = re.sub(r"([\\%_])", r"\\\1", normalise(address))
    return f"%{escaped}%"
