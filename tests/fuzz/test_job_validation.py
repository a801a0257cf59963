"""Hostile jobs in mixed batches through ``engine.enqueue.enqueue`` and SQL ``engine.enqueue``.

Each batch mixes good jobs with header injection (CR/LF/NUL in subject, headers, addresses),
invalid UTF-8 (lone surrogates), oversize bodies, bad addresses, engine-owned headers, unknown
tenants and lines that are not JSON. Every bad job gets its own error naming what is wrong;
every good job of the batch goes in, exactly once.

PostgreSQL's jsonb cannot hold NUL (``\\u0000``) or a lone surrogate at all, so through the SQL
function such a batch is refused as a whole by the server (nothing of it is stored); the caller
gets the error. The Python path refuses just that job.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.config import DatabaseConfig
from engine.enqueue import enqueue
from engine.store import tenants
from engine.store.pool import connect

LIMIT = 64 * 1024  # max_message_bytes for both paths
SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

safe_text = st.text(
    alphabet=st.characters(whitelist_categories=("L", "N", "P", "Zs", "S")), max_size=40
)
#: (kind, fragment the error must contain for the Python path, for the SQL path)
EXPECTED: dict[str, tuple[str, str]] = {
    "crlf_subject": ("subject", "subject"),
    "crlf_header": ("header", "header"),
    "lf_to": ("to", "to"),
    "crlf_from": ("from", "from"),
    "bad_to": ("to", "to"),
    "owned_header": ("header", "header"),
    "oversize": ("size", "byte"),
    "unknown_tenant": ("unknown tenant", "unknown tenant"),
    "no_body": ("text", "required"),
    "nul_text": ("NUL", ""),
    "surrogate_subject": ("surrogate", ""),
}
JSONB_REFUSES = {"nul_text", "surrogate_subject"}


def _job(key: str, kind: str, text: str) -> dict[str, Any]:
    job: dict[str, Any] = {
        "tenant_id": "acme",
        "idempotency_key": key,
        "from": "news@acme.example",
        "to": "user@example.com",
        "subject": f"hello {text}",
        "text": f"body {text}",
        "headers": {"X-Campaign": f"c {text}"},
    }
    inject = f"{text}\r\nBcc: victim@example.org"
    if kind == "crlf_subject":
        job["subject"] = inject
    elif kind == "crlf_header":
        job["headers"] = {"X-Tag": inject}
    elif kind == "lf_to":
        job["to"] = f"user@example.com\nBcc: victim@example.org{text}"
    elif kind == "crlf_from":
        job["from"] = f"news@acme.example\r\nReply-To: x@evil.example{text}"
    elif kind == "bad_to":
        job["to"] = f"not an address {text}@@"
    elif kind == "owned_header":
        job["headers"] = {"Bcc": f"victim@example.org {text}"}
    elif kind == "oversize":
        job["text"] = "x" * (LIMIT + 1) + text
    elif kind == "unknown_tenant":
        job["tenant_id"] = f"ghost-{uuid.uuid4().hex[:6]}"
    elif kind == "no_body":
        del job["text"]
    elif kind == "nul_text":
        job["text"] = f"a\x00b{text}"
    elif kind == "surrogate_subject":
        job["subject"] = f"a\ud800b{text}"
    return job


def _encode(job: dict[str, Any]) -> bytes:
    # orjson refuses lone surrogates; the stdlib writes them as \\ud800 escapes, as a client may.
    import json

    return json.dumps(job).encode()


batches = st.lists(
    st.tuples(st.sampled_from(["valid", "valid", *EXPECTED]), safe_text), min_size=1, max_size=8
)


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as r:
        yield r


@pytest.fixture
def db(clean_db: str, runner: asyncio.Runner) -> Iterator[asyncpg.Pool]:
    async def setup() -> asyncpg.Pool:
        pool = await connect(DatabaseConfig(dsn=clean_db, pool_min=1, pool_max=2))
        await tenants.add(pool, "acme")
        await pool.execute(
            "UPDATE engine.settings SET value = $1 WHERE key = 'max_message_bytes'", str(LIMIT)
        )
        return pool

    pool = runner.run(setup())
    yield pool
    runner.run(pool.close())


@SETTINGS
@given(batch=batches)
def test_python_enqueue_refuses_each_bad_job_alone(
    db: asyncpg.Pool, runner: asyncio.Runner, batch: list[tuple[str, str]]
) -> None:
    prefix = uuid.uuid4().hex
    keys = [f"{prefix}-{i}" for i in range(len(batch))]
    lines = [_encode(_job(k, kind, text)) for k, (kind, text) in zip(keys, batch, strict=True)]
    lines.append(b'{"tenant_id": "acme", "idempotency_key": "' + prefix.encode() + b'-x", ')
    results = runner.run(enqueue(db, lines, max_message_bytes=LIMIT, max_age_s=3600))
    assert len(results) == len(lines)
    for (kind, _), res in zip(batch, results, strict=False):
        if kind == "valid":
            assert res.error is None and res.job_id is not None, res
        else:
            assert res.job_id is None and res.error, (kind, res)
            assert EXPECTED[kind][0].lower() in res.error.lower(), (kind, res.error)
    assert results[-1].error and "JSON" in results[-1].error
    stored = runner.run(
        db.fetchval("SELECT count(*) FROM queue.jobs WHERE idempotency_key LIKE $1", f"{prefix}%")
    )
    assert stored == sum(kind == "valid" for kind, _ in batch), "good jobs lost or bad ones in"


@SETTINGS
@given(batch=batches)
def test_sql_enqueue_refuses_each_bad_job_alone(
    db: asyncpg.Pool, runner: asyncio.Runner, batch: list[tuple[str, str]]
) -> None:
    prefix = uuid.uuid4().hex
    jobs = [_job(f"{prefix}-{i}", kind, text) for i, (kind, text) in enumerate(batch)]
    document = "[" + ",".join(_encode(j).decode() for j in jobs) + "]"
    sql = "SELECT ord, job_id, error FROM engine.enqueue($1::text::jsonb) ORDER BY ord"
    unstorable = any(kind in JSONB_REFUSES for kind, _ in batch)
    if unstorable:
        with pytest.raises(asyncpg.PostgresError, match=r"(?i)unicode|surrogate|\\u0000"):
            runner.run(db.fetch(sql, document))
    else:
        rows = runner.run(db.fetch(sql, document))
        assert [r["ord"] for r in rows] == list(range(1, len(batch) + 1))
        for (kind, _), row in zip(batch, rows, strict=True):
            if kind == "valid":
                assert row["error"] is None and row["job_id"] is not None, dict(row)
            else:
                assert row["job_id"] is None and row["error"], (kind, dict(row))
                assert EXPECTED[kind][1].lower() in row["error"].lower(), (kind, row["error"])
    stored = runner.run(
        db.fetchval("SELECT count(*) FROM queue.jobs WHERE idempotency_key LIKE $1", f"{prefix}%")
    )
    expected = 0 if unstorable else sum(kind == "valid" for kind, _ in batch)
    assert stored == expected, "good jobs lost, bad ones stored, or a refused batch half-stored"


def test_both_paths_agree_on_a_known_batch(db: asyncpg.Pool, runner: asyncio.Runner) -> None:
    """The same jobs, the same verdicts (NUL and surrogates aside, which jsonb cannot carry)."""
    kinds = ["valid", *[k for k in EXPECTED if k not in JSONB_REFUSES], "valid"]
    py = [_job(f"py-{i}", kind, "t") for i, kind in enumerate(kinds)]
    sql = [_job(f"sql-{i}", kind, "t") for i, kind in enumerate(kinds)]
    results = runner.run(
        enqueue(db, [orjson.dumps(j) for j in py], max_message_bytes=LIMIT, max_age_s=3600)
    )
    rows = runner.run(
        db.fetch(
            "SELECT error FROM engine.enqueue($1::text::jsonb) ORDER BY ord",
            orjson.dumps(sql).decode(),
        )
    )
    assert [r.error is None for r in results] == [row["error"] is None for row in rows]
