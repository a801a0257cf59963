"""The pseudonym of an erased address, and the suppression check that still matches it, sans-IO.

An erased recipient must never be mailed again, yet their address may not stay in clear. The
suppression row keeps ``sha256:<hex of lower(address)>`` instead; the dispatcher's suppression
check compares each recipient both in clear and hashed (:data:`SUPPRESSION_CHECK_SQL`, a drop-in
for the query in ``engine.store.suppressions.check``). The same pseudonym replaces the address
in jobs, events and every other text column, so per-recipient history still groups together.

An unkeyed hash can be reversed by someone who guesses the address (hash the candidate and
compare) — that is what lets the suppression check work without a secret, and it is what the
GDPR calls pseudonymisation, not anonymisation: the rows stay personal data, merely unreadable.
"""

from __future__ import annotations

import hashlib
import re

PREFIX = "sha256:"

#: SQL for the pseudonym of a text expression (PostgreSQL >= 11): equal to :func:`pseudonym`
#: for every address whose lower-casing agrees between Python and the database (all ASCII ones).
SQL_PSEUDONYM = "'sha256:' || encode(sha256(convert_to(lower({expr}), 'UTF8')), 'hex')"

#: Drop-in for ``engine.store.suppressions.check``: matches a recipient suppressed in clear or
#: erased (hashed), and returns the recipient lower-cased as the caller expects.
SUPPRESSION_CHECK_SQL = (
    "SELECT s.tenant_id, lower(u.a) AS address FROM oltp.suppressions s"
    " JOIN unnest($1::text[], $2::text[]) AS u(t, a)"
    " ON s.tenant_id = u.t AND s.address IN (lower(u.a), "
    + SQL_PSEUDONYM.format(expr="u.a")
    + ") WHERE s.expires_at IS NULL OR s.expires_at > now()"
)


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
