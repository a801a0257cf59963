"""Core commands: run, migrate, tenants, enqueue, status, demo (DESIGN §8 CLI contract)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import IO, Any, TypeVar

import asyncpg
import msgspec
import uvloop

from engine import config as config_mod
from engine.config import Config
from engine.errors import UsageError
from engine.store.pool import Tiers

T = TypeVar("T")
_JSON = msgspec.json.Encoder()


def run_async(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on uvloop (every engine command runs on uvloop)."""

    async def main() -> T:
        return await factory()

    return uvloop.run(main())


def load_config(args: argparse.Namespace) -> Config:
    return config_mod.load(args.config)


def run_with_pool(cfg: Config, work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    """Run ``work`` with a small pool on the configured database, closing it afterwards."""
    from engine.store import pool as pool_mod

    async def go() -> T:
        pool = await pool_mod.connect(cfg.database, min_size=1)
        try:
            return await work(pool)
        finally:
            await pool.close()

    return run_async(go)


def run_with_tiers(cfg: Config, work: Callable[[Tiers], Awaitable[T]]) -> T:
    """:func:`run_with_pool` with a pool per tier server (content and olap may live apart)."""
    from engine.store import pool as pool_mod

    async def go() -> T:
        pool = await pool_mod.connect(cfg.database, min_size=1)
        try:
            tiers = await pool_mod.connect_tiers(cfg.database, pool, min_size=1)
            try:
                return await work(tiers)
            finally:
                await tiers.close()
        finally:
            await pool.close()

    return run_async(go)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the core subcommands."""
    p = sub.add_parser("run", parents=[common], help="run the daemon")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes (one event loop per core), supervised; default 1",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("migrate", parents=[common], help="apply database migrations")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("tenants", parents=[common], help="manage tenants")
    tsub = p.add_subparsers(dest="tenants_command", metavar="ACTION", required=True)
    a = tsub.add_parser("add", parents=[common], help="add a tenant (jobs of unknown ones fail)")
    a.add_argument("tenant_id", metavar="ID")
    a.add_argument("--name")
    a.set_defaults(func=cmd_tenants_add)
    q = tsub.add_parser("quota", parents=[common], help="set or lift a tenant's daily quota")
    q.add_argument("tenant_id", metavar="ID")
    q.add_argument("--daily", type=int, metavar="N", help="messages per UTC day (omit to lift)")
    q.set_defaults(func=cmd_tenants_quota)
    g = tsub.add_parser(
        "grant", parents=[common], help="let a platform database role enqueue for a tenant"
    )
    g.add_argument("tenant_id", metavar="ID")
    g.add_argument("--role", required=True, help="a login role that is a member of engine_platform")
    g.add_argument("--revoke", action="store_true", help="take the grant back")
    g.set_defaults(func=cmd_tenants_grant)

    p = sub.add_parser("enqueue", parents=[common], help="enqueue jobs from JSON lines")
    p.add_argument("--jsonl", required=True, metavar="F|-", help="file of Job JSON lines, - stdin")
    p.set_defaults(func=cmd_enqueue)

    p = sub.add_parser("status", parents=[common], help="jobs waiting and in flight per state")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--all",
        action="store_true",
        help="also count finished jobs per state (a full count of the jobs table: slow when big)",
    )
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("demo", parents=[common], help="self-contained demo with live progress")
    p.add_argument("--jobs", type=int, default=20000)
    p.add_argument("--keep", action="store_true", help="leave throwaway servers running")
    p.set_defaults(func=cmd_demo)


def cmd_run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if args.workers > 1:
        from engine import logs
        from engine.compose import verp_keys
        from engine.supervisor import supervise

        cfg = load_config(args)  # validate once before starting anything
        verp_keys.current(cfg.inbound)  # every worker signs VERP return paths
        logs.setup(cfg.log.level, cfg.log.format)
        return supervise(args.workers, args.config)
    from engine.daemon import run_daemon

    return run_daemon(args.config)


def cmd_migrate(args: argparse.Namespace) -> int:
    from engine.store.domains import publish_rules
    from engine.store.migrate import migrate_tiers

    cfg = load_config(args)
    # Every server of the tiers (content and olap may live apart: docs/scaling.md).
    applied = run_async(lambda: migrate_tiers(cfg.database))
    # The SQL enqueue path reads the [security] rules from engine.settings.
    run_async(lambda: publish_rules(cfg.database.dsn, cfg.security))
    for name in applied:
        sys.stdout.write(f"applied {name}\n")
    if not applied:
        sys.stdout.write("database is up to date\n")
    return 0


def cmd_tenants_add(args: argparse.Namespace) -> int:
    from engine.store import tenants

    cfg = load_config(args)

    created = run_with_pool(cfg, lambda pool: tenants.add(pool, args.tenant_id, args.name))
    sys.stdout.write(f"tenant {args.tenant_id} {'added' if created else 'already exists'}\n")
    return 0


def cmd_tenants_grant(args: argparse.Namespace) -> int:
    from engine.store import tenants

    cfg = load_config(args)
    if args.revoke:
        run_with_pool(cfg, lambda pool: tenants.revoke_platform(pool, args.role, args.tenant_id))
        sys.stdout.write(f"{args.role} may no longer enqueue for {args.tenant_id}\n")
    else:
        run_with_pool(cfg, lambda pool: tenants.grant_platform(pool, args.role, args.tenant_id))
        sys.stdout.write(f"{args.role} may enqueue for {args.tenant_id}\n")
    return 0


def cmd_tenants_quota(args: argparse.Namespace) -> int:
    from engine.store import quota

    cfg = load_config(args)
    if args.daily is not None and args.daily < 0:
        raise UsageError("--daily must be 0 or more")

    if not run_with_pool(cfg, lambda pool: quota.set_daily_quota(pool, args.tenant_id, args.daily)):
        raise UsageError(f"no tenant {args.tenant_id!r} (add it with: engine tenants add ID)")
    what = f"{args.daily} messages per UTC day" if args.daily is not None else "no quota"
    sys.stdout.write(f"tenant {args.tenant_id}: {what}\n")
    return 0


def _lines(stream: IO[bytes], size: int) -> Iterator[list[tuple[int, bytes]]]:
    batch: list[tuple[int, bytes]] = []
    for n, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        batch.append((n, line))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def cmd_enqueue(args: argparse.Namespace) -> int:
    from engine.enqueue import CHUNK, enqueue
    from engine.store import pool as pool_mod

    cfg = load_config(args)
    try:
        stream: IO[bytes] = sys.stdin.buffer if args.jsonl == "-" else open(args.jsonl, "rb")  # noqa: SIM115
    except OSError as exc:
        raise UsageError(f"cannot read {args.jsonl}: {exc.strerror}") from None

    async def go() -> int:
        refused = 0
        pool = await pool_mod.connect(cfg.database, min_size=1)
        tiers = await pool_mod.connect_tiers(cfg.database, pool, min_size=1)
        try:
            for batch in _lines(stream, CHUNK):
                results = await enqueue(
                    pool,
                    [line for _, line in batch],
                    max_message_bytes=cfg.queue.max_message_bytes,
                    max_age_s=cfg.queue.max_age_s,
                    raw_trace=cfg.security.raw_trace_headers,
                    enforce_domains=cfg.security.enforce_sender_domains,
                    content_pool=tiers.content,
                )
                out = []
                for (lineno, _), res in zip(batch, results, strict=True):
                    if res.error is None:
                        out.append(f"{res.job_id}\n")
                    else:
                        refused += 1
                        err = {
                            "line": lineno,
                            "idempotency_key": res.idempotency_key,
                            "error": res.error,
                        }
                        sys.stderr.write(_JSON.encode(err).decode() + "\n")
                sys.stdout.write("".join(out))
                sys.stdout.flush()
        finally:
            await tiers.close()
            await pool.close()
            if stream is not sys.stdin.buffer:
                stream.close()
        return refused

    return 1 if run_async(go) else 0


def cmd_status(args: argparse.Namespace) -> int:
    from engine.queue import streams as streams_mod
    from engine.redaction import redact
    from engine.store import backlog as backlog_store
    from engine.store import jobs as job_store
    from engine.store import pool as pool_mod

    cfg = load_config(args)

    async def go() -> dict[str, Any]:
        pool = await pool_mod.connect(cfg.database, min_size=1)
        try:
            # The waiting and in-flight jobs only (backlog.read: no scan of finished ones);
            # --all adds the full per-state count.
            backlog = await backlog_store.read(pool)
            counts = await job_store.counts(pool) if args.all else None
        finally:
            await pool.close()
        if counts is None:
            counts = dict(backlog.states)
        doc: dict[str, Any] = {
            "jobs": counts,
            "total": sum(counts.values()),
            "held": backlog.by_state()["held"],
            "backlog": backlog.waiting,
        }
        client = streams_mod.connect(cfg.redis)
        try:
            doc["streams"] = await streams_mod.Streams(
                client, cfg.redis.prefix, streams_mod.shard_count(cfg.redis)
            ).depth()
        except Exception as exc:  # status must work with Redis down: say so, don't fail
            doc["streams"] = None
            doc["redis_error"] = redact(str(exc))
        finally:
            await streams_mod.close(client)
        return doc

    doc = run_async(go)
    if args.json:
        sys.stdout.write(_JSON.encode(doc).decode() + "\n")
    else:
        for state, n in doc["jobs"].items():
            sys.stdout.write(f"{state:<11} {n}\n")
        sys.stdout.write(f"{'total':<11} {doc['total']}\n")
        sys.stdout.write(f"{'held':<11} {doc['held']} (queued or deferred, held by an operator)\n")
        if doc["streams"] is not None:
            depth = " ".join(f"{k}={v}" for k, v in doc["streams"].items())
            sys.stdout.write(f"streams     {depth}\n")
        else:
            sys.stdout.write(f"streams     unavailable ({doc['redis_error']})\n")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.demo import run_demo

    return run_demo(args.config, jobs=args.jobs, keep=args.keep)
