"""`engine bounce ...` commands: `engine bounce parse [--json] FILE...` (DESIGN §8), and the
quarantine: `engine bounce quarantined [--json]`, `engine bounce requeue ID...`."""

from __future__ import annotations

import argparse
import sys
from typing import IO, Any

import msgspec

from engine import audit
from engine.commands.core import load_config, run_with_tiers
from engine.errors import UsageError
from engine.inbound import BounceReport, parse_bounce
from engine.inbound import quarantine as quarantine_service
from engine.inbound.patterns import load_patterns

#: Lines are written in batches of this many bytes: thousands of files stream without a
#: syscall per file.
_FLUSH_BYTES = 64 * 1024


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the `bounce` subcommands."""
    bounce = sub.add_parser("bounce", parents=[common], help="bounce and complaint tools")
    bounce_sub = bounce.add_subparsers(dest="bounce_command", metavar="SUBCOMMAND")
    parse = bounce_sub.add_parser(
        "parse",
        parents=[common],
        help="parse bounce/complaint messages, one result line per file",
        description="Parse raw inbound messages (bounces, complaints, auto-replies). Prints one "
        "line per file: the Bounce JSON contract with --json, else a short summary.",
    )
    parse.add_argument("--json", action="store_true", help="print Bounce JSON lines")
    parse.add_argument("files", nargs="+", metavar="FILE", help="raw RFC 5322 message files")
    parse.set_defaults(func=run_parse)
    requeue = bounce_sub.add_parser(
        "requeue",
        parents=[common],
        help="parse quarantined inbound messages again",
        description="Clear the quarantine mark of stored inbound messages (quarantined because "
        "their parse used up [inbound] parse_cpu_budget_ms or crashed the parse worker): the "
        "running daemon parses them again within [inbound] sweep_interval_s. Exit 1 when an "
        "id is not a stored message.",
    )
    requeue.add_argument("ids", nargs="+", type=int, metavar="ID", help="inbound message ids")
    requeue.add_argument("--json", action="store_true", help="print the result as JSON")
    requeue.set_defaults(func=run_requeue)
    listed = bounce_sub.add_parser(
        "quarantined",
        parents=[common],
        help="list quarantined inbound messages (newest first)",
    )
    listed.add_argument("--limit", type=int, default=100, metavar="N")
    listed.add_argument("--json", action="store_true", help="one JSON object per message")
    listed.set_defaults(func=run_quarantined)
    bounce.set_defaults(func=lambda _args: _usage(bounce))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_usage(sys.stderr)
    sys.stderr.write("engine: error: bounce needs a subcommand (parse, quarantined, requeue)\n")
    return 2


def run_parse(args: argparse.Namespace) -> int:
    """Parse every file; an unreadable file gets a line on stderr and exit status 1."""
    load_patterns()  # fail fast (exit 2) on a broken pattern file, before any output
    out = sys.stdout.buffer
    encoder = msgspec.json.Encoder()
    pending = bytearray()
    failed = 0
    for path in args.files:
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
        except OSError as exc:
            failed += 1
            _flush(out, pending)
            sys.stderr.write(f"engine: cannot read {path}: {exc.strerror or exc}\n")
            continue
        report = parse_bounce(raw)
        if args.json:
            pending += encoder.encode(report.to_record(path))
            pending += b"\n"
        else:
            pending += summary_line(path, report).encode("utf-8", "replace")
        if len(pending) >= _FLUSH_BYTES:
            _flush(out, pending)
    _flush(out, pending)
    return 1 if failed else 0


def summary_line(path: str, report: BounceReport) -> str:
    """``FILE: kind address status reason hard|soft[, ...]`` for humans."""
    if not report.recipients:
        return f"{path}: {report.kind.value}\n"
    items = []
    for r in report.recipients:
        strength = "hard" if r.hard else "soft"
        items.append(f"{r.address} {r.status or '-'} {r.reason.value} {strength}")
    extra = f" ({report.feedback_type})" if report.feedback_type else ""
    return f"{path}: {report.kind.value}{extra} " + ", ".join(items) + "\n"


def _flush(out: IO[bytes], pending: bytearray) -> None:
    if pending:
        out.write(pending)
        out.flush()
        pending.clear()


def run_requeue(args: argparse.Namespace) -> int:
    """`engine bounce requeue ID...`: one line per id (or one JSON object with --json)."""
    if any(i < 1 for i in args.ids):
        raise UsageError("inbound message ids are positive integers")
    cfg = load_config(args)
    result = run_with_tiers(
        cfg,
        lambda t: quarantine_service.requeue(
            t.content, args.ids, audit.cli_actor(), audit_pool=t.main
        ),
    )
    if args.json:
        sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    else:
        lines = [f"{i}: requeued, the daemon parses it again" for i in result.requeued]
        lines += [f"{i}: already processed, nothing to do" for i in result.processed]
        lines += [f"{i}: not quarantined, waiting to be parsed" for i in result.pending]
        lines += [f"{i}: no such inbound message" for i in result.missing]
        sys.stdout.write("".join(line + "\n" for line in lines))
    return 1 if result.missing else 0


def run_quarantined(args: argparse.Namespace) -> int:
    """`engine bounce quarantined`: the messages waiting for an operator, newest first."""
    cfg = load_config(args)
    rows = run_with_tiers(cfg, lambda t: quarantine_service.listing(t.content, args.limit))
    out = []
    for r in rows:
        if args.json:
            out.append(msgspec.json.encode(r).decode())
        else:
            cpu = f"{r.parse_cpu_ms:.0f} ms" if r.parse_cpu_ms is not None else "-"
            out.append(
                f"{r.id} {r.quarantined_at:%Y-%m-%dT%H:%M:%SZ} peer={r.peer} size={r.size}"
                f" cpu={cpu}: {r.reason}"
            )
    sys.stdout.write("".join(line + "\n" for line in out))
    return 0
