"""``engine demo`` / ``make demo``: the whole engine on one machine, with live progress.

Uses PostgreSQL and Redis at the configured URLs when they answer (in a database and key prefix
of its own), else starts throwaway ones from the binaries on PATH. Starts a local SMTP sink as
the relay node, generates a DKIM key, enqueues demo jobs through the batch path, runs the real
daemon (``engine run``) as a child process and reports what happened.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import dkim
import orjson
import redis.asyncio as aioredis

from engine import config as config_mod
from engine.config import Config, DatabaseConfig
from engine.dkim.keys import generate_key
from engine.enqueue import enqueue
from engine.errors import EngineError
from engine.redaction import redact
from engine.servers import ThrowawayPostgres, ThrowawayRedis
from engine.sink import SmtpSink
from engine.store import demo as demo_store
from engine.store import pool as pool_mod
from engine.store import tenants
from engine.store.migrate import migrate
from engine.tenancy import domains as sending_domains

DEMO_DB = "penguinmails_demo"
DOMAIN = "demo.penguinmails.test"
SELECTOR = "demo"
RECIPIENT_DOMAINS = ("gmail.com", "outlook.com", "yahoo.com", "icloud.com", "example.org")
DOMAIN_PROVIDER = {
    "gmail.com": "gmail",
    "outlook.com": "outlook",
    "yahoo.com": "yahoo",
    "icloud.com": "icloud",
    "example.org": "example",
}
PROVIDER_MX = {
    "gmail": "gmail-smtp-in.l.google.com",
    "outlook": "outlook-com.olc.protection.outlook.com",
    "yahoo": "mta5.am0.yahoodns.net",
    "icloud": "mx01.mail.icloud.com",
    "example": "mx.example.org",
}


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


async def _pg_answers(dsn: str) -> bool:
    try:
        conn = await asyncio.wait_for(asyncpg.connect(dsn), 3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


async def _redis_answers(url: str) -> bool:
    client = aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        return bool(await client.ping())
    except Exception:  # any failure means "start our own"
        return False
    finally:
        await client.aclose()


async def _demo_database(dsn: str) -> str:
    """A fresh database of the demo's own on that server (falls back to the configured one)."""
    try:
        conn = await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError):
        return dsn
    try:
        await demo_store.recreate_database(conn, DEMO_DB)
    except asyncpg.PostgresError:
        return dsn
    finally:
        await conn.close()
    return re.sub(r"/[^/?]*(\?|$)", f"/{DEMO_DB}\\1", dsn.split("://", 1)[1], count=1).join(
        [dsn.split("://", 1)[0] + "://", ""]
    )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return orjson.dumps(value).decode()
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_toml(path: Path, data: dict[str, Any]) -> None:
    """Write a config dict (sections, arrays of tables, inline tables for dicts) as TOML."""
    lines: list[str] = []
    for section, values in data.items():
        scalars = {
            k: v
            for k, v in values.items()
            if not isinstance(v, list | dict)
            or (isinstance(v, list) and not (v and isinstance(v[0], dict)))
        }
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in scalars.items()]
        for k, v in values.items():
            if isinstance(v, dict):
                lines.append(f"[{section}.{k}]")
                lines += [f"{_toml_value(kk)} = {_toml_value(vv)}" for kk, vv in v.items()]
            elif isinstance(v, list) and v and isinstance(v[0], dict):
                for table in v:
                    lines.append(f"[[{section}.{k}]]")
                    lines += [f"{kk} = {_toml_value(vv)}" for kk, vv in table.items()]
    path.write_text("\n".join(lines) + "\n")


