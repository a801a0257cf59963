"""`engine nodes check [NODE] [--json]`: can each relay node take what the engine needs?

A thin caller of :func:`engine.nodes.check.run_check`, like ``GET /v1/nodes/check``. Exit 0 when
every node checked takes it, 1 when one refuses (DESIGN §8), 2 for a usage or config error.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import asyncpg
import msgspec

from engine.commands.core import run_async
from engine.config import Config
from engine.config import load as load_config
from engine.errors import StoreError
from engine.nodes.check import DEFAULT_MAX_DOMAINS, DEFAULT_RCPT, run_check
from engine.nodes.report import CheckReport, render


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the `nodes` subcommands."""
    p = sub.add_parser("nodes", parents=[common], help="relay nodes (MailU): check them")
    nsub = p.add_subparsers(dest="nodes_command", metavar="ACTION", required=True)
    c = nsub.add_parser(
        "check",
        parents=[common],
        help="capabilities, TLS, AUTH and dry-run transactions of each relay node",
    )
    c.add_argument("node", nargs="?", metavar="NODE", help="one [[relay.nodes]] name (default all)")
    c.add_argument("--json", action="store_true")
    c.add_argument(
        "--rcpt", default=DEFAULT_RCPT, metavar="ADDR", help=f"dry-run recipient ({DEFAULT_RCPT})"
    )
    c.add_argument(
        "--timeout", type=float, default=10.0, metavar="S", help="connect and reply timeout"
    )
    c.add_argument(
        "--max-domains",
        type=int,
        default=DEFAULT_MAX_DOMAINS,
        metavar="N",
        help="sender domains probed at most",
    )
    c.add_argument(
        "--no-db", action="store_true", help="do not read tenants' sender domains from PostgreSQL"
    )
    c.set_defaults(func=cmd_check)


async def _check(cfg: Config, args: argparse.Namespace) -> CheckReport:
    pool: asyncpg.Pool | None = None
    no_db = "--no-db: tenants' sender domains not probed"
    if not args.no_db:
        from engine.store import pool as pool_mod

        try:
            pool = await pool_mod.connect(cfg.database, min_size=1)
        except StoreError as exc:  # the nodes can still be checked; the report says what is left
            no_db = f"database unavailable, tenants' sender domains not probed: {exc}"
    try:
        return await run_check(
            cfg,
            pool,
            no_db=no_db,
            node=args.node,
            rcpt=args.rcpt,
            timeout_s=args.timeout,
            max_domains=args.max_domains,
        )
    finally:
        if pool is not None:
            await pool.close()


def cmd_check(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    report = run_async(lambda: _check(cfg, args))
    if args.json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        sys.stdout.write(render(report) + "\n")
    return 0 if report.ok else 1
