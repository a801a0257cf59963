"""The SMTP DATA phase read in chunks (sans-IO): the same result as aiosmtpd's, without a Python
loop per line.

aiosmtpd reads DATA one line at a time and loops over every line again to undo dot-stuffing: a
10 MiB message is ~130,000 lines, and a whole socket read is handled without giving the event
loop back (bench/README.md has the stall it measured). Here each chunk costs a few C-level bytes
operations (find, split, replace) and the caller awaits between chunks.

Semantics kept from aiosmtpd 1.4 (``SMTP.smtp_DATA``): lines end with CRLF only (a bare CR or LF
is part of a line); a line longer than ``line_limit`` bytes with its CRLF gives ``500 Line too
long``; more than ``size_limit`` bytes of lines gives ``552``; either way the data is read (and
dropped) up to the end marker before the reply; a leading dot is removed from every line.
"""

from __future__ import annotations

import msgspec

TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"
TOO_MUCH = "552 Error: Too much mail data"
_END = b"\r\n.\r\n"


class DataResult(msgspec.Struct, frozen=True):
    """The message (dot-stuffing undone), or the error reply; and bytes read past the end."""

    body: bytes | None
    error: str | None
    leftover: bytes


class DataReader:
    """Feed it what the socket gives after ``354``; it says when the end marker came."""

    def __init__(self, size_limit: int | None, line_limit: int = 1001) -> None:
        self.size_limit = size_limit
        self.max_line = line_limit - 2  # without its CRLF
        # A CRLF in front, so that a lone "." on the first line is found like any other.
        self._buf = bytearray(b"\r\n")
        self._checked = 2  # lines before this offset are checked for length
        self._error: str | None = None

    def feed(self, chunk: bytes) -> DataResult | None:
        """Take ``chunk``; the result once the end marker was seen, else None."""
        buf = self._buf
        start = max(0, len(buf) - 4)
        buf += chunk
        end = buf.find(_END, start)
        stop = len(buf) if end < 0 else end + 2  # through the last line's CRLF
        if self._error is None:
            self._check(stop, final=end >= 0)
        if end < 0:
            if self._error is not None and len(buf) > 4:
                del buf[:-4]  # keep enough to see an end marker split over two chunks
            return None
        leftover = bytes(buf[end + 5 :])
        if self._error is not None:
            return DataResult(None, self._error, leftover)
        if buf.find(b"\r\n.", 0, stop) < 0:  # nothing dot-stuffed: one copy
            with memoryview(buf) as view:
                body = bytes(view[2:stop])
        else:
            body = bytes(buf[:stop].replace(b"\r\n.", b"\r\n"))[2:]
        return DataResult(body, None, leftover)

    def _check(self, stop: int, *, final: bool) -> None:
        """Refuse (the first error wins) more than ``size_limit`` bytes or an overlong line."""
        buf = self._buf
        # Like aiosmtpd, count whole lines only: before the end marker is seen, a partial last
        # line may be the start of it (".\r"); its bytes count once its CRLF arrives.
        counted = stop - 2 if final else buf.rfind(b"\r\n", 0, stop)
        if self.size_limit is not None and counted > self.size_limit:
            self._error = TOO_MUCH
            return
        last = buf.rfind(b"\r\n", self._checked, stop)
        if last > self._checked:
            longest = max(map(len, buf[self._checked : last].split(b"\r\n")))
            if longest > self.max_line:
                self._error = TOO_LONG
                return
        if last >= self._checked:
            self._checked = last + 2
        if not final:
            tail = len(buf) - self._checked - (1 if buf.endswith(b"\r") else 0)
            if tail > self.max_line:
                self._error = TOO_LONG
