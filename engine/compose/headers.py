"""Header-level rules shared by validation and composition: names, values, who owns what.

Also the two byte-level helpers the raw path needs: normalising line endings to CRLF and splitting
a header block into fields (keeping folded continuation lines with their field).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from email.utils import format_datetime

from engine.errors import ComposeError

#: RFC 5322 §2.2: a field name is printable US-ASCII except colon, at least one character.
FIELD_NAME = re.compile(r"[!-9;-~]+")
#: CR, LF and NUL end or corrupt a header line: any of them in a value is header injection.
INJECTION = re.compile(r"[\r\n\x00]")
#: Other C0 controls and DEL have no business in a header value (TAB is folding white space).
OTHER_CONTROL = re.compile(r"[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]")

#: RFC 5322 §2.1.1: a line, CRLF excluded, MUST NOT exceed 998 characters.
MAX_LINE = 998

#: Headers the engine writes itself; a structured job may not set them in ``headers``
#: (lower-case name -> what to do instead, shown to the operator).
ENGINE_OWNED: dict[str, str] = {
    "message-id": "the engine sets a Message-ID fixed per job (send a raw message to choose it)",
    "date": "the engine sets Date when the message is sent (send a raw message to choose it)",
    "to": "use the job's 'to' field",
    "from": "use the job's 'from' field",
    "subject": "use the job's 'subject' field",
    "mime-version": "the engine builds the MIME structure",
    "content-type": "the engine builds the MIME structure",
    "content-transfer-encoding": "the engine builds the MIME structure",
    "content-disposition": "the engine builds the MIME structure",
    "content-id": "the engine builds the MIME structure",
    "list-unsubscribe": "use the job's 'list_unsubscribe' field",
    "list-unsubscribe-post": "use the job's 'list_unsubscribe' field (an https URL adds it)",
    "return-path": "the engine sets the VERP bounce address as the envelope sender",
    "dkim-signature": "the engine signs with the sender domain's DKIM key",
}
#: Headers no submitted message may carry (structured or raw): trace and transport fields.
#: Raw messages have Bcc and Return-Path dropped at composition instead of being refused.
NEVER_SUBMITTED: dict[str, str] = {
    "bcc": "Bcc would reveal hidden recipients; send one job per recipient instead",
    "received": "trace fields are added by the MTAs that handle the message",
    "authentication-results": "added by the receiving MTA",
    "arc-seal": "ARC headers are added by intermediaries",
    "arc-message-signature": "ARC headers are added by intermediaries",
    "arc-authentication-results": "ARC headers are added by intermediaries",
}
#: Dropped from raw messages: Bcc (must never reach recipients) and Return-Path (written by the
#: final MTA from the envelope; the engine's envelope sender is the VERP address).
RAW_DROPPED = frozenset({"bcc", "return-path"})
#: Trace and authentication fields a raw message may not carry (``[security]
#: raw_trace_headers``: refused at enqueue, or stripped): they claim a path the message never
#: took or a verdict no receiver gave, and a kept DKIM-Signature of another domain is a replay.
#: ``ARC-*`` (any name with that prefix) is added by :func:`trace_field`. ``X-Original-*`` is
#: not here: forwarders and list software set those legitimately and receivers trust none.
RAW_TRACE: dict[str, str] = {
    "received": "trace fields are added by the MTAs that handle the message",
    "received-spf": "added by the receiving MTA",
    "return-path": "written by the final MTA from the envelope",
    "authentication-results": "added by the receiving MTA",
    "dkim-signature": "the engine signs with the sender domain's DKIM key",
}


def trace_field(name: str) -> str | None:
    """Why the (lower-case) field ``name`` may not be submitted in a raw message, else None."""
    if name.startswith("arc-"):
        return "ARC headers are added by intermediaries"
    return RAW_TRACE.get(name)


def check_field_name(name: str) -> str | None:
    """Return why ``name`` is not a valid RFC 5322 field name, or None when it is."""
    if not name:
        return "header name is empty"
    if INJECTION.search(name):
        return f"header name {name!r} contains CR/LF/NUL (header injection)"
    if not FIELD_NAME.fullmatch(name):
        return (
            f"header name {name!r} is not an RFC 5322 field name "
            "(printable ASCII, no spaces or colons)"
        )
    if len(name) > 76:
        return f"header name {name!r} is longer than 76 characters"
    return None


def check_field_value(what: str, value: str) -> str | None:
    """Return why ``value`` cannot be a header value (``what`` names it), or None."""
    if INJECTION.search(value):
        return f"{what} contains CR/LF/NUL (header injection)"
    if OTHER_CONTROL.search(value):
        return f"{what} contains a control character"
    return None


def to_crlf(data: bytes) -> bytes:
    """Normalise CRLF, bare LF and bare CR line endings to CRLF (SMTP wire form, RFC 5321 §2.3.8).

    Bare CR/LF on the wire is how SMTP smuggling works; the engine never emits either.
    """
    if b"\r" not in data:
        return data.replace(b"\n", b"\r\n")
    return re.sub(rb"\r\n|\r|\n", b"\r\n", data)


def split_header_block(message: bytes) -> tuple[list[bytes], bytes]:
    """Split a CRLF message into its header fields (each with its folded lines and final CRLF)
    and the body (what follows the empty line; ``b""`` when there is none).

    Raises :class:`ComposeError` when a header line is neither ``Name: value`` nor a continuation.
    """
    end = message.find(b"\r\n\r\n")
    if message.startswith(b"\r\n"):
        head, body = b"", message[2:]
    elif end < 0:
        head, body = message, b""
    else:
        head, body = message[: end + 2], message[end + 4 :]
    fields: list[bytes] = []
    for line in head.split(b"\r\n")[:-1] if head.endswith(b"\r\n") else head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise ComposeError("raw message starts with a continuation line, not a header")
            fields[-1] += line + b"\r\n"
            continue
        colon = line.find(b":")
        # rstrip: RFC 5322 §4.5 obsolete syntax allows white space before the colon.
        name = line[:colon].rstrip(b" \t") if colon > 0 else b""
        if not name or not FIELD_NAME.fullmatch(name.decode("latin-1")):
            shown = line[:60].decode("utf-8", "replace")
            raise ComposeError(f"raw message has a malformed header line {shown!r}")
        fields.append(line + b"\r\n")
    return fields, body


def field_name(field: bytes) -> str:
    """Lower-case name of one header field as returned by :func:`split_header_block`."""
    return field[: field.find(b":")].decode("ascii").strip().lower()


def fold(line: str, soft: int = 78) -> str:
    """Fold one ``Name: value`` line at spaces (RFC 5322 §2.2.3) to keep lines near ``soft``.

    Nothing is encoded or changed: unfolding gives back ``line`` exactly, which matters for
    tokens machines read (URLs, tracking ids). A run of over 998 characters without a space
    cannot be made legal and raises :class:`ComposeError`.
    """
    if len(line) <= soft:
        return line
    words = line.split(" ")
    # Never break right after "Name:" or before an empty word (a line of only white space is
    # not allowed), so the first line always holds the name and the value's first word.
    lines: list[str] = []
    current = " ".join(words[:2])
    for word in words[2:]:
        if word and len(current) + 1 + len(word) > soft:
            lines.append(current)
            current = " " + word
        else:
            current += " " + word
    lines.append(current)
    if any(len(part) > MAX_LINE for part in lines):
        raise ComposeError(
            f"header {line[:40]!r}... has a run of over {MAX_LINE} characters without a space"
        )
    return "\r\n".join(lines)


_date_cache: tuple[int, str] = (-1, "")


def format_date(timestamp: float | None = None) -> str:
    """RFC 5322 date (``Tue, 03 Mar 2026 10:00:00 +0000``) for ``timestamp`` (default: now).

    Cached per second because the hot path asks for "now" thousands of times a second.
    """
    global _date_cache
    if timestamp is None:
        timestamp = time.time()
    second = int(timestamp)
    if _date_cache[0] != second:
        # An aware UTC datetime gives "+0000"; a naive one would give "-0000", which RFC 5322
        # §3.3 reserves for "zone unknown".
        _date_cache = (second, format_datetime(datetime.fromtimestamp(second, UTC)))
    return _date_cache[1]


__all__ = [
    "ENGINE_OWNED",
    "MAX_LINE",
    "NEVER_SUBMITTED",
    "RAW_DROPPED",
    "RAW_TRACE",
    "check_field_name",
    "check_field_value",
    "field_name",
    "fold",
    "format_date",
    "split_header_block",
    "to_crlf",
    "trace_field",
]
