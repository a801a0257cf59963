"""A minimal, fast SMTP sink: accepts everything, counts messages and Message-IDs.

Stands in for a MailU relay node in ``engine demo`` and the benchmarks (it is not a relay: it
delivers nothing). Supports ESMTP PIPELINING so a pipelining client pays one round trip, and
CHUNKING (RFC 3030 ``BDAT``) as Postfix offers it, unless made with ``chunking=False``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter

_MID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)


class SinkStats:
    """What the sink received; ``message_ids`` counts each Message-ID (duplicates > 1)."""

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0
        self.message_ids: Counter[bytes] = Counter()
        self.first_at: float | None = None
        self.last_at: float | None = None
        # When the last Message-ID not seen before arrived: a rate counted from it ignores
        # duplicates (time.monotonic(), comparable across processes on one host).
        self.last_unique_at: float | None = None

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.message_ids.values() if n > 1)


class _Transaction:
    """What BDAT needs and DATA does not (a pipelining client ends a DATA with a lone "." when
    every recipient was refused): recipients accepted so far, chunks received so far."""

    __slots__ = ("accepted", "chunks")

    def __init__(self) -> None:
        self.accepted = 0
        self.chunks: list[bytes] = []

    def reset(self) -> None:
        self.accepted = 0
        self.chunks.clear()


class SmtpSink:
    """``async with SmtpSink() as sink:`` serves on 127.0.0.1:``sink.port``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        delay_s: float = 0.0,
        rcpt_rules: dict[bytes, bytes] | None = None,
        keep: int = 0,
        chunking: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.delay_s = delay_s
        # RCPT local-part prefix -> full reply line, e.g. b"bounce" -> b"550 5.1.1 No such user"
        self.rcpt_rules = rcpt_rules or {}
        self.keep = keep  # how many received messages to keep (for inspection)
        self.kept: list[bytes] = []
        self.ehlo = (
            b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
            + (b"250-CHUNKING\r\n" if chunking else b"")
            + b"250 SIZE 52428800\r\n"
        )
        self.stats = SinkStats()
        self._server: asyncio.Server | None = None

    async def start(self) -> SmtpSink:
        self._server = await asyncio.start_server(self._client, self.host, self.port, backlog=512)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> SmtpSink:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        write = writer.write
        write(b"220 sink ESMTP ready\r\n")
        txn = _Transaction()
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                verb = line[:4].upper()
                if verb == b"BDAT":
                    write(await self._bdat(reader, line, txn))
                elif verb in (b"EHLO", b"HELO"):
                    write(self.ehlo)
                elif verb == b"DATA":
                    write(b"354 go ahead\r\n")
                    write(await self._data(reader))
                elif verb == b"QUIT":
                    write(b"221 2.0.0 Bye\r\n")
                    break
                elif verb == b"RCPT":
                    reply = self._rcpt(line) if self.rcpt_rules else b"250 2.1.5 Ok\r\n"
                    txn.accepted += reply.startswith(b"2")
                    write(reply)
                elif verb in (b"MAIL", b"RSET", b"NOOP"):
                    if verb != b"NOOP":
                        txn.reset()
                    write(b"250 2.0.0 Ok\r\n")
                else:
                    write(b"502 5.5.2 Command not recognised\r\n")
                if not reader._buffer:  # type: ignore[attr-defined]  # flush once per pipelined group
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _bdat(self, reader: asyncio.StreamReader, line: bytes, txn: _Transaction) -> bytes:
        """Read one chunk (RFC 3030: always, even when the command fails); the reply."""
        size, last = _bdat_args(line)
        if size < 0:
            return b"501 5.5.4 Syntax: BDAT size [LAST]\r\n"
        chunk = await reader.readexactly(size)
        if not txn.accepted:
            txn.reset()
            return b"554 5.5.1 Error: no valid recipients\r\n"
        txn.chunks.append(chunk)
        if not last:
            return b"250 2.0.0 %d octets received\r\n" % size
        self._received(b"".join(txn.chunks))
        txn.reset()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return b"250 2.0.0 Ok: queued\r\n"

    def _rcpt(self, line: bytes) -> bytes:
        start = line.find(b"<") + 1
        local = line[start:].split(b"@", 1)[0].lower()
        for prefix, reply in self.rcpt_rules.items():
            if local.startswith(prefix):
                return reply + b"\r\n"
        return b"250 2.1.5 Ok\r\n"

    async def _data(self, reader: asyncio.StreamReader) -> bytes:
        """Read a DATA payload up to its terminator; the final reply."""
        # Line-wise end detection: an empty message is a lone ".\r\n" right after the 354
        # (a pipelining client sends it when every recipient was refused, RFC 2920 §3.1).
        data = await reader.readuntil(b"\n")
        while data != b".\r\n" and not data.endswith(b"\r\n.\r\n"):
            data += await reader.readuntil(b".\r\n")
        if data != b".\r\n":  # a lone "." delivers nothing (no accepted recipient)
            self._received(data[: -len(b".\r\n")])
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return b"250 2.0.0 Ok: queued\r\n"

    def _received(self, data: bytes) -> None:
        """Count one delivered message (``data``: without the DATA terminator)."""
        stats = self.stats
        stats.messages += 1
        stats.bytes += len(data)
        if len(self.kept) < self.keep:
            self.kept.append(data)
        now = time.monotonic()
        stats.first_at = stats.first_at or now
        stats.last_at = now
        head = data[: data.find(b"\r\n\r\n") + 2]
        m = _MID.search(head)
        if m:
            ids = stats.message_ids
            mid = m.group(1)
            if mid not in ids:
                stats.last_unique_at = now
            ids[mid] += 1


def _bdat_args(line: bytes) -> tuple[int, bool]:
    """``BDAT <size> [LAST]``: (size, last); size -1 when the line is malformed."""
    args = line.split()
    if len(args) not in (2, 3) or not args[1].isdigit():
        return -1, False
    return int(args[1]), len(args) == 3 and args[2].upper() == b"LAST"


def main(argv: list[str] | None = None) -> int:
    """``python -m engine.sink [--port N] [--stats FILE]``: run a sink until SIGTERM.

    Prints the port on stdout once listening; on SIGTERM/SIGINT writes its stats as JSON to
    ``--stats`` (messages, bytes, duplicates, unique Message-IDs) and exits.
    """
    import argparse
    import json
    import signal
    import sys

    import uvloop

    parser = argparse.ArgumentParser(prog="python -m engine.sink")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stats", help="write JSON stats here on exit")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each 250")
    parser.add_argument("--no-chunking", action="store_true", help="do not offer CHUNKING/BDAT")
    args = parser.parse_args(argv)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with SmtpSink(
            port=args.port, delay_s=args.delay, chunking=not args.no_chunking
        ) as sink:
            sys.stdout.write(f"{sink.port}\n")
            sys.stdout.flush()
            await stop.wait()
            s = sink.stats
            doc = {
                "messages": s.messages,
                "bytes": s.bytes,
                "unique_message_ids": len(s.message_ids),
                "duplicates": s.duplicates,
                "first_at": s.first_at,
                "last_at": s.last_at,
                "last_unique_at": s.last_unique_at,
            }
            if args.stats:
                with open(args.stats, "w") as fh:
                    json.dump(doc, fh)

    uvloop.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
