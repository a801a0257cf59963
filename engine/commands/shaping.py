"""`engine shaping ...` commands: explain (policy dry-run), pause, resume.

Pause and resume are thin callers of :mod:`engine.senders.service`, like the admin API's
``/v1/senders/{id}/pause|resume``: same state, events and audit rows.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import asyncpg
import msgspec

from engine import audit
from engine import config as config_mod
from engine.commands.core import run_async, run_with_pool
from engine.errors import UsageError
from engine.queue.streams import close as close_redis
from engine.queue.streams import connect as redis_client
from engine.senders import service
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
        a.add_argument("--tenant", metavar="ID", help="tenant (default: looked up by sender)")
        if name == "pause":
            a.add_argument("--reason", default=service.OPERATOR_REASON, help="shown to the tenant")
        a.set_defaults(func=cmd_pause if name == "pause" else cmd_resume)


async def _tenant_of(pool: asyncpg.Pool, sender: str) -> str:
    """The one tenant using a sender address (``oltp.senders``)."""
    tenants = sorted({s.tenant_id for s in await service.find(pool, sender)})
    if len(tenants) != 1:
        what = "no tenant" if not tenants else f"several tenants ({', '.join(tenants)})"
        raise UsageError(f"sender {sender} belongs to {what}", hint="pass --tenant")
    return tenants[0]


def cmd_explain(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    if "@" not in args.to:
        raise UsageError(f"--to {args.to!r} is not an address")

    async def run(tenant: str) -> int:
        client = redis_client(cfg.redis) if cfg.shaping.enabled else None
        try:
            shaper = Shaper(cfg, client)
            result = await explain(shaper, tenant, args.sender, args.to, args.node)
        finally:
            if client is not None:
                await close_redis(client)
        if args.json:
            sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
        else:
            sys.stdout.write(render(result) + "\n")
        return 0

    async def looked_up(pool: asyncpg.Pool) -> int:
        return await run(await _tenant_of(pool, args.sender))

    if args.tenant:  # explain reads Redis only: no database needed
        return run_async(lambda: run(args.tenant))
    return run_with_pool(cfg, looked_up)


def _set_pause(args: argparse.Namespace, pause: bool) -> int:
    cfg = config_mod.load(args.config)

    async def run(pool: asyncpg.Pool) -> int:
        tenant = args.tenant or await _tenant_of(pool, args.sender)
        client = redis_client(cfg.redis) if cfg.shaping.enabled else None
        try:
            cache = Shaper(cfg, client) if client is not None else None
            if pause:
                sender = await service.pause(
                    pool, tenant, args.sender, args.reason, actor=audit.cli_actor(), cache=cache
                )
                note = ""
            else:
                sender, released = await service.resume(
                    pool, tenant, args.sender, actor=audit.cli_actor(), cache=cache
                )
                note = f" ({released} held jobs released)"
        finally:
            if client is not None:
                await close_redis(client)
        if sender is None:
            raise UsageError(
                f"no sender {args.sender} for tenant {tenant}",
                hint="senders are created when a tenant first enqueues mail from the address",
            )
        sys.stderr.write(f"sender {sender.address} {'paused' if pause else 'resumed'}{note}\n")
        return 0

    return run_with_pool(cfg, run)


def cmd_pause(args: argparse.Namespace) -> int:
    return _set_pause(args, True)


def cmd_resume(args: argparse.Namespace) -> int:
    return _set_pause(args, False)
