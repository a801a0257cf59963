"""``engine keys create|list|revoke|rotate``: tenant API keys for the admin side-port.

DESIGN §8: ``engine keys create --tenant T --scope send|read|manage`` prints the new key alone
on the first line of stdout (shown once); ``engine keys revoke KEY_PREFIX``. The same service
functions as ``/v1/keys`` (engine/keys/service.py); every change is audited as ``cli:<user>``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import msgspec

from engine import audit
from engine.commands.core import load_config, run_with_pool
from engine.errors import ApiKeyError, UsageError
from engine.keys import service
from engine.keys.store import KeyView
from engine.keys.token import Scope

_JSON = msgspec.json.Encoder()
T = TypeVar("T")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the `keys` subcommands."""
    p = sub.add_parser("keys", parents=[common], help="tenant API keys for the admin API")
    ksub = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    c = ksub.add_parser(
        "create", parents=[common], help="create a key; prints it alone on stdout's first line"
    )
    c.add_argument("--tenant", required=True, metavar="T")
    c.add_argument("--scope", required=True, choices=[s.value for s in Scope])
    c.add_argument("--name", default="", help="what the key is for (shown in listings)")
    c.set_defaults(func=cmd_create)
    ls = ksub.add_parser("list", parents=[common], help="list keys (never their secrets)")
    ls.add_argument("--tenant", metavar="T", help="one tenant's keys (default: every tenant)")
    ls.add_argument("--revoked", action="store_true", help="include revoked keys")
    ls.add_argument("--json", action="store_true", help='one JSON object {"keys": [...]}')
    ls.set_defaults(func=cmd_list)
    r = ksub.add_parser("revoke", parents=[common], help="revoke a key now")
    r.add_argument("prefix", metavar="KEY_PREFIX")
    r.set_defaults(func=cmd_revoke)
    ro = ksub.add_parser(
        "rotate",
        parents=[common],
        help="replace a key (same tenant, scope, name); prints the new key; revokes the old",
    )
    ro.add_argument("prefix", metavar="KEY_PREFIX")
    ro.set_defaults(func=cmd_rotate)


def _shown_once(key: str, view: KeyView) -> None:
    sys.stdout.write(key + "\n")
    sys.stderr.write(
        f"key {view.prefix} of tenant {view.tenant_id}, scope {view.scope}:"
        " shown once, store it now (only its prefix can be seen again)\n"
    )


def _changing(args: argparse.Namespace, work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    """Run a key change; what the service refuses (unknown prefix, bad scope...) is a usage
    error of the command line."""
    cfg = load_config(args)
    try:
        return run_with_pool(cfg, work)
    except ApiKeyError as exc:
        raise UsageError(str(exc)) from None


def cmd_create(args: argparse.Namespace) -> int:
    key, view = _changing(
        args,
        lambda pool: service.create(
            pool, args.tenant, args.scope, actor=audit.cli_actor(), name=args.name
        ),
    )
    _shown_once(key, view)
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    key, view = _changing(
        args, lambda pool: service.rotate(pool, args.prefix, actor=audit.cli_actor())
    )
    _shown_once(key, view)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    view = _changing(args, lambda pool: service.revoke(pool, args.prefix, actor=audit.cli_actor()))
    sys.stdout.write(f"key {view.prefix} of tenant {view.tenant_id} revoked\n")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    found = run_with_pool(
        cfg, lambda pool: service.listing(pool, args.tenant, include_revoked=args.revoked)
    )
    if args.json:
        sys.stdout.write(_JSON.encode({"keys": found}).decode() + "\n")
        return 0
    for k in found:
        used = k.last_used_at.isoformat(timespec="seconds") if k.last_used_at else "never"
        state = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active"
        sys.stdout.write(
            f"{k.prefix}  {k.tenant_id}  {k.scope:<6}  {state}  last used {used}"
            + (f"  {k.name}" if k.name else "")
            + "\n"
        )
    return 0
