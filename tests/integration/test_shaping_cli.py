"""`engine shaping explain|pause|resume` end to end (real Redis and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

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


def test_explain_pause_resume(
    tmp_path: Path, pg_dsn: str, redis_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(write_config(tmp_path, pg_dsn, redis_prefix))
    args = ["shaping", "explain", "--config", cfg, "--sender", "a@shop.example"]
    assert main([*args, "--to", "bob@gm.example", "--tenant", "acme"]) == 0
    out = capsys.readouterr().out
    assert "provider gmail (table)" in out and "verdict: would go now" in out

    assert (
        main(
            ["shaping", "pause", "--config", cfg, "--tenant", "acme", "--sender", "a@shop.example"]
        )
        == 0
    )
    # The tenant is found from the oltp tier now that the pause was recorded there.
    assert main([*args, "--to", "bob@gm.example", "--json"]) == 0
    doc = msgspec.json.decode(capsys.readouterr().out)
    assert doc["held_by"] == "paused" and doc["paused"]["reason"] == "operator"

    assert (
        main(
            ["shaping", "resume", "--config", cfg, "--tenant", "acme", "--sender", "a@shop.example"]
        )
        == 0
    )
    assert main([*args, "--to", "bob@gm.example", "--tenant", "acme", "--json"]) == 0
    assert msgspec.json.decode(capsys.readouterr().out)["allowed"] is True


def test_explain_refuses_a_bad_address(tmp_path: Path, redis_prefix: str) -> None:
    cfg = str(write_config(tmp_path, "postgresql://unused@127.0.0.1/unused", redis_prefix))
    assert main(["shaping", "explain", "--config", cfg, "--sender", "a@b.c", "--to", "nobody"]) == 2
