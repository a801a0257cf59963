"""`engine shaping ...` commands: explain (policy dry-run), pause, resume."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import asyncpg
import msgspec
import uvloop

from engine import config as config_mod
from engine.config import Config
from engine.errors import StoreError, UsageError
from engine.shaping.explain import explain, render
from engine.shaping.shaper import Shaper


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the `shaping` subcommands."""
    p = sub.add_parser("shaping", parents=[common], help="inspect and steer sending limits")
    ssub = p.add_subparsers(dest="shaping_command", metavar="ACTION", required=True)

    e = ssub.add_parser(
        "explain", parents=[common], help="which limit would hold a message, and until when"
    )
    e.add_argument("--sender", required=True, metavar="S", help="From address")
    e.add_argument("--to", required=True, metavar="ADDR", help="recipient address")
    e.add_argument("--tenant", metavar="ID", help="tenant (default: looked up by sender)")
    e.add_argument("--node", metavar="NAME", help="relay node, to include its limit")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_explain)

    for name, helptext in (("pause", "pause a sender"), ("resume", "resume a paused sender")):
        a = ssub.add_parser(name, parents=[common], help=helptext)
        a.add_argument("--sender", required=True, metavar="S")
        a.add_argument("--tenant", required=True, metavar="ID")
        a.set_defaults(func=cmd_pause if name == "pause" else cmd_resume)


def _client(cfg: Config) -> Any:
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(cfg.redis.url, socket_timeout=cfg.redis.socket_timeout_s)


async def _tenant_of(cfg: Config, sender: str) -> str:
    """The tenant owning a sender address, from the oltp tier."""
    try:
        conn = await asyncpg.connect(cfg.database.dsn, timeout=cfg.database.command_timeout_s)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise StoreError(
            f"cannot look up the tenant of {sender}: {exc}", hint="pass --tenant"
        ) from None
    try:
        rows: list[str] = []
        for table, column in (("oltp.senders", "address"), ("oltp.shaping_senders", "sender")):
            try:
                found = await conn.fetch(
                    f"SELECT DISTINCT tenant_id FROM {table} WHERE {column} = $1", sender.lower()
                )
            except asyncpg.UndefinedTableError:
                continue
            rows.extend(r["tenant_id"] for r in found)
    finally:
        await conn.close()
    tenants = sorted(set(rows))
    if len(tenants) != 1:
        what = "no tenant" if not tenants else f"several tenants ({', '.join(tenants)})"
        raise UsageError(f"sender {sender} belongs to {what}", hint="pass --tenant")
    return tenants[0]


def cmd_explain(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    if "@" not in args.to:
        raise UsageError(f"--to {args.to!r} is not an address")

    async def run() -> int:
        tenant = args.tenant or await _tenant_of(cfg, args.sender)
        client = _client(cfg) if cfg.shaping.enabled else None
        try:
            shaper = Shaper(cfg, client)
            result = await explain(shaper, tenant, args.sender, args.to, args.node)
        finally:
            if client is not None:
                await client.aclose()
        if args.json:
            sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
        else:
            sys.stdout.write(render(result) + "\n")
        return 0

    return uvloop.run(run())


def _set_pause(args: argparse.Namespace, pause: bool) -> int:
    cfg = config_mod.load(args.config)

    async def run() -> int:
        client = _client(cfg)
        try:
            shaper = Shaper(cfg, client)
            if pause:
                changed = await shaper.pause(args.tenant, args.sender)
            else:
                changed = await shaper.resume(args.tenant, args.sender)
            # Record it in the oltp tier too, or a restore after a Redis flush would undo it.
            try:
                pool = await asyncpg.create_pool(cfg.database.dsn, min_size=1, max_size=1)
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                raise StoreError(
                    f"sender {args.sender} {'paused' if pause else 'resumed'} in Redis, but "
                    f"PostgreSQL is unreachable to record it: {exc}",
                    hint="run the command again once the database answers",
                ) from None
            try:
                await shaper.persist(pool)
            finally:
                await pool.close()
        finally:
            await client.aclose()
        state = "paused" if pause else "resumed"
        note = "" if changed else f" (it was already {'paused' if pause else 'not paused'})"
        sys.stderr.write(f"sender {args.sender} {state}{note}\n")
        return 0

    return uvloop.run(run())


def cmd_pause(args: argparse.Namespace) -> int:
    return _set_pause(args, True)


def cmd_resume(args: argparse.Namespace) -> int:
    return _set_pause(args, False)
