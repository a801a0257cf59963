"""Loading an inbound message safely with the stdlib ``email`` package, and reading its parts.

Bounces are often malformed: wrong or unknown charsets, broken base64, truncated multiparts,
headers that are megabytes long. Everything here degrades (replacement characters, empty text)
instead of raising, and caps what it reads so a pathological message costs little.

``policy=compat32`` is used on purpose: on our corpus it parses about eight times faster than
``policy.default`` (no header-registry objects), and we only need raw header strings.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email
import email.header
import email.message
import email.parser
import email.policy
import itertools
import quopri
import re
from collections.abc import Iterator
from typing import NamedTuple

from engine.inbound import mime
from engine.inbound.rawcuts import OPAQUE_PREFIX, blank_line_end, make_opaque, repair_boundary

Message = email.message.Message
COMPAT32 = email.policy.compat32

#: Only this many bytes of an inbound message are parsed: the notification, the delivery-status
#: report and the headers of the original message always come first.
MAX_PARSE_BYTES = 1 << 20
#: At most this many MIME parts are looked at (a report has 2-4; attacks have thousands).
MAX_PARTS = 64
#: A part's decoded text is cut to this many characters before any pattern runs on it.
MAX_TEXT_CHARS = 64 * 1024
#: MIME boundary lines beyond which the input is cut before parsing (cheap C-level count).
MAX_BOUNDARY_LINES = 400
#: Characters of one header value that RFC 2047 decoding looks at (the stdlib's decoder costs
#: ~0.6 µs a character, and a bounce reads about sixteen fields).
MAX_HEADER_DECODE_CHARS = 4 * 1024
#: Characters kept of one header field value (top level, MIME parts, the original's fields).
MAX_FIELD_CHARS = mime.MAX_FIELD_CHARS
#: ``Content-Type:`` fields beyond which the input is cut before parsing: each nesting level
#: needs one, and the stdlib parser (the fallback of :mod:`mime`) recurses once per level.
MAX_CONTENT_TYPE_FIELDS = 64

#: Lines (CRLF, LF or bare CR ended) parsed at most: the MIME parser takes a Python step per
#: line, and 1 MiB of empty lines is a million of them (a real bounce has a few thousand).
MAX_LINES = 64 * 1024
#: Field lines (not continuation lines) of one header block read at most: real ones have a
#: few dozen to a few hundred (Received, DKIM, ARC); each costs a dict entry.
MAX_HEADER_FIELDS = 1000

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOUNDARY_LINES = (b"\n--", b"\r--")
_CONTENT_TYPE_FIELD_NAME = (b"content-type:",)
_ENCODED_WORD = "=?"
_CONTAINER_TYPES = frozenset({"message/rfc822", "message/global"})
_HEADER_TYPES = frozenset({"text/rfc822-headers", "text/global-headers"})
_TEXT_HEADER_END = re.compile(r"\r?\n[ \t]*\r?\n")
_DECODABLE_TRANSFER_ENCODINGS = frozenset({"base64", "quoted-printable"})


def content_type(part: Message) -> str:
    """The part's real content type (undoing the opaque renaming done by :func:`load`)."""
    ctype = part.get_content_type()
    if ctype.startswith(OPAQUE_PREFIX):
        return "message/" + ctype[len(OPAQUE_PREFIX) :]
    return ctype


class Loaded(NamedTuple):
    """A parsed inbound message: its MIME tree, its top-level header fields, what was cut."""

    msg: Message
    headers: Headers
    defects: tuple[str, ...]
    #: ``str(msg.get_param("report-type") or "").lower()`` when the MIME parse already read the
    #: Content-Type parameters (None: ask :func:`report_type_of`).
    report_type: str | None = None


