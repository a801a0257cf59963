"""``python -m engine.inbound.parse_worker``: one bounce-parse process, fed by the daemon's pipes.

The daemon (:mod:`engine.inbound.workers`) sends one message at a time, so the CPU this process
uses between a request and its answer is that message's: the daemon reads it from /proc and
SIGKILLs the process once the budget is spent (a C regex does not look at signals, so no timer
in here could stop it).

Frames in: ``u32 len(envelope_to) | envelope_to (UTF-8) | u32 len(raw) | raw`` (big-endian; an
empty envelope_to means none). Frames out: ``u32 len | msgpack [Analysis | None, error | None]``,
after a first empty frame once the process is ready. It ends at EOF on stdin (the daemon closing
it, or dying); SIGINT and SIGTERM are ignored, they are the daemon's to act on.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import BinaryIO

import msgspec

from engine.inbound.evidence import Analysis, analyse
from engine.workerpipe import announce_ready, read_frame, write_frame

#: The answer to one message: the analysis, or why there is none (the parser raised).
Reply = tuple[Analysis | None, str | None]
#: Parsed once before READY: the first parse loads and compiles the patterns (~0.1 s of CPU),
#: which must not count against the first real message's budget.
WARM_UP = (
    b"From: MAILER-DAEMON@mx.example\r\nSubject: Undelivered\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
    b"--B\r\nContent-Type: text/plain\r\n\r\n550 5.1.1 user unknown\r\n"
    b"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
    b"Final-Recipient: rfc822; a@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
    b"--B--\r\n"
)


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """Answer frames from ``inp`` on ``out`` until EOF."""
    encode = msgspec.msgpack.Encoder().encode
    while True:
        to = read_frame(inp)
        raw = None if to is None else read_frame(inp)
        if to is None or raw is None:
            return
        envelope_to = to.decode("utf-8", "replace") or None
        reply: Reply
        try:
            reply = (analyse(raw, envelope_to), None)
        except Exception as exc:  # a parser bug: the daemon quarantines this one message
            reply = (None, f"{type(exc).__name__}: {exc}"[:500])
        write_frame(out, encode(reply))


def main() -> int:
    # Parsing hostile mail must not take CPU from the daemon's event loop when both want it
    # (where a sandbox forbids it, the worker runs at the daemon's priority).
    with contextlib.suppress(OSError):
        os.nice(5)
    try:
        analyse(WARM_UP, None)
    except Exception as exc:  # the first real message will say it again, and be quarantined
        sys.stderr.write(f"bounce parse worker: warm-up failed: {exc!r}\n")
    announce_ready()
    serve(sys.stdin.buffer, sys.stdout.buffer)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
