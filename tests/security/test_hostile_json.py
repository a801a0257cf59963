"""Hostile requests get a 4xx with a JSON error, never a 500 or a stack trace.

Deeply nested JSON (2,000 ``[``) on every route taking a body, bodies past the size limit,
URLs that do not parse, wrong types; in a batch (``POST /v1/messages`` and ``engine enqueue
--jsonl``) each bad job gets its own error and the rest go in; metadata with NUL, too deep or
too large is refused at validation, never by the database.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from engine.admin.app import ROUTES
from engine.compose.metadata import MAX_METADATA_BYTES, MAX_METADATA_DEPTH, check_metadata
from engine.compose.validate import validate_job
from engine.enqueue import decode_job
from engine.errors import JobValidationError
from engine.store import tenants
from engine.tenancy import domains
from tests.fakes.fixtures import mailu
from tests.security.keyed_admin import OPERATOR, Keyed, job, keyed, request

__all__ = ["keyed", "mailu"]

DEEP = b"[" * 2000 + b"]" * 2000
DEEP_OBJECT = b'{"a":' * 2000 + b"1" + b"}" * 2000


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = {"k": value}
    return value


@pytest.mark.parametrize(
    ("metadata", "error"),
    [
        ({"note": "a\x00b"}, "NUL"),
        ({"a\x00": 1}, "NUL"),
        ({"list": ["ok", ["x\x00"]]}, "NUL"),
        ({"deep": _nested(MAX_METADATA_DEPTH)}, "nested deeper"),
        ({"deep": [[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]}, "nested deeper"),
        ({"big": "x" * (MAX_METADATA_BYTES + 1)}, "over the limit"),
        ({"n": 2**70}, "64 bits"),
        ({"s": "\ud800"}, "UTF-8"),
    ],
)
def test_metadata_limits(metadata: dict[str, object], error: str) -> None:
    with pytest.raises(JobValidationError, match=error):
        check_metadata(metadata)


@pytest.mark.parametrize(
    "url", ["https://[::1/", "<https://[::1/>", "https://a.example:99999/u", "https:///u"]
)
def test_unparseable_list_unsubscribe_urls_are_the_jobs_error(url: str) -> None:
    doc = job("ta", 1, list_unsubscribe=url)
    with pytest.raises(JobValidationError, match="list_unsubscribe"):
        validate_job(decode_job(msgspec.json.encode(doc)), max_message_bytes=10**6)


def test_ordinary_metadata_passes() -> None:
    check_metadata({"campaign": "spring", "ids": [1, 2, 3], "x": {"y": None, "z": 1.5}})
    check_metadata({"deep": _nested(MAX_METADATA_DEPTH - 1)})


async def test_nested_json_is_a_400_on_every_route_with_a_body(keyed: Keyed) -> None:
    found = []
    for route in ROUTES:
        if route.body is None or route.method not in ("POST", "PUT", "PATCH", "DELETE"):
            continue
        path = route.path.replace("{id}", "1").replace("{prefix}", "0" * 12)
        path = path.replace("{token}", "x")
        for body in (DEEP, DEEP_OBJECT):
            status, raw, _ = await request(
                keyed.client, route.method, path,
                {**OPERATOR, "Content-Type": "application/json"}, data=body,
            )  # fmt: skip
            if not 400 <= status < 500 or not raw.startswith(b'{"error"'):
                found.append(f"{route.method} {path}: {status} {raw[:200]!r}")
    assert not found, found


async def test_malformed_requests_are_4xx_json(keyed: Keyed) -> None:
    c = keyed.client
    cases: list[tuple[str, str, dict[str, object]]] = [
        ("POST", "/v1/webhooks", {"json": {"tenant_id": "ta", "url": "http://[::1/"}}),
        (
            "POST",
            "/v1/webhooks",
            {"json": {"tenant_id": "ta", "url": "http://hooks.example:99999/"}},
        ),
        ("POST", "/v1/webhooks", {"json": {"tenant_id": "ta", "url": "https://[zz]/x/y"}}),
        ("POST", "/v1/webhooks", {"json": {"tenant_id": 5, "url": "https://hooks.example/"}}),
        ("POST", "/v1/messages", {"json": {"messages": "nope"}}),
        ("POST", "/v1/messages", {"data": b"\xff\xfe{", "headers": {"Content-Type": "text/x"}}),
        ("POST", "/v1/messages", {"data": b"x" * 300_000}),  # past the body limit: 413
        ("POST", "/v1/suppressions", {"json": [{"tenant_id": "ta", "address": "a\x00@b.c"}]}),
        ("POST", "/v1/keys", {"json": {"tenant_id": "ta", "scope": "root"}}),
        ("POST", "/v1/keys", {"json": {"tenant_id": "ta", "scope": "send", "name": 7}}),
        ("GET", "/v1/messages", {"params": {"limit": "1e999"}}),
        ("GET", "/v1/messages", {"params": {"after": "-1"}}),
        ("GET", "/v1/messages/99999999999999999999", {}),
        ("DELETE", "/v1/keys/%00", {}),
        ("POST", "/v1/keys/zzz/rotate", {}),
        ("GET", "/v1/keys", {"params": {"revoked": "maybe"}}),
    ]
    bad = []
    for method, path, kw in cases:
        headers = {**OPERATOR, **kw.pop("headers", {})}  # type: ignore[dict-item]
        status, raw, _ = await request(c, method, path, headers, **kw)
        if not 400 <= status < 500 or not raw.startswith(b'{"error"'):
            bad.append(f"{method} {path} {kw}: {status} {raw[:200]!r}")
    assert not bad, "\n".join(bad)


async def test_each_bad_job_in_a_batch_gets_its_own_error(keyed: Keyed) -> None:
    batch: list[object] = [
        job("ta", 100),
        job("ta", 101, metadata={"note": "nul\x00"}),
        job("ta", 102, metadata={"deep": _nested(500)}),  # past the JSON encoder's own limit
        job("ta", 103, metadata={"big": "x" * (MAX_METADATA_BYTES + 10)}),
        [[[[[[[[["not a job"]]]]]]]]],
        "a string",
        job("ta", 104, to="not an address"),
        job("ta", 105),
    ]
    # a job made of 500 nested arrays, spliced in as raw JSON
    raw_batch = msgspec.json.encode(batch)[:-1] + b"," + b"[" * 500 + b"]" * 500 + b"]"
    status, raw, _ = await request(
        keyed.client, "POST", "/v1/messages",
        {**OPERATOR, "Content-Type": "application/json"}, data=raw_batch,
    )  # fmt: skip
    assert status == 200, raw
    out = msgspec.json.decode(raw)
    assert out["accepted"] == 2 and out["rejected"] == 7, out
    errors = {r["index"]: r.get("error") for r in out["results"]}
    assert errors[0] is None and errors[7] is None
    assert "NUL" in errors[1] and "nested deeper" in errors[2] and "over the limit" in errors[3]
    assert "invalid job" in errors[4] and "invalid job" in errors[5] and "to:" in errors[6]
    assert "invalid job" in errors[8]
    # Past the body's own depth limit (about 1,000 levels) the request is refused as a whole.
    status, raw, _ = await request(
        keyed.client, "POST", "/v1/messages",
        {**OPERATOR, "Content-Type": "application/json"}, data=b"[" + DEEP + b"]",
    )  # fmt: skip
    assert status == 400 and b"nested too deeply" in raw


async def test_cli_enqueue_jsonl_refuses_bad_lines_alone(
    clean_db: str, tmp_path: Path, pool: object
) -> None:
    await tenants.add(pool, "ta")  # type: ignore[arg-type]
    await domains.add(pool, "ta", "ta.example", verified=True)  # type: ignore[arg-type]
    lines = [
        msgspec.json.encode(job("ta", 1)),
        DEEP,
        msgspec.json.encode(job("ta", 2, metadata={"n": "\x00"})),
        msgspec.json.encode(job("ta", 3, metadata={"d": _nested(50)})),
        msgspec.json.encode(job("ta", 4)),
    ]
    jsonl = tmp_path / "jobs.jsonl"
    jsonl.write_bytes(b"\n".join(lines) + b"\n")
    config = tmp_path / "engine.toml"
    config.write_text(f'[database]\ndsn = "{clean_db}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    done = subprocess.run(
        [sys.executable, "-m", "engine", "enqueue", "--jsonl", str(jsonl), "--config", str(config)],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert len(done.stdout.split()) == 2, done.stdout
    errors = [msgspec.json.decode(line) for line in done.stderr.splitlines()]
    assert [e["line"] for e in errors] == [2, 3, 4], errors
    assert "Traceback" not in done.stderr
