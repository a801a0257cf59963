"""A minimal, fast SMTP sink: accepts everything, counts messages and Message-IDs.

Stands in for a MailU relay node in ``engine demo`` and the benchmarks (it is not a relay: it
delivers nothing). Supports ESMTP PIPELINING so a pipelining client pays one round trip.
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

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.message_ids.values() if n > 1)


class SmtpSink:
    """``async with SmtpSink() as sink:`` serves on 127.0.0.1:``sink.port``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, delay_s: float = 0.0) -> None:
        self.host = host
        self.port = port
        self.delay_s = delay_s
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
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    write(
                        b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
                        b"250 SIZE 52428800\r\n"
                    )
                elif verb == b"DATA":
                    write(b"354 go ahead\r\n")
                    await self._data(reader)
                    if self.delay_s:
                        await asyncio.sleep(self.delay_s)
                    write(b"250 2.0.0 Ok: queued\r\n")
                elif verb == b"QUIT":
                    write(b"221 2.0.0 Bye\r\n")
                    break
                elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                    write(b"250 2.0.0 Ok\r\n")
                else:
                    write(b"502 5.5.2 Command not recognised\r\n")
                if not reader._buffer:  # type: ignore[attr-defined]  # flush once per pipelined group
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _data(self, reader: asyncio.StreamReader) -> None:
        data = await reader.readuntil(b"\r\n.\r\n")
        stats = self.stats
        stats.messages += 1
        stats.bytes += len(data)
        now = time.monotonic()
        stats.first_at = stats.first_at or now
        stats.last_at = now
        head = data[: data.find(b"\r\n\r\n") + 2]
        m = _MID.search(head)
        if m:
            stats.message_ids[m.group(1)] += 1