def load(raw: bytes) -> Loaded:
    """Parse ``raw`` into a compat32 Message (after the cheap cuts and renames described above)."""
    defects: list[str] = []
    if len(raw) > MAX_PARSE_BYTES:
        raw = raw[:MAX_PARSE_BYTES]
        defects.append("truncated: larger than the parse cap")
    if raw.count(b"\n") + raw.count(b"\r") - raw.count(b"\r\n") > MAX_LINES:
        cut = next(itertools.islice(_LINE_END.finditer(raw), MAX_LINES - 1, None)).end()
        raw = raw[:cut]
        defects.append("truncated: too many lines")
    # Keep the first boundaries only: a report's parts are all near the start. Bare CR ends
    # lines too (for the MIME parser), so "\r--" counts as well as "\n--".
    cut = _nth_start(raw, _BOUNDARY_LINES, MAX_BOUNDARY_LINES)
    if cut >= 0:
        raw = raw[:cut]
        defects.append("truncated: too many MIME parts")
    cut = _nth_start(raw.lower(), _CONTENT_TYPE_FIELD_NAME, MAX_CONTENT_TYPE_FIELDS)
    if cut >= 0:
        raw = raw[: max(raw.rfind(b"\n", 0, cut), raw.rfind(b"\r", 0, cut), 0)]
        defects.append("truncated: too many Content-Type fields")
    raw = make_opaque(raw)
    # The top-level fields are read here; the MIME parser only gets the MIME fields and the
    # body. Bounces carry long Received/DKIM/ARC blocks that it would otherwise walk line by
    # line into a Message (a fifth of the parse time on our corpus).
    head_end = blank_line_end(raw, 0)
    head, body = (raw[:head_end], raw[head_end:]) if head_end >= 0 else (raw, b"")
    fields, cut_fields = _read_fields(head.decode("ascii", "surrogateescape"))
    if any(len(value) >= MAX_FIELD_CHARS for value in fields.values()):
        defects.append("truncated: header field longer than the field cap")
    if cut_fields:
        defects.append("truncated: too many header fields")
    mime_head = "".join(f"{name}: {fields[key]}\n" for name, key in _MIME_FIELDS if key in fields)
    # What message_from_bytes would decode these bytes to (ASCII with surrogateescape).
    text = f"{mime_head}\n{body.decode('ascii', 'surrogateescape')}"
    parsed = mime.parse(text)
    kind: str | None = None
    if parsed is None:  # a shape mime.parse leaves to the stdlib
        msg = email.message_from_string(text, policy=COMPAT32)
    else:
        msg = parsed.msg
        if parsed.params is not None:
            kind = str(mime.param(parsed.params, "report-type") or "").lower()
    if msg.get_content_maintype() == "multipart" and not isinstance(payload_of(msg), list):
        repaired = repair_boundary(text.encode("ascii", "surrogateescape"), msg)
        if repaired is not None:
            msg = repaired
            kind = None
            defects.append("repaired: multipart boundary did not match the parts")
    return Loaded(msg, Headers(fields=fields), tuple(defects), kind)


def _nth_start(data: bytes, needles: tuple[bytes, ...], limit: int) -> int:
    """Where occurrence number ``limit`` (0-based: ``limit`` are kept before it) of any of
    ``needles`` starts, or -1 when there are no more than ``limit``."""
    if sum(data.count(needle) for needle in needles) <= limit:  # C-speed count: the usual case
        return -1
    # The next occurrence of each needle, advanced only when it is the one taken (a needle
    # that does not occur is searched for once, not once per occurrence of the others).
    upcoming = {needle: data.find(needle) for needle in needles}
    position = -1
    for _ in range(limit + 1):
        needle = min((n for n in upcoming if upcoming[n] >= 0), key=upcoming.__getitem__)
        position = upcoming[needle]
        upcoming[needle] = data.find(needle, position + 1)
    return position


def report_type_of(msg: Message) -> str:
    """The ``report-type`` parameter of the message's Content-Type, lower-cased ('' if none)."""
    return str(msg.get_param("report-type") or "").lower()


#: The top-level fields the MIME parser needs (the others are read by :func:`read_fields`).
_MIME_FIELDS = (
    ("Content-Type", "content-type"),
    ("Content-Transfer-Encoding", "content-transfer-encoding"),
    ("MIME-Version", "mime-version"),
)


def iter_parts(msg: Message, limit: int = MAX_PARTS) -> Iterator[tuple[Message, str, bool, object]]:
    """Depth-first walk yielding ``(part, content type, inside_original, payload)`` for at most
    ``limit`` parts (``payload`` is :func:`payload_of` the part, for :func:`part_text`).

    ``inside_original`` is true below an attached message/rfc822 that the stdlib did parse (a
    folded Content-Type escapes the opaque renaming): those parts belong to the mail we sent,
    whose text must never be mistaken for the bounce notification.
    """
    stack: list[tuple[Message, bool]] = [(msg, False)]
    seen = 0
    while stack and seen < limit:
        part, inside = stack.pop()
        seen += 1
        ctype = content_type(part)
        # Read once here and handed on: get_payload() re-checks the transfer encoding and
        # re-scans the text for 8-bit bytes on every call.
        payload = payload_of(part)
        yield part, ctype, inside, payload
        # Descend into multiparts and attached messages only: compat32 also splits
        # message/delivery-status into per-recipient blocks, which are fields, not parts.
        if isinstance(payload, list) and (
            ctype in _CONTAINER_TYPES or ctype.startswith("multipart/")
        ):
            child_inside = inside or ctype in _CONTAINER_TYPES
            for child in reversed(payload):
                if isinstance(child, email.message.Message):
                    stack.append((child, child_inside))


