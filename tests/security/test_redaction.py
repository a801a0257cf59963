"""Secrets in URLs and DSNs never reach an error message or a log line, in any form.

One function (engine/redaction.py) masks them; these tests drive real failures (the daemon
starting against a Redis and a PostgreSQL that refuse, the CLI with a DSN it cannot use) and
check stdout, stderr and the JSON log for every form.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import logs
from engine.redaction import redact
from tests.conftest import TEST_VERP_SECRET

SECRET = "Hunter2-s3cret"

FORMS = [
    f"redis://:{SECRET}@127.0.0.1:1/0",
    f"redis://default:{SECRET}@127.0.0.1:1/0",
    f"rediss://user:{SECRET}@127.0.0.1:1/0",
    f"redis://:p@ss{SECRET}@127.0.0.1:1/0",
    f"redis+sentinel://:{SECRET}@127.0.0.1:1,127.0.0.1:2/mymaster",
    f"postgresql://u:{SECRET}@127.0.0.1:1/db",
    f"postgres://u:{SECRET}@127.0.0.1:1/db?sslmode=disable",
    f"postgresql://u@127.0.0.1:1/db?password={SECRET}",
    f"postgresql://u@127.0.0.1:1/db?sslmode=require&sslpassword={SECRET}",
    f"host=127.0.0.1 port=1 password={SECRET} dbname=x",
    f"host=127.0.0.1 password='{SECRET} with space' dbname=x",
    f"amqp://guest:{SECRET}@127.0.0.1:5672/vhost",
    f"https://hooks.example/x?token={SECRET}&a=1",
    f"Authorization: Bearer pm_live_0123456789ab_{SECRET}{'A' * 29}",
]


@pytest.mark.parametrize("form", FORMS)
def test_every_form_is_redacted(form: str) -> None:
    out = redact(f"cannot connect to {form}: refused")
    assert SECRET not in out and "***" in out
    assert "refused" in out
    assert any(host in out for host in ("127.0.0.1", "hooks.example", "pm_live_0123456789ab"))


def test_redaction_leaves_ordinary_text_alone() -> None:
    for text in (
        'password authentication failed for user "u"',
        "http://[::1]:8025/v1/messages",
        "Error 111 connecting to 127.0.0.1:6379. Connection refused.",
        "postgresql://u@h/db",
    ):
        assert redact(text) == text


def test_log_lines_are_redacted() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    log = logging.getLogger("engine.test.redaction")
    log.addHandler(handler)
    try:
        for form in FORMS:
            log.error("failed at %s", form, extra={"url": form, "n": 1})
            try:
                raise ConnectionError(f"connect {form}")
            except ConnectionError:
                log.exception("crashed")
    finally:
        log.removeHandler(handler)
    assert SECRET not in stream.getvalue()
    assert stream.getvalue().count("***") >= 3 * len(FORMS)


def _engine(config: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    return subprocess.run(
        [sys.executable, "-m", "engine", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=90,
    )


def _config(tmp_path: Path, dsn: str, redis_url: str) -> Path:
    config = tmp_path / "engine.toml"
    config.write_text(
        f"[database]\ndsn = {dsn!r}\n"
        f"[redis]\nurl = {redis_url!r}\nsocket_timeout_s = 1.0\n"
        f"[inbound]\nlisten = '127.0.0.1:0'\nverp_secret = '{TEST_VERP_SECRET}'\n"
        "[admin]\nlisten = '127.0.0.1:0'\n"
        "[log]\nformat = 'json'\n"
    )
    return config


@pytest.mark.parametrize("url", [FORMS[0], FORMS[3], FORMS[4]])
def test_daemon_start_with_a_failing_redis_prints_no_password(
    clean_db: str, tmp_path: Path, url: str
) -> None:
    done = _engine(_config(tmp_path, clean_db, url), "run")
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "Redis" in output or "redis" in output, output[-500:]
    assert SECRET not in output, output[-1000:]
    status = _engine(_config(tmp_path, clean_db, url), "status", "--json")
    assert SECRET not in status.stdout + status.stderr


@pytest.mark.parametrize("dsn", [f for f in FORMS if "db" in f or "dbname" in f])
def test_cli_with_a_failing_database_prints_no_password(tmp_path: Path, dsn: str) -> None:
    config = _config(tmp_path, "postgresql://placeholder@127.0.0.1:1/x", "redis://127.0.0.1:1/0")
    for args in (("run",), ("keys", "list")):
        done = _engine(config, *args, ENGINE_DATABASE__DSN=dsn)
        output = done.stdout + done.stderr
        assert done.returncode != 0, (args, output)
        assert SECRET not in output, (args, output[-1000:])
        assert "Traceback" not in output, (args, output[-1000:])
