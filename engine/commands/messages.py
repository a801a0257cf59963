"""`engine messages show|search|cancel|hold|release|retry`: trace one message, act on many.

Thin callers of :mod:`engine.messages` (the admin API's ``/v1/messages`` calls the same).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

import msgspec

from engine import audit
from engine.commands.core import load_config, run_with_pool, run_with_tiers
from engine.errors import UsageError
from engine.messages import actions, tracing
from engine.messages.text import render_text
from engine.model import JobState, Priority
from engine.store.message_actions import BulkAction, Selection
from engine.store.pool import Tiers

_JSON = msgspec.json.Encoder()


def _time(value: str) -> dt.datetime:
    """ISO 8601 (``2026-12-07``, ``2026-12-07T10:00``, with or without zone; naive is UTC)."""
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the `messages` subcommands."""
    p = sub.add_parser("messages", parents=[common], help="trace one message, act on many")
    msub = p.add_subparsers(dest="messages_command", metavar="ACTION", required=True)

    s = msub.add_parser("show", parents=[common], help="a message's timeline: every event")
    s.add_argument("job", type=int, metavar="JOB")
    s.add_argument("--tenant", metavar="ID", help="only if it is this tenant's")
    s.add_argument("--json", action="store_true", help='{"job": {...}, "events": [...]}')
    s.add_argument(
        "--content", action="store_true", help="print the composed message (operator only)"
    )
    s.set_defaults(func=cmd_show)

    q = msub.add_parser("search", parents=[common], help="find messages, newest first")
    q.add_argument("--tenant", metavar="ID")
    q.add_argument("--campaign", metavar="ID")
    q.add_argument("--sender", metavar="ADDR")
    q.add_argument("--recipient", metavar="ADDR")
    q.add_argument("--message-id", metavar="MID")
    q.add_argument("--state", choices=[s.value for s in JobState])
    q.add_argument("--priority", choices=[p.label for p in Priority])
    q.add_argument("--since", type=_time, metavar="TIME", help="created at or after (ISO 8601)")
    q.add_argument("--until", type=_time, metavar="TIME", help="created before (ISO 8601)")
    q.add_argument("--limit", type=int, default=50, metavar="N", help="page size (1-1000)")
    q.add_argument("--after", type=int, metavar="CURSOR", help="the `next` of the last page")
    q.add_argument("--json", action="store_true", help='{"messages": [...], "next": CURSOR}')
    q.set_defaults(func=cmd_search)

    for action, text in (
        (BulkAction.CANCEL, "cancel waiting messages (in-flight ones when their attempt ends)"),
        (BulkAction.HOLD, "keep waiting messages from being sent until released"),
        (BulkAction.RELEASE, "make held messages due again"),
        (BulkAction.RETRY, "make deferred messages due now"),
    ):
        b = msub.add_parser(action.value, parents=[common], help=text)
        b.add_argument("job", type=int, nargs="?", metavar="JOB", help="one message")
        b.add_argument("--tenant", metavar="ID")
        b.add_argument("--campaign", metavar="ID")
        b.add_argument("--sender", metavar="ADDR")
        b.add_argument("--domain", metavar="DOMAIN", help="the recipients' domain")
        b.add_argument("--dry-run", action="store_true", help="print the count, change nothing")
        b.add_argument("--json", action="store_true")
        b.set_defaults(func=cmd_bulk, action=action)


def cmd_show(args: argparse.Namespace) -> int:
    cfg = load_config(args)

    async def work(tiers: Tiers) -> tuple[tracing.Timeline | None, bytes | None]:
        tl = await tracing.show(tiers.main, args.job, args.tenant)
        if tl is None or not args.content:
            return tl, None
        return tl, await tracing.composed(tiers.main, tl.job, tiers)

    tl, content = run_with_tiers(cfg, work)
    if tl is None:
        scope = f" of tenant {args.tenant}" if args.tenant else ""
        raise UsageError(f"no message {args.job}{scope}", hint="engine messages search ...")
    if args.content and content is None:
        raise UsageError(
            f"the content of message {args.job} is no longer stored",
            hint="retention purges content after its period (docs/compliance.md)",
        )
    if args.json:
        doc: dict[str, Any] = msgspec.to_builtins(tl)
        if content is not None:
            doc["content"] = content.decode("utf-8", "replace")
        sys.stdout.write(_JSON.encode(doc).decode() + "\n")
        return 0
    sys.stdout.write(render_text(tl))
    if content is not None:
        sys.stdout.write("\ncontent (as composed, before DKIM and per-attempt headers):\n")
        sys.stdout.write(content.decode("utf-8", "replace").replace("\r\n", "\n"))
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 1000:
        raise UsageError(f"--limit {args.limit} is out of range", hint="1 to 1000")
    cfg = load_config(args)
    flt = tracing.SearchFilter(
        tenant_id=args.tenant,
        campaign_id=args.campaign,
        sender=args.sender,
        recipient=args.recipient,
        message_id=args.message_id,
        state=args.state,
        priority=None if args.priority is None else Priority.parse(args.priority).value,
        since=args.since,
        until=args.until,
    )
    page = run_with_pool(cfg, lambda pool: tracing.search(pool, flt, limit=args.limit,
                                                           after=args.after))  # fmt: skip
    if args.json:
        sys.stdout.write(_JSON.encode(page).decode() + "\n")
        return 0
    for m in page.messages:
        held = " HELD" if m.held_at and m.state in ("queued", "deferred") else ""
        sys.stdout.write(
            f"{m.id:>12}  {m.state:<10}{held:<5} {m.priority:<6} {m.tenant_id:<12}"
            f" {m.campaign_id or '-':<14} {m.recipient}  {m.last_code or ''}\n"
        )
    if page.next is not None:
        sys.stdout.write(f"more: --after {page.next}\n")
    return 0


def cmd_bulk(args: argparse.Namespace) -> int:
    sel = Selection(
        job_id=args.job,
        tenant_id=args.tenant,
        campaign_id=args.campaign,
        sender=args.sender,
        domain=args.domain,
    )
    cfg = load_config(args)
    action: BulkAction = args.action
    result = run_with_pool(
        cfg,
        lambda pool: actions.run(pool, action, sel, actor=audit.cli_actor(), dry_run=args.dry_run),
    )
    if args.json:
        sys.stdout.write(_JSON.encode(result).decode() + "\n")
        return 0
    verb = {"cancel": "cancelled", "hold": "held", "release": "released", "retry": "made due"}
    what = actions.describe(sel)
    if result.dry_run:
        line = f"dry run: {result.affected} message(s) would be {verb[action.value]} ({what})"
    else:
        line = f"{result.affected} message(s) {verb[action.value]} ({what})"
    sys.stdout.write(line + "\n")
    if result.in_flight:
        sys.stdout.write(
            f"{result.in_flight} in flight: {action.value} applies when their attempt ends,"
            " unless the relay accepts them\n"
        )
    return 0
