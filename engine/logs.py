"""Structured logging: one JSON object per line on stdout, for journald (STYLE: no print()).

When stdout is the journal (systemd sets ``JOURNAL_STREAM`` to its device:inode), every line
starts with the sd-daemon priority prefix ``<N>`` (syslog levels: ``<3>`` error, ``<4>``
warning, ``<6>`` info, ``<7>`` debug), which journald strips and stores as ``PRIORITY``, so
``journalctl -p warning`` selects warnings and errors. Anywhere else the lines stay bare.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, TextIO

import orjson

from engine.redaction import redact

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


class JsonFormatter(logging.Formatter):
    """Render a record and its ``extra=`` fields as one JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        # Every string is redacted: an exception or a DSN quoted in a field must not carry a
        # password into the journal (engine/redaction.py).
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                doc[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            doc["exc"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    """The plain-text format, redacted like the JSON one."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def syslog_priority(levelno: int) -> int:
    """The syslog priority (RFC 5424 severity) of a :mod:`logging` level number."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class JournalPrefix(logging.Formatter):
    """Prefix every line another formatter renders with ``<N>``, the record's syslog priority.
    Each line: journald reads a multi-line text record (a traceback) as several entries."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self.inner.format(record).split("\n"))


def is_journal(stream: TextIO) -> bool:
    """True when ``stream`` is the journal's stream socket: ``JOURNAL_STREAM`` (set by systemd
    as ``device:inode``) names the very file behind it, not one a child inherited."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def setup(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Configure the root logger once for the process (on stdout unless ``stream`` is given)."""
    out = sys.stdout if stream is None else stream
    handler = logging.StreamHandler(out)
    formatter: logging.Formatter
    if fmt == "json":
        formatter = JsonFormatter()
    else:
        formatter = TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    handler.setFormatter(JournalPrefix(formatter) if is_journal(out) else formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