class Headers:
    """A message's header fields by lower-case name (first occurrence), read once.

    ``Message.get`` scans every field on each call; a bounce is asked a dozen questions.
    """

    __slots__ = ("_decoded", "_values")

    def __init__(self, msg: Message | None = None, fields: dict[str, str] | None = None) -> None:
        values: dict[str, str] = dict(fields) if fields else {}
        if msg is not None:
            for key, value in msg.raw_items():
                values.setdefault(key.lower(), str(value)[:MAX_FIELD_CHARS])
        self._values = values
        #: Values already decoded (RFC 2047 decoding costs ~0.6 µs a character).
        self._decoded: dict[str, str] = {}

    def get(self, name: str) -> str:
        """The decoded, whitespace-collapsed value of ``name``; '' when absent."""
        key = name.lower()
        known = self._decoded.get(key)
        if known is not None:
            return known
        value = self._values.get(key)
        if value is None:
            return ""
        if _ENCODED_WORD in value:
            value = decode_words(value)
        decoded = self._decoded[key] = " ".join(fix_surrogates(value).split())
        return decoded

    def has(self, name: str) -> bool:
        """Whether the field is present at all (even empty)."""
        return name.lower() in self._values


def header(msg: Message, name: str) -> str:
    """A header's value with RFC 2047 words decoded and whitespace collapsed; '' when absent."""
    value = msg.get(name)
    if value is None:
        return ""
    if isinstance(value, email.header.Header):
        # compat32 wraps 8-bit values in a Header that prints U+FFFD: read the raw bytes instead.
        value = _raw_header(msg, name) or ""
    text = str(value)
    if _ENCODED_WORD in text:
        text = decode_words(text)
    return " ".join(fix_surrogates(text).split())


def _raw_header(msg: Message, name: str) -> str | None:
    wanted = name.lower()
    for key, value in msg.raw_items():
        if key.lower() == wanted:
            return str(value)
    return None


def decode_words(text: str) -> str:
    """Decode RFC 2047 encoded words, tolerating unknown charsets and broken encodings.

    Only the first :data:`MAX_HEADER_DECODE_CHARS` are decoded: the stdlib's ``decode_header``
    is quadratic in the number of words (a 1 MB Subject of them took ~9 s).
    """
    text = text[:MAX_HEADER_DECODE_CHARS]
    try:
        chunks = email.header.decode_header(text)
    except Exception:  # the stdlib raises assorted errors on broken words; keep the raw text
        return text
    out: list[str] = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            out.append(chunk)
        else:
            out.append(decode_bytes(chunk, charset))
    return "".join(out)


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Bytes to text in ``charset``, falling back to UTF-8 then Latin-1; never raises."""
    name = _charset_name(charset)
    try:
        return data.decode(name)
    except (UnicodeError, LookupError):  # UnicodeError: punycode, "undefined" raise the base class
        pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _charset_name(charset: str | None) -> str:
    if not charset:
        return "utf-8"
    name = charset.strip().strip('"').lower()
    try:
        return codecs.lookup(name).name
    except (LookupError, ValueError):  # ValueError: a NUL in the name
        return "utf-8"


def fix_surrogates(text: str) -> str:
    """Undo compat32's surrogate-escaped 8-bit bytes: reinterpret them as UTF-8 (or Latin-1)."""
    if text.isascii():
        return text
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return decode_bytes(data, "utf-8")


def payload_of(part: Message) -> object:
    """``part.get_payload()``: child parts, or the text of a leaf; never raises.

    For 8-bit text the stdlib re-decodes the payload with the part's charset, which raises
    ValueError when the charset name holds a NUL; the raw bytes are read instead then.
    """
    try:
        payload: object = part.get_payload()
    except ValueError:
        data = part.get_payload(decode=True)
        return data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else ""
    return payload


