"""`engine bounce ...` commands: `engine bounce parse [--json] FILE...` (DESIGN §8)."""

from __future__ import annotations

import argparse
import sys
from typing import IO, Any

import msgspec

from engine.inbound import BounceReport, parse_bounce
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
    bounce.set_defaults(func=lambda _args: _usage(bounce))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_usage(sys.stderr)
    sys.stderr.write("engine: error: bounce needs a subcommand (parse)\n")
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
