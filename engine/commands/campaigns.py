"""`engine campaigns set|show|stats`: campaign templates and per-campaign figures.

``set`` reads each part from a file (``-`` for stdin) and stores the template as the
campaign's next version, printing the version; ``show`` prints the current version as JSON;
``stats`` prints the campaign's counters from the OLAP tier as JSON. The same service as
``PUT /v1/campaigns/{id}`` and ``GET /v1/campaigns/{id}/stats``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import msgspec

from engine import campaigns
from engine.commands.core import load_config, run_with_tiers
from engine.compose.template import TemplateSource
from engine.errors import UsageError


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the `campaigns` subcommands."""
    p = sub.add_parser("campaigns", parents=[common], help="campaign templates and figures")
    csub = p.add_subparsers(dest="campaigns_command", metavar="ACTION", required=True)
    s = csub.add_parser("set", parents=[common], help="store a campaign's template (new version)")
    s.add_argument("--tenant", required=True, metavar="T")
    s.add_argument("campaign", metavar="CAMPAIGN_ID")
    s.add_argument("--subject", required=True, help="the subject template (one line)")
    s.add_argument("--text", metavar="FILE", help="the text part's template ('-': stdin)")
    s.add_argument("--html", metavar="FILE", help="the HTML part's template ('-': stdin)")
    s.set_defaults(func=cmd_set)
    for name, func, what in (
        ("show", cmd_show, "the campaign's current template, as JSON"),
        ("stats", cmd_stats, "the campaign's counters per send day, as JSON"),
    ):
        c = csub.add_parser(name, parents=[common], help=what)
        c.add_argument("--tenant", required=True, metavar="T")
        c.add_argument("campaign", metavar="CAMPAIGN_ID")
        c.set_defaults(func=func)


def _read(path: str | None) -> str | None:
    if path is None:
        return None
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def cmd_set(args: argparse.Namespace) -> int:
    if args.text == "-" and args.html == "-":
        raise UsageError("only one of --text and --html can be read from stdin")
    source = TemplateSource(args.subject, _read(args.text), _read(args.html))
    cfg = load_config(args)
    stored = run_with_tiers(
        cfg,
        lambda t: campaigns.set_template(
            t.content, args.tenant, args.campaign, source, tenants_db=t.main
        ),
    )
    sys.stdout.write(f"{stored.tenant_id}\t{stored.campaign_id}\tversion {stored.version}\n")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    found = run_with_tiers(cfg, lambda t: campaigns.show(t.content, args.tenant, args.campaign))
    sys.stdout.write(msgspec.json.encode(found).decode() + "\n")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    found = run_with_tiers(
        cfg, lambda t: campaigns.stats(t.content, args.tenant, args.campaign, olap=t.olap)
    )
    sys.stdout.write(msgspec.json.encode(found).decode() + "\n")
    return 0