def part_text(part: Message, payload: object) -> str:
    """The decoded text of a leaf part (transfer encoding and charset), capped in length.

    ``payload`` is :func:`payload_of` the part (as :func:`iter_parts` yields it).
    """
    if isinstance(payload, list):
        text = "\n\n".join(container_text(p) for p in payload if isinstance(p, Message))
        encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
        if encoding in _DECODABLE_TRANSFER_ENCODINGS:
            # An encoded message/* part was split into "fields" by compat32: decode the text.
            return _decode_transfer(text, encoding)
        return text[:MAX_TEXT_CHARS]
    try:
        data = part.get_payload(decode=True)
    except Exception:  # broken base64/quoted-printable: fall back to the undecoded text
        data = None
    if not isinstance(data, bytes):
        return fix_surrogates(str(payload))[:MAX_TEXT_CHARS]
    data = data[:MAX_TEXT_CHARS]
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    # The common case needs no charset lookup (get_param is slow); ISO-2022-JP/-KR/-CN are
    # 7-bit too but switch character sets with ESC sequences (Japanese carriers' notices).
    if data.isascii() and b"\x1b" not in data:
        return data.decode("ascii")
    charset = part.get_param("charset")
    return decode_bytes(data, charset if isinstance(charset, str) else None)


def _decode_transfer(text: str, encoding: str) -> str:
    try:
        if encoding == "base64":
            data = base64.b64decode("".join(text.split()) + "==", validate=False)
        else:
            data = quopri.decodestring(text.encode("ascii", "replace"))
    except (binascii.Error, ValueError):
        return text[:MAX_TEXT_CHARS]
    return decode_bytes(data[:MAX_TEXT_CHARS], "utf-8")


def container_text(msg: Message) -> str:
    """Header block (and body text, if any) of a message the parser split into sub-messages.

    compat32 parses ``message/delivery-status`` into one Message per field block and other
    ``message/*`` types into a single Message; this turns either back into field text.
    """
    lines = [f"{k}: {v}" for k, v in msg.raw_items()]
    text = fix_surrogates("\n".join(lines))
    if isinstance(payload_of(msg), str):
        # decode=True returns the raw bytes; plain get_payload() would turn 8-bit into U+FFFD.
        data = msg.get_payload(decode=True)
        body = decode_bytes(data[:MAX_TEXT_CHARS], "utf-8") if isinstance(data, bytes) else ""
        if body.strip():
            text = f"{text}\n\n{body}" if text else body
    return text


def original_headers(part: Message, ctype: str, payload: object) -> Headers | None:
    """The header fields of the original message in a message/rfc822 or rfc822-headers part
    (``payload`` is :func:`payload_of` the part)."""
    if ctype not in _CONTAINER_TYPES and ctype not in _HEADER_TYPES:
        return None
    if isinstance(payload, list):
        if payload and isinstance(payload[0], Message):
            return Headers(payload[0])
        return None
    text = part_text(part, payload).lstrip()
    # Only the header block is wanted (the body of the mail we sent is of no interest). Its
    # fields are read with the same RFC 5322 field reader as delivery-status blocks: building
    # a Message through the feed parser costs more than the rest of the bounce.
    end = _TEXT_HEADER_END.search(text)
    return Headers(fields=read_fields(text[: end.start()] if end else text))


def read_fields(block: str) -> dict[str, str]:
    """``{lower-case name: value}`` of one RFC 5322 field block (first occurrence wins;
    continuation lines unfolded with a space; values cut at :data:`MAX_FIELD_CHARS`; lines
    after the first :data:`MAX_HEADER_FIELDS` that are no continuation ignored)."""
    return _read_fields(block)[0]


def _read_fields(block: str) -> tuple[dict[str, str], bool]:
    """:func:`read_fields`, and whether lines were left unread (too many fields)."""
    # Pieces are collected and joined once: appending each continuation line to the value
    # copies it every time (a 1 MB folded header took seconds).
    pieces: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    last: str | None = None
    field_lines = 0
    for line in block.split("\n"):
        if line[:1] in (" ", "\t"):
            if last is not None and sizes[last] < MAX_FIELD_CHARS:
                piece = line.strip()
                pieces[last].append(piece)
                sizes[last] += len(piece) + 1
            continue
        field_lines += 1
        if field_lines > MAX_HEADER_FIELDS:
            return _joined(pieces), True
        name, colon, value = line.partition(":")
        name = name.rstrip()
        if not colon or not name or " " in name or "\t" in name:
            last = None
            continue
        key = name.lower()
        if key in pieces:
            last = None
            continue
        first = value.strip()
        pieces[key] = [first]
        sizes[key] = len(first)
        last = key
    return _joined(pieces), False


def _joined(pieces: dict[str, list[str]]) -> dict[str, str]:
    return {key: " ".join(values)[:MAX_FIELD_CHARS] for key, values in pieces.items()}
