"""Sentinels with their own password (`[redis] sentinel_password_file`).

A real master + replica + sentinel whose sentinel asks for a password the data servers do not:
the engine finds the master with the password file, says what to fix without it, and refuses a
password file others can read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.config import RedisConfig
from engine.errors import ConfigError
from engine.queue import streams as streams_mod
from engine.servers import ThrowawayRedisSentinel

PASSWORD = "sentinel-only-s3cret"


@pytest.fixture(scope="module")
def sentinel() -> Iterator[ThrowawayRedisSentinel]:
    with ThrowawayRedisSentinel(sentinel_password=PASSWORD) as group:
        yield group


def _cfg(group: ThrowawayRedisSentinel, password_file: Path | None) -> RedisConfig:
    return RedisConfig(
        url="redis://127.0.0.1/0",
        mode="sentinel",
        sentinels=group.sentinels,
        service_name=group.SERVICE,
        sentinel_password_file=str(password_file) if password_file else None,
        prefix="sentinelauth",
    )


def _secret(tmp_path: Path, mode: int) -> Path:
    path = tmp_path / "sentinel.pass"
    path.write_text(PASSWORD + "\n")
    path.chmod(mode)
    return path


async def test_the_password_file_finds_the_master(
    sentinel: ThrowawayRedisSentinel, tmp_path: Path
) -> None:
    client = streams_mod.connect(_cfg(sentinel, _secret(tmp_path, 0o600)))
    try:
        streams = streams_mod.Streams(client, "sentinelauth")
        await streams.ensure_groups()
        assert await client.set("sentinelauth:probe", b"1")
        info = await client.info("server")
        assert int(info["tcp_port"]) == sentinel.master()
    finally:
        await streams_mod.close(client)


async def test_without_the_password_the_error_names_the_setting(
    sentinel: ThrowawayRedisSentinel,
) -> None:
    cfg = _cfg(sentinel, None)
    client = streams_mod.connect(cfg)
    try:
        with pytest.raises(Exception) as caught:
            await streams_mod.Streams(client, "sentinelauth").ensure_groups()
    finally:
        await streams_mod.close(client)
    err = streams_mod.queue_error(caught.value, cfg)
    text = f"{err} {err.hint}"
    assert "AuthenticationError" in text
    assert "sentinel_password_file" in text
    assert sentinel.sentinels[0] in text
    assert "ConnectionPool" not in text  # not redis-py's repr of its client
    assert PASSWORD not in text


def test_a_password_file_others_can_read_is_refused(
    sentinel: ThrowawayRedisSentinel, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="readable by group/others"):
        streams_mod.connect(_cfg(sentinel, _secret(tmp_path, 0o644)))
