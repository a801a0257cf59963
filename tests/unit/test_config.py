"""Config: one frozen tree from TOML + ENGINE_<SECTION>__<KEY>, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from engine import config
from engine.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["engine.toml", "demo.toml"])
def test_shipped_configs_load(name: str) -> None:
    # engine.toml's VERP secret is a refused placeholder (tests/unit/test_verp_secrets.py): an
    # operator's real one comes in, here through the environment.
    env = {"ENGINE_INBOUND__VERP_SECRET": "0f5e2c9a7b1d4e8f3a6c0b9d2e5f8a1c"}
    cfg = config.load(ROOT / "config" / name, env=env)
    assert cfg.database.dsn.startswith("postgresql://")


def test_env_overrides_win_and_are_typed(tmp_path: Path) -> None:
    f = tmp_path / "e.toml"
    f.write_text('[queue]\nbatch_size = 10\n[redis]\nprefix = "a"\n')
    cfg = config.load(
        f,
        env={
            "ENGINE_QUEUE__BATCH_SIZE": "99",
            "ENGINE_REDIS__PREFIX": "b",
            "ENGINE_SHAPING__ENABLED": "false",
        },
    )
    assert cfg.queue.batch_size == 99 and cfg.redis.prefix == "b" and not cfg.shaping.enabled


def test_frozen() -> None:
    cfg = config.parse({})
    with pytest.raises(AttributeError):
        cfg.queue.batch_size = 1  # type: ignore[misc]
    assert isinstance(cfg, msgspec.Struct)


@pytest.mark.parametrize(
    ("data", "env", "needle"),
    [
        (
            {"relay": {"nodes": [{"name": "a", "host": "h", "port": "x"}]}},
            {},
            "relay.nodes[0].port",
        ),
        ({"queue": {"batch_sise": 3}}, {}, "batch_sise"),
        ({}, {"ENGINE_NOPE__X": "1"}, "unknown section [nope]"),
        (
            {"relay": {"nodes": [{"name": "a", "host": "h"}, {"name": "a", "host": "i"}]}},
            {},
            "unique",
        ),
        ({"relay": {"nodes": [{"name": "a", "host": "h", "tls": "ssl"}]}}, {}, "tls"),
        ({}, {"ENGINE_DKIM__SIGNER_WORKERS": "-1"}, "dkim.signer_workers"),
        ({"queue": {"body_cache_mb": 0}}, {}, "queue.body_cache_mb"),
        ({"dkim": {"signer": "fork"}}, {}, "dkim.signer"),
    ],
)
def test_errors_name_the_key(data: dict[str, object], env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.parse(config.apply_env(data, env))
    assert needle in str(err.value)
    assert err.value.exit_code == 2


def test_missing_file_is_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.toml", env={})


def test_secret_file_must_be_private(tmp_path: Path) -> None:
    f = tmp_path / "s"
    f.write_text("pw\n")
    f.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        config.read_secret(None, str(f), "relay password")
    f.chmod(0o600)
    assert config.read_secret(None, str(f), "relay password") == "pw"


def test_redis_mode_keys_are_checked() -> None:
    cfg = config.parse({"redis": {"mode": "cluster", "url": "redis://10.0.0.1:7000/0"}})
    assert cfg.redis.mode == "cluster"
    with pytest.raises(ConfigError, match=r"redis\.mode"):
        config.parse({"redis": {"mode": "ring"}})
    with pytest.raises(ConfigError, match=r"needs redis\.sentinels"):
        config.parse({"redis": {"mode": "sentinel"}})
    with pytest.raises(ConfigError, match="not host:port"):
        config.parse({"redis": {"mode": "sentinel", "sentinels": ["10.0.0.1"]}})
    with pytest.raises(ConfigError, match="stream_backlog_s"):
        config.parse({"queue": {"stream_backlog_s": -1.0}})
