"""Byte-level cuts made before the MIME parse of an inbound message: ``message/*`` parts
renamed opaque, the attached original's body dropped, and a multipart whose declared boundary
never occurs repaired. Plain ``bytes`` scans: each is cheaper than what it spares the parser."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import Message

#: message/* parts are renamed to text/x-opaque-* before parsing, so the stdlib keeps them as
#: one text payload: it would otherwise parse the whole original message (its HTML, its
#: attachments) recursively, which is most of the parsing cost, and split delivery-status reports
#: into pseudo-messages. :func:`content_type` maps the names back.
OPAQUE_PREFIX = "text/x-opaque-"

_MESSAGE_SUBTYPES = (
    b"global-delivery-status",
    b"delivery-status",
    b"feedback-report",
    b"global-headers",
    b"disposition-notification",
    b"rfc822",
    b"global",
)
_ORIGINAL_SUBTYPES = (b"rfc822", b"global")
_CONTENT_TYPE_NAME = b"content-type:"
_MESSAGE_SLASH = b"message/"
_TOKEN_END = b" \t\r\n;"
_NEWLINE = ord("\n")
#: What ``bytes.strip()`` removes, less the newline (the field and its value share a line).
_FIELD_BLANKS = re.compile(rb"[ \t\r\x0b\x0c]*")
#: Original bodies shorter than this are left alone (not worth the copy).
_MIN_BODY_TO_DROP = 512


def make_opaque(raw: bytes) -> bytes:
    """Rename ``Content-Type: message/...`` fields to OPAQUE_PREFIX and drop the original's body.

    Plain ``bytes.find`` scans instead of a MULTILINE/IGNORECASE regex: those cost more than
    the MIME parse on bounces with long header blocks. The scan is for the field name, not for
    ``message/``: the text may hold any number of ``message/`` words, but :func:`load` has cut
    it to ``message.MAX_CONTENT_TYPE_FIELDS`` field names.
    """
    lowered = raw.lower()
    position = lowered.find(_CONTENT_TYPE_NAME)
    pieces: list[bytes] = []
    done = 0
    original_at = -1
    while position >= 0:
        slash = _message_slash_after(lowered, position)
        subtype = _subtype_at(lowered, slash) if slash >= 0 else None
        if subtype is not None:
            pieces.append(raw[done:slash])
            pieces.append(OPAQUE_PREFIX.encode())
            done = slash + len(_MESSAGE_SLASH)
            if original_at < 0 and subtype in _ORIGINAL_SUBTYPES:
                original_at = sum(map(len, pieces))
        position = lowered.find(_CONTENT_TYPE_NAME, position + len(_CONTENT_TYPE_NAME))
    if not pieces:
        return raw
    pieces.append(raw[done:])
    renamed = b"".join(pieces)
    return _drop_original_body(renamed, original_at) if original_at >= 0 else renamed


def _message_slash_after(lowered: bytes, position: int) -> int:
    """Where ``message/`` starts when the ``content-type:`` at ``position`` begins a line and
    is followed by blanks then ``message/`` (-1 otherwise)."""
    if position > 0 and lowered[position - 1] != _NEWLINE:
        return -1
    slash = _FIELD_BLANKS.match(lowered, position + len(_CONTENT_TYPE_NAME))
    start = slash.end() if slash else position + len(_CONTENT_TYPE_NAME)
    return start if lowered.startswith(_MESSAGE_SLASH, start) else -1


def _subtype_at(lowered: bytes, position: int) -> bytes | None:
    start = position + len(_MESSAGE_SLASH)
    for subtype in _MESSAGE_SUBTYPES:
        end = start + len(subtype)
        if lowered.startswith(subtype, start) and (
            end >= len(lowered) or lowered[end] in _TOKEN_END
        ):
            return subtype
    return None


def blank_line_end(raw: bytes, start: int = 0) -> int:
    """Index just past the first empty line at or after ``start`` (LF or CRLF), or -1."""
    ends = [i + 2 for i in (raw.find(b"\n\n", start),) if i >= 0]
    ends += [i + 3 for i in (raw.find(b"\n\r\n", start),) if i >= 0]
    return min(ends) if ends else -1


def _drop_original_body(raw: bytes, part_at: int) -> bytes:
    """Remove the body of the attached original message, up to its first ``--`` line.

    We only read the original's header block, but the parser would walk every line of its
    body. No MIME boundary is touched: boundaries are lines starting with ``--`` and the cut
    stops before the first such line, so the parse tree is unchanged.
    """
    part_headers_end = blank_line_end(raw, part_at)
    if part_headers_end < 0:
        return raw
    start = blank_line_end(raw, part_headers_end)
    if start < 0:
        return raw
    stop = raw.find(b"\n--", start)
    if stop < 0:
        stop = len(raw)
    if stop - start < _MIN_BODY_TO_DROP:
        return raw
    return raw[:start] + raw[stop:]


_HEADER_END = re.compile(rb"\r?\n\r?\n")
_DELIMITER_LINE = re.compile(rb"^--([^\s]{1,200}?)\s*$", re.MULTILINE)
_CONTENT_TYPE_FIELD = re.compile(
    rb"^content-type:.*(?:\r?\n[ \t].*)*", re.IGNORECASE | re.MULTILINE
)


def repair_boundary(raw: bytes, msg: Message) -> Message | None:
    """Re-parse a multipart whose declared boundary never occurs (a mangled Content-Type).

    The first delimiter-looking line of the body is taken as the boundary when it occurs again;
    the stdlib parser then does the MIME work as usual.
    """
    end = _HEADER_END.search(raw)
    if end is None:
        return None
    head, body = raw[: end.start()], raw[end.end() :]
    found = _DELIMITER_LINE.search(body)
    if found is None or body.count(b"--" + found.group(1)) < 2:
        return None
    boundary = found.group(1).decode("ascii", "replace").replace('"', "")
    report_type = msg.get_param("report-type")
    params = f'; report-type="{report_type}"' if isinstance(report_type, str) else ""
    field = f'Content-Type: {msg.get_content_type()}{params}; boundary="{boundary}"'
    head = _CONTENT_TYPE_FIELD.sub(b"", head)
    rebuilt = head + b"\n" + field.encode("ascii", "replace") + b"\n\n" + body
    return email.message_from_bytes(rebuilt, policy=email.policy.compat32)
