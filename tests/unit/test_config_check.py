"""`engine config check [--effective]` and `engine --version`: the validated config printed with
every secret masked (inline, read from files, inside DSNs/URLs), errors with exit 2, and the data
files the daemon needs checked too."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest

from engine import __version__
from engine.cli import main

VERP = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a6978"
TOKEN = "admin-token-0123456789abcdef-XYZ"
PREVIOUS = "9a8b7c6d5e4f30211203f4e5d6c7b8a99a8b7c6d5e4f3021"


def write_config(tmp_path: Path, extra: str = "") -> Path:
    secret = tmp_path / "verp-secret"
    secret.write_text(VERP + "\n")
    secret.chmod(0o600)
    token = tmp_path / "admin-token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    path = tmp_path / "engine.toml"
    path.write_text(
        f"""
[database]
dsn = "postgresql://engine:db-pass-word@127.0.0.1:5432/test"
[redis]
url = "redis://:redis-pass-word@127.0.0.1:6379/0"
[inbound]
verp_secret_file = "{secret}"
[[inbound.verp_previous]]
secret = "{PREVIOUS}"
until = "2099-01-01T00:00:00Z"
[admin]
token_file = "{token}"
[[relay.nodes]]
name = "n1"
host = "127.0.0.1"
port = 2525
username = "u"
password = "relay-pass-word"
{extra}
"""
    )
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("effective", [False, True])
def test_config_check_prints_the_config_with_secrets_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], effective: bool
) -> None:
    path = write_config(tmp_path)
    args = ["config", "check", "--config", str(path)] + (["--effective"] if effective else [])
    rc, out, err = run(capsys, *args)
    assert rc == 0, err
    first, _, body = out.partition("\n")
    assert first == f"config ok: {path}"
    for secret in (VERP, TOKEN, "db-pass-word", "redis-pass-word", "relay-pass-word", PREVIOUS):
        assert secret not in out
    doc = json.loads(body)
    assert doc["database"]["dsn"] == "postgresql://engine:***@127.0.0.1:5432/test"
    assert doc["redis"]["url"] == "redis://:***@127.0.0.1:6379/0"
    assert doc["inbound"]["verp_secret"] == "***"
    assert doc["inbound"]["verp_previous"][0]["secret"] == "***"
    assert doc["relay"]["nodes"][0]["password"] == "***"
    assert doc["admin"]["token_file"] == str(tmp_path / "admin-token")
    # Without --effective only what differs from the defaults; with it, everything.
    assert ("log" in doc) is effective
    if effective:
        assert doc["queue"]["batch_size"] == 256 and doc["admin"]["token"] is None


def test_environment_overrides_show_and_are_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENGINE_LOG__LEVEL", "debug")
    monkeypatch.setenv("ENGINE_ADMIN__TOKEN", "env-token-0123456789abcdef")
    rc, out, _ = run(capsys, "config", "check", "--config", str(write_config(tmp_path)))
    doc = json.loads(out.partition("\n")[2])
    assert rc == 0 and doc["log"] == {"level": "debug"} and doc["admin"]["token"] == "***"
    assert "env-token" not in out


def test_invalid_config_and_unreadable_secrets_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, "[queue]\nbatch_sise = 3\n")
    rc, out, err = run(capsys, "config", "check", "--config", str(path))
    assert rc == 2 and out == "" and "batch_sise" in err
    path = write_config(tmp_path)
    (tmp_path / "admin-token").chmod(0o644)
    rc, out, err = run(capsys, "config", "check", "--config", str(path))
    assert rc == 2 and "readable by group/others" in err and TOKEN not in err


def test_a_missing_provider_table_fails_the_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = f'[shaping]\nenabled = true\nproviders_file = "{tmp_path / "nope.toml"}"\n'
    rc, _, err = run(capsys, "config", "check", "--config", str(write_config(tmp_path, extra)))
    assert rc == 2 and "nope.toml" in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    out = capsys.readouterr().out
    assert exited.value.code == 0
    assert out.startswith(f"engine {__version__} (penguinmails-engine; ")
    assert __version__ == metadata.version("penguinmails-engine")  # pyproject reads it
