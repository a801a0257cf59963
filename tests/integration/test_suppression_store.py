"""Suppression upserts: one batch may name the same address several times."""

from __future__ import annotations

import asyncpg

from engine.gdpr.pseudonym import pseudonym
from engine.store import suppressions


async def test_one_batch_naming_an_address_twice_is_written_once(pool: asyncpg.Pool) -> None:
    # PostgreSQL refuses ON CONFLICT DO UPDATE on one key twice in a statement; a batch of
    # bounces (a DSN and its replay, two jobs to one recipient) did exactly that.
    await suppressions.add(
        pool,
        [
            ("acme", "Bob@Example.com", "soft_bounce_limit", "bounce", 60.0),
            ("acme", "bob@example.com", "userunknown", "bounce", None),
            ("acme", "BOB@example.com", "soft_bounce_limit", "bounce", 120.0),
            ("acme", "carol@example.com", "soft_bounce_limit", "bounce", 60.0),
            ("acme", "carol@example.com", "soft_bounce_limit", "bounce", 3600.0),
        ],
    )
    rows = {
        r["address"]: r
        for r in await pool.fetch(
            "SELECT address, reason, expires_at > now() + interval '30 minutes' AS long,"
            " expires_at IS NULL AS permanent FROM oltp.suppressions WHERE tenant_id = 'acme'"
        )
    }
    assert set(rows) == {"bob@example.com", "carol@example.com"}
    assert rows["bob@example.com"]["permanent"]  # permanent wins over a later temporary
    assert rows["bob@example.com"]["reason"] == "userunknown"
    assert rows["carol@example.com"]["long"]  # the longer ttl wins


def test_merge_keeps_one_entry_per_tenant_and_address() -> None:
    merged = suppressions.merge_entries(
        [
            ("a", "x@y.z", "r1", "bounce", None),
            ("b", "x@y.z", "r1", "bounce", None),
            ("a", "X@y.z", "r2", "feedback", None),
        ]
    )
    assert merged == [("a", "X@y.z", "r2", "feedback", None), ("b", "x@y.z", "r1", "bounce", None)]


async def test_check_matches_in_clear_and_as_an_erased_pseudonym(pool: asyncpg.Pool) -> None:
    await suppressions.add(
        pool,
        [
            ("acme", "Bob@Example.com", "userunknown", "bounce", None),
            ("acme", pseudonym("Erased@Example.com"), "gdpr erasure", "gdpr", None),
            ("acme", "gone@example.com", "soft_bounce_limit", "bounce", 60.0),
        ],
    )
    await pool.execute(
        "UPDATE oltp.suppressions SET expires_at = now() - interval '1 second'"
        " WHERE address = 'gone@example.com'"
    )
    pairs = [
        ("acme", "BOB@example.com"),
        ("acme", "erased@EXAMPLE.com"),
        ("acme", "gone@example.com"),
        ("other", "bob@example.com"),
    ]
    assert await suppressions.check(pool, pairs) == {
        ("acme", "bob@example.com"),
        ("acme", "erased@example.com"),
    }
    assert await suppressions.check(pool, []) == set()
