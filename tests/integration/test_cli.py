"""The CLI contract (DESIGN §8): enqueue output, status, migrate, tenants, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import orjson

from engine.config import Config


def engine(
    cfg: Config, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = {
        **os.environ,
        "ENGINE_DATABASE__DSN": cfg.database.dsn,
        "ENGINE_REDIS__URL": cfg.redis.url,
        "ENGINE_REDIS__PREFIX": cfg.redis.prefix,
    }
    env.pop("ENGINE_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=60,
    )


def line(i: int, **over: object) -> bytes:
    doc = {
        "tenant_id": "acme",
        "idempotency_key": f"k{i}",
        "from": "a@acme.example",
        "to": f"u{i}@example.com",
        "text": "hi",
        **over,
    }
    return orjson.dumps(doc)


def test_enqueue_contract(cfg: Config, tmp_path: Path) -> None:
    assert engine(cfg, "migrate").returncode == 0
    out = engine(cfg, "tenants", "add", "acme", "--name", "Acme")
    assert out.returncode == 0 and b"added" in out.stdout
    out = engine(cfg, "domains", "add", "--tenant", "acme", "acme.example", "--verified")
    assert out.returncode == 0 and out.stdout.startswith(b"verified acme.example for acme")
    data = b"\n".join([line(1), line(2, to="bad"), b"", line(3), b"{oops", line(4, tenant_id="x")])
    f = tmp_path / "jobs.jsonl"
    f.write_bytes(data + b"\n")
    res = engine(cfg, "enqueue", "--jsonl", str(f))
    assert res.returncode == 1
    ids = res.stdout.decode().split()
    assert len(ids) == 2 and all(i.isdigit() for i in ids)
    errors = [json.loads(x) for x in res.stderr.decode().splitlines()]
    assert [e["line"] for e in errors] == [2, 5, 6]
    assert errors[0]["idempotency_key"] == "k2" and "to" in errors[0]["error"]
    assert errors[1]["idempotency_key"] is None
    # stdin, idempotent: the same ids again, exit 0
    again = engine(cfg, "enqueue", "--jsonl", "-", stdin=line(1) + b"\n" + line(3) + b"\n")
    assert again.returncode == 0 and again.stdout.decode().split() == ids
    st = engine(cfg, "status", "--json")
    assert st.returncode == 0
    doc = json.loads(st.stdout)
    assert doc["jobs"]["queued"] == 2 and doc["total"] == 2


def test_usage_and_config_errors_exit_2(cfg: Config, tmp_path: Path) -> None:
    assert engine(cfg, "enqueue").returncode == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("[queue]\nbatch_size = 'many'\n")
    res = engine(cfg, "status", "--config", str(bad))
    assert res.returncode == 2
    assert b"queue.batch_size" in res.stderr and len(res.stderr.splitlines()) == 1


def test_runtime_error_exit_1(cfg: Config) -> None:
    env_cfg = cfg
    res = subprocess.run(
        [sys.executable, "-m", "engine", "status"],
        capture_output=True,
        env={**os.environ, "ENGINE_DATABASE__DSN": "postgresql://postgres@127.0.0.1:1/none"},
        timeout=60,
    )
    assert env_cfg and res.returncode == 1
    assert b"cannot connect to PostgreSQL" in res.stderr
