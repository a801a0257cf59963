"""`engine mailu overrides [--json] [--dir DIR]`: Postfix overrides for a MailU relay node.

Prints (or writes into MailU's overrides directory) ``postfix.cf``, ``postfix.master`` and
``transport.map``: one Postfix transport per provider with the provider's ``max_connections``
and pacing, its recipient domains routed to it, and ``delay_warning_time`` for delay DSNs
(docs/mailu.md, "Postfix overrides").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import msgspec

from engine.config import load as load_config
from engine.nodes.mailu import mailu_overrides, write_overrides
from engine.nodes.overrides import DEFAULT_DELAY_WARNING


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the `mailu` subcommands."""
    p = sub.add_parser("mailu", parents=[common], help="settings for MailU relay nodes")
    msub = p.add_subparsers(dest="mailu_command", metavar="ACTION", required=True)
    o = msub.add_parser(
        "overrides",
        parents=[common],
        help="Postfix overrides pacing each provider (postfix.cf, postfix.master, transport.map)",
    )
    o.add_argument("--json", action="store_true")
    o.add_argument("--dir", metavar="DIR", help="write the files into DIR (MailU's overrides)")
    o.add_argument(
        "--delay-warning-time",
        default=DEFAULT_DELAY_WARNING,
        metavar="T",
        help=f"Postfix delay_warning_time: when a delay DSN goes out ({DEFAULT_DELAY_WARNING})",
    )
    o.set_defaults(func=cmd_overrides)


def cmd_overrides(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    overrides = mailu_overrides(cfg, delay_warning_time=args.delay_warning_time)
    if args.dir:
        for path in write_overrides(overrides, Path(args.dir)):
            sys.stderr.write(f"wrote {path}\n")
    if args.json:
        sys.stdout.write(msgspec.json.encode(overrides).decode() + "\n")
    elif not args.dir:
        for name, text in overrides.files.items():
            sys.stdout.write(f"# --- /overrides/{name} ---\n{text}")
    return 0