def _jobs(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        domain = RECIPIENT_DOMAINS[i % len(RECIPIENT_DOMAINS)]
        local = f"user{i}"
        if i % 100 == 7:
            local = f"bounce{i}"  # the sink answers 550 5.1.1
        elif i % 100 == 42:
            local = f"busy{i}"  # the sink answers 451 4.2.1: deferred, retried later
        out.append(
            orjson.dumps(
                {
                    "tenant_id": "demo",
                    "idempotency_key": f"demo-{i}",
                    "from": f"news@{DOMAIN}",
                    "to": f"{local}@{domain}",
                    "subject": "PenguinMails demo — hello ✉",
                    "text": "Hello from the PenguinMails dispatch engine.\n" * 20,
                    "html": "<p>Hello from the <b>PenguinMails</b> dispatch engine.</p>" * 20,
                    "campaign_id": "demo-campaign",
                    "list_unsubscribe": "https://unsubscribe.penguinmails.test/u/demo",
                    "priority": "high" if i % 50 == 0 else "normal",
                }
            )
        )
    return out


def _bar(done: int, total: int, width: int = 30) -> str:
    filled = int(width * done / total) if total else width
    return "█" * filled + "░" * (width - filled)


async def _progress(
    dsn: str, total: int, daemon: subprocess.Popen[bytes], timeout: float
) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    start = time.monotonic()
    counts: dict[str, int] = {}
    tty = sys.stdout.isatty()
    last_line = 0.0
    try:
        while True:
            counts = await demo_store.jobs_per_state(conn)
            finished = sum(counts.get(s, 0) for s in ("relayed", "failed", "deferred"))
            elapsed = time.monotonic() - start
            rate = counts.get("relayed", 0) / elapsed if elapsed > 0 else 0.0
            line = (
                f"  {_bar(finished, total)} {finished:>6}/{total}"
                f"  relayed={counts.get('relayed', 0)}"
                f" deferred={counts.get('deferred', 0)} failed={counts.get('failed', 0)}"
                f"  {rate:,.0f} msg/s"
            )
            done = finished >= total and counts.get("sending", 0) == 0
            if tty:
                _out(f"\r{line}   ")
            elif done or elapsed - last_line >= 2.0:  # a log, not a screen: a line every 2 s
                last_line = elapsed
                _out(f"{line}\n")
            if done:
                break
            if daemon.poll() is not None:
                raise EngineError(f"the daemon exited with code {daemon.returncode}")
            if elapsed > timeout:
                _out("\n")
                raise EngineError(f"demo did not finish within {timeout:.0f}s: {counts}")
            await asyncio.sleep(0.25)
    finally:
        await conn.close()
    if tty:
        _out("\n")
    counts["_elapsed_ms"] = int((time.monotonic() - start) * 1000)
    return counts


def _unstuff(data: bytes) -> bytes:
    return re.sub(rb"(?m)^\.\.", b".", data)


async def _run(cfg_path: str | None, jobs: int, keep: bool) -> int:
    base: Config = config_mod.load(cfg_path) if cfg_path else config_mod.parse({})
    tmp = Path(tempfile.mkdtemp(prefix="engine-demo-"))
    pg: ThrowawayPostgres | None = None
    redis: ThrowawayRedis | None = None
    _out("PenguinMails engine demo\n")
    if await _pg_answers(base.database.dsn):
        dsn = await _demo_database(base.database.dsn)
        _out(f"  PostgreSQL: using {redact(base.database.dsn)} (database {DEMO_DB})\n")
    else:
        pg = ThrowawayPostgres().start()
        dsn = pg.dsn
        _out(
            f"  PostgreSQL: not reachable at {redact(base.database.dsn)}; "
            f"started a throwaway server on port {pg.port}\n"
        )
    if await _redis_answers(base.redis.url):
        redis_url = base.redis.url
        _out(f"  Redis: using {redact(redis_url)} (key prefix pmdemo)\n")
    else:
        redis = ThrowawayRedis().start()
        redis_url = redis.url
        _out(
            f"  Redis: not reachable at {redact(base.redis.url)};"
            f" started a throwaway one on port {redis.port}\n"
        )
    client = aioredis.Redis.from_url(redis_url)
    keys = [k async for k in client.scan_iter(match="pmdemo:*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()

    pem, txt = generate_key("rsa-sha256", 2048)
    key_file = tmp / "dkim.pem"
    key_file.write_bytes(pem)
    key_file.chmod(0o600)
    sink = SmtpSink(
        rcpt_rules={
            b"bounce": b"550 5.1.1 <recipient>: user unknown",
            b"busy": b"451 4.2.1 mailbox busy, try later",
        },
        keep=5,
    )
    await sink.start()
    _out(f"  Relay node: local SMTP sink on 127.0.0.1:{sink.port} (stands in for MailU)\n")
    _out(f"  DKIM: generated RSA-2048 key, selector {SELECTOR}._domainkey.{DOMAIN}\n")
    data = {
        "database": {"dsn": dsn, "pool_min": 2, "pool_max": 10},
        "redis": {"url": redis_url, "prefix": "pmdemo"},
        "queue": {"max_in_flight": 512, "batch_size": 256},
        "relay": {
            "nodes": [
                {
                    "name": "mailu-1",
                    "host": "127.0.0.1",
                    "port": sink.port,
                    "tls": "none",
                    "max_connections": 16,
                }
            ]
        },
        "dkim": {
            "enabled": True,
            "required": True,
            "keys": [
                {
                    "domain": DOMAIN,
                    "selector": SELECTOR,
                    "algorithm": "rsa-sha256",
                    "private_key_file": str(key_file),
                }
            ],
        },
        # Shaping on, with ceilings well above what one sink takes: the demo shows the per-provider
        # rollup (MX → provider) working offline through [dns.overrides].
        "shaping": {
            "enabled": True,
            "warmup": False,
            "default_rate_per_s": 5000.0,
            "providers": [
                {
                    "name": p,
                    "mx_suffixes": [m.split(".", 1)[1]],
                    "rate_per_s": 5000.0,
                    "max_connections": 16,
                }
                for p, m in PROVIDER_MX.items()
            ],
        },
        "dns": {"overrides": {d: [PROVIDER_MX[p]] for d, p in DOMAIN_PROVIDER.items()}},
        "inbound": {
            "verp_domain": "bounces.penguinmails.test",
            # A fresh random secret per run: the engine refuses a known or short one.
            "verp_secret": secrets.token_hex(32),
            "listen": "127.0.0.1:0",
        },
        "admin": {"listen": "127.0.0.1:0"},
        "log": {"level": "warning"},
    }
    cfg_file = tmp / "engine.toml"
    write_toml(cfg_file, data)
    cfg_file.chmod(0o600)  # it holds the run's VERP secret
    cfg = config_mod.load(cfg_file)
    await migrate(dsn)
    pool = await pool_mod.connect(DatabaseConfig(dsn=dsn, pool_min=1, pool_max=4))
    daemon: subprocess.Popen[bytes] | None = None
    try:
        await tenants.add(pool, "demo", "Demo tenant")
        # Sending domains belong to tenants: the demo vouches for its own, as an operator would.
        await sending_domains.add(pool, "demo", DOMAIN, verified=True)
        items = _jobs(jobs)
        t0 = time.perf_counter()
        res = await enqueue(
            pool,
            items,
            max_message_bytes=cfg.queue.max_message_bytes,
            max_age_s=cfg.queue.max_age_s,
            enforce_domains=cfg.security.enforce_sender_domains,
        )
        enq_s = time.perf_counter() - t0
        stored = await demo_store.stored_contents(pool)
        _out(
            f"  Enqueued {sum(1 for r in res if r.job_id)} jobs in {enq_s:.2f}s "
            f"({jobs / enq_s:,.0f} jobs/s, batch path); bodies stored: {stored}\n"
        )
        log_file = tmp / "daemon.log"
        with open(log_file, "wb") as log_out:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "engine", "run", "--config", str(cfg_file)],
                stdout=log_out,
                stderr=subprocess.STDOUT,
            )
        _out(f"  Daemon: engine run (pid {daemon.pid}), log {log_file}\n")
        counts = await _progress(dsn, jobs, daemon, timeout=max(120.0, jobs / 50))
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(60)
        elapsed = counts.pop("_elapsed_ms") / 1000
        verified = 0
        for raw in sink.kept:
            msg = _unstuff(raw)
            # stock dkimpy, as a receiver would check it; the TXT record stands in for DNS
            verified += bool(dkim.verify(msg, dnsfunc=lambda name, timeout=5: txt.encode()))
        relayed = counts.get("relayed", 0)
        _out("\nSummary\n")
        _out(
            f"  relayed   {relayed}\n  deferred  {counts.get('deferred', 0)}"
            "   (451 from the sink; retried with backoff)\n"
            f"  failed    {counts.get('failed', 0)}   (550 5.1.1 from the sink)\n"
        )
        _out(
            f"  rate      {relayed / elapsed:,.0f} msg/s over {elapsed:.1f}s "
            "(DKIM RSA-2048, PostgreSQL durable)\n"
        )
        _out(f"  sink      {sink.stats.messages} messages, {sink.stats.duplicates} duplicates\n")
        rows = await demo_store.relayed_per_provider(pool)
        per = ", ".join(f"{provider or '?'} {n / elapsed:,.0f}/s" for provider, n in rows)
        _out(f"  providers {per}\n")
        _out(f"  DKIM      {verified}/{len(sink.kept)} sampled messages verified\n")
        _out(f"  daemon    exited {code} after SIGTERM (drained)\n")
        ok = (
            code == 0
            and relayed + counts.get("failed", 0) + counts.get("deferred", 0) == jobs
            and sink.stats.duplicates == 0
            and verified == len(sink.kept)
        )
        return 0 if ok else 1
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
        await pool.close()
        await sink.stop()
        if not keep:
            for server in (pg, redis):
                if server is not None:
                    server.cleanup()


def run_demo(config_path: str | None, *, jobs: int, keep: bool) -> int:
    """Entry point of ``engine demo``."""
    import uvloop

    return uvloop.run(_run(config_path, jobs, keep))
