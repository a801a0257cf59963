"""The audit log: operator actions are recorded append-only, and the CLI commands record theirs
(under a pseudonym for an erased address, never the address)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from engine import audit
from engine.cli import main
from engine.config import Config
from engine.gdpr.pseudonym import pseudonym

pytestmark = pytest.mark.timeout(60)


async def test_record_and_list(pool: asyncpg.Pool) -> None:
    first = await audit.record(pool, "admin:ops", "sender.pause", "news@acme.test",
                               {"reason": "complaints"}, tenant_id="acme")  # fmt: skip
    second = await audit.record(pool, "cli:root", "retention.run", None)
    assert second > first
    newest = await audit.entries(pool)
    assert [e.action for e in newest] == ["retention.run", "sender.pause"]
    assert newest[0].tenant_id == "" and newest[1].detail == {"reason": "complaints"}
    assert [e.id for e in await audit.entries(pool, tenant_id="acme")] == [first]
    assert audit.cli_actor().startswith("cli:")


def test_cli_commands_are_audited(
    cfg: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Sync on purpose: the commands run their own event loop."""

    async def in_db(action: str) -> list[tuple[str, str | None]]:
        conn = await asyncpg.connect(cfg.database.dsn)
        try:
            if action == "seed":
                await conn.execute("INSERT INTO oltp.tenants (tenant_id) VALUES ('acme')")
            rows = await conn.fetch("SELECT action, target FROM oltp.audit_log ORDER BY id DESC")
            return [(r["action"], r["target"]) for r in rows]
        finally:
            await conn.close()

    asyncio.run(in_db("seed"))
    conf = tmp_path / "engine.toml"
    conf.write_text(f'[database]\ndsn = "{cfg.database.dsn}"\npool_min = 1\n')
    monkeypatch.delenv("ENGINE_CONFIG", raising=False)

    assert main(["gdpr", "erase", "--config", str(conf), "--tenant", "acme", "X@Example.com"]) == 0
    assert main(["retention", "run", "--config", str(conf), "--json"]) == 0
    assert main(["retention", "run", "--config", str(conf), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert pseudonym("x@example.com") in out and "x@example.com" not in out.lower()
    actions = asyncio.run(in_db("list"))
    assert actions == [("retention.run", None), ("gdpr.erase", pseudonym("x@example.com"))]
    assert main(["senders", "check", "--config", str(conf), "not a domain"]) == 2
