"""`engine shaping explain|pause|resume` end to end (real Redis and PostgreSQL)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

from engine.cli import main
from tests.conftest import REDIS_URL


def write_config(tmp_path: Path, dsn: str, prefix: str) -> Path:
    path = tmp_path / "engine.toml"
    path.write_text(
        f'[database]\ndsn = "{dsn}"\n[redis]\nurl = "{REDIS_URL}"\nprefix = "{prefix}"\n'
        '[dns.overrides]\n"gm.example" = ["gmail-smtp-in.l.google.com"]\n'
    )
    return path


def _sql(dsn: str, query: str, *args: object) -> list[Any]:
    async def go() -> list[Any]:
        conn = await asyncpg.connect(dsn)
        try:
            return [tuple(r.values()) for r in await conn.fetch(query, *args)]
        finally:
            await conn.close()

    return asyncio.run(go())


def test_explain_pause_resume(
    tmp_path: Path, clean_db: str, redis_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _sql(clean_db, "INSERT INTO oltp.tenants (tenant_id) VALUES ('acme')")
    _sql(
        clean_db,
        "INSERT INTO oltp.senders (tenant_id, address, domain)"
        " VALUES ('acme', 'a@shop.example', 'shop.example')",
    )
    cfg = str(write_config(tmp_path, clean_db, redis_prefix))
    args = ["shaping", "explain", "--config", cfg, "--sender", "a@shop.example"]
    assert main([*args, "--to", "bob@gm.example", "--tenant", "acme"]) == 0
    out = capsys.readouterr().out
    assert "provider gmail (table)" in out and "verdict: would go now" in out

    pause = ["shaping", "pause", "--config", cfg, "--sender", "a@shop.example"]
    assert main([*pause, "--reason", "list import gone wrong"]) == 0  # tenant from oltp.senders
    assert main([*args, "--to", "bob@gm.example", "--json"]) == 0
    doc = msgspec.json.decode(capsys.readouterr().out)
    assert doc["held_by"] == "paused" and doc["paused"]["reason"] == "operator"
    assert doc["paused"]["message"] == "list import gone wrong"
    assert _sql(clean_db, "SELECT paused, paused_reason FROM oltp.senders") == [
        (True, "list import gone wrong")
    ]

    resume = [
        "shaping",
        "resume",
        "--config",
        cfg,
        "--tenant",
        "acme",
        "--sender",
        "a@shop.example",
    ]
    assert main(resume) == 0
    assert main([*args, "--to", "bob@gm.example", "--tenant", "acme", "--json"]) == 0
    assert msgspec.json.decode(capsys.readouterr().out)["allowed"] is True
    assert _sql(clean_db, "SELECT paused FROM oltp.senders") == [(False,)]

    # The same event and audit rows as the admin API's pause and resume (test_admin_api).
    assert _sql(clean_db, "SELECT kind, data->>'sender' FROM oltp.events ORDER BY id") == [
        ("sender_paused", "a@shop.example"),
        ("sender_resumed", "a@shop.example"),
    ]
    audit = _sql(
        clean_db, "SELECT action, target, tenant_id, actor FROM oltp.audit_log ORDER BY id"
    )
    assert [a[:3] for a in audit] == [
        ("sender.pause", "a@shop.example", "acme"),
        ("sender.resume", "a@shop.example", "acme"),
    ]
    assert all(a[3].startswith("cli:") for a in audit)


def test_pause_of_an_unknown_sender_is_refused(
    tmp_path: Path, clean_db: str, redis_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(write_config(tmp_path, clean_db, redis_prefix))
    pause = ["shaping", "pause", "--config", cfg, "--tenant", "acme", "--sender", "x@y.example"]
    assert main(pause) == 2
    assert "no sender x@y.example" in capsys.readouterr().err


def test_explain_refuses_a_bad_address(tmp_path: Path, redis_prefix: str) -> None:
    cfg = str(write_config(tmp_path, "postgresql://unused@127.0.0.1/unused", redis_prefix))
    assert main(["shaping", "explain", "--config", cfg, "--sender", "a@b.c", "--to", "nobody"]) == 2
