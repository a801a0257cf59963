"""Issue 21, done-when: with a REAL daemon sending, an operator answers "where is message X, why
is it late, stop campaign Y" from the CLI (``engine messages ...``) and the admin API."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg
import msgspec
import orjson

from engine.config import Config, DkimConfig
from engine.daemon import Daemon
from engine.dkim.keys import generate_key
from engine.enqueue import enqueue
from engine.store import backlog as backlog_store
from engine.store import tenants
from tests.fakes.fixtures import mailu  # noqa: F401
from tests.fakes.mailu import FakeMailU
from tests.integration.test_daemon import daemon_config


def _job(key: str, to: str, campaign: str | None) -> bytes:
    doc: dict[str, object] = {
        "tenant_id": "acme",
        "idempotency_key": key,
        "from": "news@acme.example",
        "to": to,
        "subject": "Spring sale",
        "text": "Hello",
    }
    if campaign:
        doc["campaign_id"] = campaign
    return orjson.dumps(doc)


async def _cli(cfg: Config, *args: str) -> tuple[int, str, str]:
    """``engine ARGS`` in a subprocess, without blocking the daemon's loop."""
    env = {
        **os.environ,
        "ENGINE_DATABASE__DSN": cfg.database.dsn,
        "ENGINE_REDIS__URL": cfg.redis.url,
        "ENGINE_REDIS__PREFIX": cfg.redis.prefix,
    }
    env.pop("ENGINE_CONFIG", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _wait(pool: asyncpg.Pool, sql: str, want: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (got := await pool.fetchval(sql)) < want:
        assert time.monotonic() < deadline, f"{sql}: {got} < {want}"
        await asyncio.sleep(0.1)


async def test_trace_a_late_message_and_stop_a_campaign(
    pool: asyncpg.Pool, clean_db: str, redis_prefix: str, mailu: FakeMailU, tmp_path: Path
) -> None:
    mailu.fail_rcpt(r"^late@", 451, "4.7.1 greylisted, come back later")
    mailu.delay_s = 0.05  # the campaign is still going out when the operator acts
    await tenants.add(pool, "acme")
    items = [_job("x", "late@example.com", None)]
    items += [_job(f"y{i}", f"y{i}@example.com", "spring") for i in range(2000)]
    items += [_job(f"z{i}", f"z{i}@example.net", "other") for i in range(5)]
    res = await enqueue(pool, items, max_message_bytes=10**6, max_age_s=3600)
    assert all(r.error is None for r in res)
    # Small batches and a low high-water mark: when the operator acts, some of the campaign is
    # in flight, some on the Redis stream, the rest waiting in PostgreSQL. DKIM on, so the
    # timeline names the selector.
    pem, _ = generate_key("rsa-sha256", 2048)
    key = tmp_path / "k.pem"
    key.write_bytes(pem)
    key.chmod(0o600)
    base = daemon_config(
        clean_db,
        redis_prefix,
        [mailu],
        retry_base_s=30.0,
        retry_max_s=60.0,
        lease_s=60.0,
        batch_size=16,
        max_in_flight=16,
        stream_high_water=50,
    )
    cfg = msgspec.structs.replace(
        base,
        dkim=msgspec.convert(
            {
                "enabled": True,
                "required": True,
                "signer": "thread",
                "keys": [
                    {"domain": "acme.example", "selector": "s2026", "private_key_file": str(key)}
                ],
            },
            DkimConfig,
        ),
    )
    daemon = Daemon(cfg, None)
    task = asyncio.create_task(daemon.run())
    try:
        await _wait(pool, "SELECT count(*) FROM queue.jobs WHERE campaign_id='spring'"
                    " AND state = 'relayed'", 10)  # fmt: skip
        await _wait(pool, "SELECT count(*) FROM queue.jobs WHERE state = 'deferred'", 1)

        # Where is message X, and why is it late?
        rc, out, err = await _cli(cfg, "messages", "search", "--recipient", "late@example.com",
                                  "--json")  # fmt: skip
        assert rc == 0, err
        page = json.loads(out)
        (found,) = page["messages"]
        assert page["next"] is None and found["state"] == "deferred"
        x = found["id"]
        rc, text, err = await _cli(cfg, "messages", "show", str(x))
        assert rc == 0, err
        assert "deferred, next attempt in" in text
        assert "4.7.1 greylisted, come back later" in text and "node=n0" in text
        assert "dkim=s2026" in text
        rc, out, err = await _cli(cfg, "messages", "show", str(x), "--json")
        doc = json.loads(out)
        assert doc["job"]["id"] == x and doc["job"]["last_code"] == 451
        deferred = [e for e in doc["events"] if e["kind"] == "deferred"]
        assert deferred and deferred[0]["reply"].endswith("greylisted, come back later")
        assert deferred[0]["data"]["attempt"] == 1 and deferred[0]["data"]["node"] == "n0"
        assert "relay_ms" in deferred[0]["data"] and deferred[0]["data"]["selector"] == "s2026"
        show_sample = text

        # The same from the admin API (the daemon's own side-port).
        assert daemon.admin_address is not None
        base = f"http://127.0.0.1:{daemon.admin_address[1]}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/v1/messages/{x}") as r:
                body = await r.json()
                assert r.status == 200 and body["state"] == "deferred"
                assert any(e["kind"] == "deferred" for e in body["events"])
            async with http.get(f"{base}/v1/messages?campaign=spring&limit=5") as r:
                body = await r.json()
                assert len(body["messages"]) == 5 and body["next"] is not None
            async with http.get(f"{base}/v1/messages?campaign=spring&limit=5"
                                f"&after={body['next']}") as r:  # fmt: skip
                more = await r.json()
                assert more["messages"][0]["id"] < body["next"]
            async with http.post(
                f"{base}/v1/messages/actions", json={"action": "cancel", "dry_run": True}
            ) as r:
                assert r.status == 400  # no selection: refused, nothing changed

        # Stop campaign Y: a dry run counts, the real run cancels.
        rc, dry, err = await _cli(cfg, "messages", "cancel", "--campaign", "spring", "--dry-run")
        assert rc == 0, err
        assert dry.startswith("dry run: ") and "would be cancelled (campaign_id=spring)" in dry
        assert int(dry.split()[2]) > 0
        rc, done, err = await _cli(cfg, "messages", "cancel", "--campaign", "spring")
        assert rc == 0, err
        cancelled_now = int(done.split()[0])
        assert cancelled_now > 0
        # Let everything in flight finish, and any stale stream entry be read.
        await _wait(pool, "SELECT 1 - least(1, count(*)) FROM queue.jobs"
                    " WHERE campaign_id = 'spring' AND state = 'sending'", 1)  # fmt: skip
        await asyncio.sleep(1.0)
        rows = await pool.fetch(
            "SELECT recipient, state FROM queue.jobs WHERE campaign_id = 'spring'"
        )
        states = {r["state"] for r in rows}
        assert states <= {"relayed", "cancelled"}, states
        relayed = {r["recipient"] for r in rows if r["state"] == "relayed"}
        cancelled = {r["recipient"] for r in rows if r["state"] == "cancelled"}
        assert len(cancelled) >= cancelled_now
        at_sink = {rcpt for m in mailu.received for rcpt in m.rcpt_tos if rcpt.startswith("y")}
        assert at_sink == relayed  # no cancelled job reached the sink
        assert not cancelled & at_sink
        # The other campaign was not touched.
        await _wait(pool, "SELECT count(*) FROM queue.jobs WHERE campaign_id = 'other'"
                    " AND state = 'relayed'", 5)  # fmt: skip

        # Hold, release, retry now on the late message (by job id), with events and audit rows.
        rc, out, err = await _cli(cfg, "messages", "hold", str(x), "--json")
        assert rc == 0 and json.loads(out)["affected"] == 1, err
        backlog = await backlog_store.read(pool)
        assert backlog.by_state()["held"] == 1
        rc, out, err = await _cli(cfg, "messages", "retry", str(x))
        assert rc == 0 and out.startswith("0 message(s)"), (out, err)  # held: not retried
        rc, out, err = await _cli(cfg, "messages", "release", str(x))
        assert rc == 0 and out.startswith("1 message(s) released"), (out, err)
        rc, out, err = await _cli(cfg, "messages", "show", str(x))
        assert "held" in out and "released" in out and "by=cli:" in out
    finally:
        daemon._on_stop(signal.SIGTERM)
        assert await asyncio.wait_for(task, 20) == 0
    audit = await pool.fetch(
        "SELECT action, target, detail FROM oltp.audit_log WHERE action LIKE 'messages.%'"
        " ORDER BY id"
    )
    assert [a["action"] for a in audit] == [
        "messages.cancel",
        "messages.hold",
        "messages.retry",
        "messages.release",
    ]
    assert audit[0]["target"] == "campaign_id=spring"
    sample = os.environ.get("ENGINE_SAMPLE_OUT")
    if sample:  # the operator-facing output, kept for the closing note
        with open(sample, "w", encoding="utf-8") as f:
            f.write(show_sample + "\n---\n" + dry + done)


def test_cli_refuses_bad_input_and_changes_nothing(cfg: Config) -> None:
    from tests.integration.test_cli import engine, line

    assert engine(cfg, "migrate").returncode == 0
    assert engine(cfg, "tenants", "add", "acme").returncode == 0
    domain = ("domains", "add", "--tenant", "acme", "acme.example", "--verified")
    assert engine(cfg, *domain).returncode == 0
    assert engine(cfg, "enqueue", "--jsonl", "-", stdin=line(1) + b"\n").returncode == 0
    for args, why in (
        (("messages", "cancel"), b"needs a selection"),
        (("messages", "show", "999999"), b"no message 999999"),
        (("messages", "search", "--limit", "0"), b"--limit 0 is out of range"),
        (("messages", "search", "--since", "yesterday"), b"not an ISO 8601 time"),
        (("messages", "hold", "--campaign"), b"expected one argument"),
    ):
        res = engine(cfg, *args)
        assert res.returncode == 2 and why in res.stderr, (args, res.stderr)
    st = engine(cfg, "status", "--json")
    doc = json.loads(st.stdout)
    assert doc["jobs"] == {"queued": 1, "deferred": 0, "sending": 0} and doc["held"] == 0
