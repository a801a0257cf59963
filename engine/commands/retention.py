"""`engine retention run`: purge what each tier keeps past its `[retention]` age."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from engine import audit
from engine.commands.core import load_config, run_with_tiers
from engine.retention import run


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the `retention` subcommands."""
    p = sub.add_parser("retention", parents=[common], help="data retention per tier")
    rsub = p.add_subparsers(dest="retention_command", metavar="ACTION", required=True)
    r = rsub.add_parser("run", parents=[common], help="delete rows past their [retention] age")
    r.add_argument("--dry-run", action="store_true", help="count what is due, delete nothing")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args)

    result = run_with_tiers(
        cfg,
        lambda t: run(t.main, cfg, dry_run=args.dry_run, actor=audit.cli_actor(), tiers=t),
    )
    if args.json:
        sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    else:
        verb = "due" if result.dry_run else "deleted"
        counts = msgspec.to_builtins(result)
        counts.pop("dry_run")
        sys.stdout.write(", ".join(f"{k} {v}" for k, v in counts.items()) + f" {verb}\n")
    return 0
