"""Raw messages may not carry trace or authentication headers (docs/security.md, "Raw messages").

With ``[security] raw_trace_headers = "refuse"`` (the default) a raw job carrying Received,
Received-SPF, Return-Path, Authentication-Results, DKIM-Signature or any ARC-* field gets a
per-job error naming them, on the Python and the SQL enqueue paths; with "strip" it is accepted
and composition drops them, so none reaches a recipient either way.
"""

from __future__ import annotations

import base64

import asyncpg
import orjson
import pytest

from engine.compose.mime import build_body
from engine.enqueue import enqueue
from engine.model import Content
from engine.store import domains as domain_store
from engine.store import tenants
from engine.tenancy import domains

TRACE = {
    "Received": "from evil.example (evil.example [203.0.113.9]) by mx.example; Mon, 1 Jan 2024",
    "Received-SPF": "pass (mx.example: domain of acme.example designates 203.0.113.9)",
    "Return-Path": "<ceo@bank.example>",
    "Authentication-Results": "mx.example; dkim=pass header.d=bank.example; dmarc=pass",
    "DKIM-Signature": "v=1; a=rsa-sha256; d=bank.example; s=s1; h=from; bh=x; b=y",
    "ARC-Seal": "i=1; a=rsa-sha256; d=bank.example; s=arc; cv=none; b=z",
    "arc-authentication-results": "i=1; mx.example; dmarc=pass",
}


def raw_of(extra: dict[str, str]) -> bytes:
    lines = [f"{k}: {v}" for k, v in extra.items()]
    lines += ["From: news@acme.example", "To: u@example.com", "Subject: s", "", "body", ""]
    return "\r\n".join(lines).encode()


def job(i: int, extra: dict[str, str]) -> bytes:
    return orjson.dumps(
        {
            "tenant_id": "acme",
            "idempotency_key": f"raw-{i}",
            "from": "news@acme.example",
            "to": "u@example.com",
            "raw": base64.b64encode(raw_of(extra)).decode(),
        }
    )


@pytest.fixture
async def acme(pool: asyncpg.Pool) -> None:
    await tenants.add(pool, "acme")
    await domains.add(pool, "acme", "acme.example", verified=True)


CASES = [{name: value} for name, value in TRACE.items()]


async def test_refused_per_job_on_the_python_path(pool: asyncpg.Pool, acme: None) -> None:
    items = [job(i, extra) for i, extra in enumerate(CASES)] + [job(99, {"X-Mine": "ok"})]
    res = await enqueue(pool, items, max_message_bytes=1 << 20, max_age_s=3600)
    for r, extra in zip(res, CASES, strict=False):
        (name,) = extra
        assert r.job_id is None and r.error is not None
        assert r.error.startswith("raw: trace/authentication header(s)")
        assert name.lower() in r.error and 'raw_trace_headers = "strip"' in r.error
    assert res[-1].error is None and res[-1].job_id is not None


async def test_stripped_when_configured(pool: asyncpg.Pool, acme: None) -> None:
    res = await enqueue(
        pool, [job(1, TRACE)], max_message_bytes=1 << 20, max_age_s=3600, raw_trace="strip"
    )
    assert res[0].error is None and res[0].job_id is not None
    composed = build_body(Content(raw=raw_of(TRACE)))
    head = composed.head.lower()
    for name in TRACE:
        assert f"{name.lower()}:".encode() not in head
    assert b"from: news@acme.example" in head


async def test_refused_and_stripped_on_the_sql_path(
    pool: asyncpg.Pool, acme: None, owner: asyncpg.Connection
) -> None:
    batch = [orjson.loads(job(i, extra)) for i, extra in enumerate(CASES)]
    rows = await pool.fetch("SELECT * FROM engine.enqueue($1::jsonb) ORDER BY ord", batch)
    for row, extra in zip(rows, CASES, strict=True):
        (name,) = extra
        assert row["job_id"] is None and name.lower() in row["error"]
    await domain_store.write_rules(owner, enforce=True, raw_trace="strip")
    rows = await pool.fetch(
        "SELECT * FROM engine.enqueue($1::jsonb)", [orjson.loads(job(50, TRACE))]
    )
    assert rows[0]["error"] is None and rows[0]["job_id"] is not None


def test_folded_and_odd_case_trace_fields_are_found() -> None:
    from engine.compose.validate import _check_raw_trace
    from engine.errors import JobValidationError

    raw = b"From: a@acme.example\nrEcEiVeD: from x\n\tby y\nTo: b@example.com\n\nbody\n"
    with pytest.raises(JobValidationError, match="received"):
        _check_raw_trace(raw)
    _check_raw_trace(b"From: a@acme.example\nX-Received-Note: fine\n\nReceived: in the body\n")
