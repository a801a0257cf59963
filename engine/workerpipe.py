"""The pipe protocol between the daemon and its worker processes (DKIM signers, bounce parsers).

A worker is ``python -m <module>`` with its stdin and stdout as pipes. Every message either way is
a frame: a big-endian u32 length, then that many bytes. The worker ignores SIGINT and SIGTERM
(stopping is the daemon's decision: the drain must not kill a worker mid-answer), says
:data:`READY` (an empty frame) once its imports are done, and ends at EOF on its stdin, which is
also what happens when the daemon dies.
"""

from __future__ import annotations

import signal
import sys
from typing import BinaryIO

#: Written once at start, when the signals are ignored and the imports done: an empty frame.
READY = b"\0\0\0\0"


def frame(body: bytes) -> bytes:
    """``body`` with its length in front."""
    return len(body).to_bytes(4, "big") + body


def read_frame(inp: BinaryIO) -> bytes | None:
    """The next frame's body, or None at EOF (or a frame cut short: the writer is gone)."""
    head = inp.read(4)
    if len(head) < 4:
        return None
    size = int.from_bytes(head, "big")
    body = inp.read(size)
    return body if len(body) == size else None


def write_frame(out: BinaryIO, body: bytes) -> None:
    """Send one frame at once (the daemon waits for it)."""
    out.write(frame(body))
    out.flush()


def announce_ready() -> None:
    """In the worker: leave SIGINT/SIGTERM to the daemon, then say :data:`READY`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.stdout.buffer.write(READY)
    sys.stdout.buffer.flush()
