"""`engine gdpr erase --tenant T ADDRESS`: remove or pseudonymise a recipient everywhere."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from engine import audit
from engine.commands.core import load_config, run_with_tiers
from engine.gdpr.erase import erase


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the `gdpr` subcommands."""
    p = sub.add_parser("gdpr", parents=[common], help="data-subject requests (GDPR / CAN-SPAM)")
    gsub = p.add_subparsers(dest="gdpr_command", metavar="ACTION", required=True)
    e = gsub.add_parser(
        "erase",
        parents=[common],
        help="erase a recipient's data in every tier; they stay suppressed (hashed)",
    )
    e.add_argument("address", metavar="ADDRESS")
    e.add_argument("--tenant", required=True, metavar="ID")
    e.add_argument(
        "--deep",
        action="store_true",
        help="search every stored body of the tenant, not only theirs",
    )
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_erase)


def cmd_erase(args: argparse.Namespace) -> int:
    cfg = load_config(args)

    result = run_with_tiers(
        cfg,
        lambda t: erase(
            t.main, args.tenant, args.address, actor=audit.cli_actor(), deep=args.deep, tiers=t
        ),
    )
    if args.json:
        sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    else:
        sys.stdout.write(
            f"erased {result.pseudonym} of tenant {result.tenant_id}: {result.jobs} jobs"
            f" ({result.jobs_cancelled} cancelled), {result.contents_deleted} bodies,"
            f" {result.inbound_deleted} inbound messages, {result.events} events; suppressed\n"
        )
        if result.contents_kept_in_use:
            sys.stdout.write(
                f"{result.contents_kept_in_use} bodies mentioning the address are still needed by"
                " other recipients' unsent jobs; run the erase again once they are sent\n"
            )
    return 0
