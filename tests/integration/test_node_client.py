"""The Node client (clients/node) against a real running engine: ``node --test`` in `make test`.

The engine runs as ``engine run`` (a subprocess, as in production) with a fake relay node that
refuses recipients starting with ``bad``; the Node tests get its admin URL, token and DSN in the
environment and two loopback ports the engine may POST webhooks to. What the Node tests check
(enqueue and idempotency, batches, lookup, suppressions, SQL enqueue in the caller's
transaction, Standard Webhooks verified with the npm package, the templated campaign end to end)
is in clients/node/test/*.test.js; this test fails when any of them does.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from engine.admin.app import ROUTES
from engine.admin.openapi import document
from engine.store import tenants
from engine.tenancy import domains
from tests.conftest import REDIS_URL, TEST_VERP_SECRET
from tests.fakes.fixtures import mailu  # noqa: F401
from tests.fakes.mailu import FakeMailU

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "node"
#: (tenant, its verified sending domain): one per Node test file, so their webhooks stay apart.
TENANTS = (("nodeclient", "client.example"), ("nodecampaign", "campaign.example"))


def _unused_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports nothing listens on (the sockets are held until all bound)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _write_config(path: Path, sections: dict[str, dict[str, object]], node: FakeMailU) -> Path:
    """A TOML config from ``sections`` (values JSON-encoded, valid TOML for these types)."""
    lines: list[str] = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {orjson.dumps(v).decode()}" for k, v in values.items()]
    lines += ["[[relay.nodes]]", 'name = "n0"', 'host = "127.0.0.1"', f"port = {node.port}"]
    lines.append('tls = "none"')
    path.write_text("\n".join(lines) + "\n")
    return path


def _sections(dsn: str, prefix: str, admin: int, token: str, hooks: list[int]) -> dict[str, Any]:
    """The engine under test: no DKIM or shaping, fast feeder and webhooks, loopback hooks."""
    return {
        "database": {"dsn": dsn, "pool_min": 1, "pool_max": 4},
        "redis": {"url": REDIS_URL, "prefix": prefix},
        "queue": {"feeder_interval_s": 0.1},
        "shaping": {"enabled": False},
        "dkim": {"enabled": False},
        "inbound": {
            "listen": "127.0.0.1:0",
            "verp_domain": "bounces.example.test",
            "verp_secret": TEST_VERP_SECRET,
        },
        "admin": {"listen": f"127.0.0.1:{admin}", "token": token},
        "events": {
            "webhook_allow_cidrs": ["127.0.0.0/8"],
            "webhook_ports": hooks,
            "webhook_flush_ms": 50,
            "webhook_retry_base_s": 0.2,
            "webhook_retry_max_s": 1.0,
        },
        "log": {"level": "warning"},
    }


async def _wait_healthy(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"engine exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return
        except OSError:
            await asyncio.sleep(0.3)
    raise AssertionError(f"engine not healthy in 60 s: {log.read_text()[-3000:]}")


def _check_rendered(node: FakeMailU) -> None:
    """The campaign test's four accepted messages reached the relay rendered per recipient."""
    people = {"ada": "Ada", "grace": "Grace", "linus": "Linus", "barbara": "Barbara"}
    got: dict[str, str] = {}
    for m in node.received:
        local = m.rcpt_tos[0].partition("@")[0]
        if m.rcpt_tos[0].endswith("@example.com") and local in people:
            msg = email.message_from_bytes(m.data, policy=email.policy.default)
            got[local] = str(msg["Subject"])
            body = msg.get_body(("plain",))
            assert body is not None and f"Hi {people[local]}," in body.get_content()
    assert got == {k: f"Hello {v}" for k, v in people.items()}


@pytest.mark.timeout(600)
async def test_node_client_suite_against_a_running_engine(
    clean_db: str, redis_prefix: str, mailu: FakeMailU, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    node = shutil.which("node")
    if node is None or not (CLIENT / "node_modules" / "standardwebhooks").is_dir():
        pytest.skip("Node.js or clients/node/node_modules missing: run scripts/bootstrap.sh")
    for tenant, domain in TENANTS:
        await tenants.add(pool, tenant)
        await domains.add(pool, tenant, domain, verified=True)
    mailu.fail_rcpt(r"^bad", 550, "5.1.1 no such user")
    admin, *hooks = _unused_ports(3)
    token = secrets.token_hex(16)
    sections = _sections(clean_db, redis_prefix, admin, token, hooks)
    conf = _write_config(tmp_path / "engine.toml", sections, mailu)
    log = tmp_path / "engine.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "run", "--config", str(conf)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp_path)},
        )
    try:
        await _wait_healthy(admin, proc, log)
        env = {
            **os.environ,
            "ENGINE_ADMIN_URL": f"http://127.0.0.1:{admin}",
            "ENGINE_ADMIN_TOKEN": token,
            "ENGINE_DSN": clean_db,
            "ENGINE_TENANT": TENANTS[0][0],
            "ENGINE_SENDER_DOMAIN": TENANTS[0][1],
            "ENGINE_CAMPAIGN_TENANT": TENANTS[1][0],
            "ENGINE_CAMPAIGN_DOMAIN": TENANTS[1][1],
            "WEBHOOK_PORT": str(hooks[0]),
            "WEBHOOK_CAMPAIGN_PORT": str(hooks[1]),
        }
        tests = sorted(str(p.relative_to(CLIENT)) for p in (CLIENT / "test").glob("*.test.js"))
        runner = await asyncio.create_subprocess_exec(
            node,
            "--test",
            "--test-reporter=spec",
            *tests,
            cwd=CLIENT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(runner.communicate(), 480)
        text = output.decode(errors="replace")
        assert runner.returncode == 0, (
            f"node --test failed:\n{text}\nengine log:\n{log.read_text()[-3000:]}"
        )
        assert "# fail 0" in text or "ℹ fail 0" in text, text
        # Every Node test ran: the campaign suite skips itself only on an engine without
        # /v1/campaigns, which this one is not.
        assert "# skipped 0" in text or "ℹ skipped 0" in text, text
        if "/v1/campaigns/{campaign_id}" in document(ROUTES)["paths"]:
            _check_rendered(mailu)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(60)


def test_node_client_declarations_match_the_generated_types() -> None:
    """The wrapper's declarations and its example type-check against the generated schema: a
    renamed schema or a changed field fails here, not in the platform's build."""
    npm = shutil.which("npm")
    if npm is None or not (CLIENT / "node_modules" / ".bin" / "tsc").exists():
        pytest.skip("npm or clients/node/node_modules missing: run scripts/bootstrap.sh")
    done = subprocess.run(
        [npm, "run", "--silent", "typecheck"],
        cwd=CLIENT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"tsc failed in clients/node:\n{done.stdout}{done.stderr}"
