"""DKIM relaxed canonicalisation (RFC 6376 §3.4), sans-IO, byte-for-byte as dkimpy does it.

dkimpy is the reference: what we hash must be exactly what ``dkim.verify`` hashes. Its own
functions are used where they are cheap (``strip_trailing_lines``, ``correct_empty_body``,
``RE_BTAG``, ``Relaxed`` for a received DKIM-Signature field). Where its per-line regexes cost
more than a third of an RSA signature (header parsing, header selection, relaxed header and body
forms), this module has equivalent fast versions, and the property tests
(tests/unit/test_dkim_properties.py) check them against dkimpy's functions on wild input.

The work is split so that the body (the expensive, shared part of a campaign) is canonicalised
and hashed once, while each recipient's headers are parsed on their own.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Sequence

import dkim
from dkim.canonicalization import (
    Relaxed,
    correct_empty_body,
    strip_trailing_lines,
)

from engine.errors import DkimMessageError

Header = tuple[bytes, bytes]
"""A raw header field as dkimpy parses it: (name, value incl. folding and trailing CRLF)."""

#: Header fields we sign when present, in h= order (DESIGN §5; Gmail/Yahoo bulk-sender rules).
SIGNED_HEADERS: tuple[bytes, ...] = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"mime-version",
    b"content-type",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"feedback-id",
)
_SIGNED_SET = frozenset(SIGNED_HEADERS)

_WSP_TO_COMPRESS = re.compile(rb"[\t ]{2,}|\t")
_FIELD_NAME_BYTES = bytes(range(0x21, 0x7F))  # RFC 5322 ftext plus ':' (as dkimpy's regex)
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


def split_message(message: bytes) -> tuple[bytes, int]:
    """Split at the first empty line: ``(header block without its last EOL, body offset)``.

    Line endings may be LF or CRLF (or mixed), exactly as ``dkim.rfc822_parse`` accepts them.
    """
    if message.startswith(b"\n"):
        return b"", 1
    if message.startswith(b"\r\n"):
        return b"", 2
    m = _BLANK_LINE.search(message)
    if m is None:
        # Headers only; dkimpy treats the body as empty.
        return message, len(message)
    return message[: m.start()], m.end()


def parse_headers(block: bytes) -> list[Header]:
    """Parse a header block as ``dkim.rfc822_parse`` does, refusing ambiguous headers.

    A bare CR or a NUL inside a header is where header-injection tricks live: dkimpy hashes it
    as part of the value, but some MTAs treat a bare CR as a line break, so the signed header
    and the header a receiver displays would differ. We refuse to sign such a message.

    Same result as dkimpy's parser (the property tests compare them on wild input) for the
    blocks we accept, without its per-line regex: once bare CRs are refused, ``\r?\n`` is
    plain CRLF/LF, and a field name is the bytes before the first colon, all in 0x21–0x7E.
    """
    if b"\0" in block:
        raise DkimMessageError("message header contains a NUL byte; refusing to sign it")
    lf = block.replace(b"\r\n", b"\n")
    if b"\r" in lf:
        raise DkimMessageError(
            "message header contains a bare CR (not followed by LF); refusing to sign it",
            hint="headers must be folded with CRLF or LF followed by a space or tab",
        )
    if block[:1] in (b" ", b"\t"):
        raise DkimMessageError("message starts with a continuation line instead of a header")
    headers: list[list[bytes]] = []
    for line in lf.split(b"\n"):
        if not line:
            break  # only a headers-only message ending in EOL gets here: end of header
        if line[:1] in (b" ", b"\t"):
            headers[-1][1] += line + b"\r\n"
            continue
        colon = line.find(b":")
        if colon > 0 and not line[:colon].translate(None, _FIELD_NAME_BYTES):
            headers.append([line[:colon], line[colon + 1 :] + b"\r\n"])
        elif not line.startswith(b"From "):  # an mbox separator line, skipped as dkimpy does
            shown = line[:60].decode("ascii", "replace")
            raise DkimMessageError(f"message header is malformed: not a header field: {shown!r}")
    return [(name, value) for name, value in headers]


def _strip_trailing_wsp(body: bytes) -> bytes:
    """dkimpy's ``strip_trailing_whitespace`` (``[\\t ]+\\r\\n`` -> CRLF), line by line.

    Python's ``re`` tries that pattern at every space of the body; rstrip per line is the same
    result several times faster.
    """
    lines = body.split(b"\r\n")
    last = lines.pop()  # not followed by CRLF, so its trailing blanks stay
    lines = [line.rstrip(b" \t") for line in lines]
    lines.append(last)
    return b"\r\n".join(lines)


def canonical_body(body: bytes) -> bytes:
    """Relaxed body canonical form of ``body`` (the part after the empty line; LF or CRLF).

    Byte-identical to dkimpy's ``Relaxed.canonicalize_body`` after its CRLF normalisation (the
    property tests check it), but each pass runs only when the body holds something it would
    change, and without regexes where a bytes method does the same: dkimpy's regex passes over
    a typical body cost a sizeable share of an OpenSSL RSA-2048 signature.
    """
    if body.count(b"\n") != body.count(b"\r\n"):
        # Same as dkimpy's re.split(b"\r?\n") + CRLF join: every LF, paired or bare, -> CRLF.
        body = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if b" \r\n" in body or b"\t\r\n" in body:
        body = _strip_trailing_wsp(body)
    if b"\t" in body or b"  " in body:
        # Only runs that change: a lone space already is its own compressed form.
        body = _WSP_TO_COMPRESS.sub(b" ", body)
    result: bytes = correct_empty_body(strip_trailing_lines(body))
    return result


def body_hash(body: bytes) -> bytes:
    """The ``bh=`` value for ``body``: base64 of SHA-256 over its relaxed canonical form.

    ``body`` is the message body only (everything after the empty line ending the header); LF
    and CRLF line endings give the same result. Both ``rsa-sha256`` and ``ed25519-sha256`` use
    SHA-256, so one value serves every key of a dual signature. Compute it once per distinct
    body (a campaign's shared body) and pass it to :func:`engine.dkim.sign.sign`.
    """
    return base64.b64encode(hashlib.sha256(canonical_body(body)).digest())


def message_body_hash(message: bytes) -> bytes:
    """:func:`body_hash` of the body of a whole message."""
    _, offset = split_message(message)
    return body_hash(message[offset:])


def signed_header_names(headers: Iterable[Header]) -> tuple[bytes, ...]:
    """The h= list: each wanted field once per occurrence, then From once more (over-signing).

    Signing a name once more than it occurs means a From added later (by a forwarder or an
    attacker) breaks the signature instead of being shown to the reader unsigned.
    """
    counts = dict.fromkeys(SIGNED_HEADERS, 0)
    for name, _ in headers:
        lname = name.lower()
        if lname in _SIGNED_SET:
            counts[lname] += 1
    if counts[b"from"] != 1:
        raise DkimMessageError(
            f"message has {counts[b'from']} From header fields; exactly one is required to sign"
        )
    names: list[bytes] = []
    for name in SIGNED_HEADERS:
        names.extend([name] * counts[name])
    names.append(b"from")
    return tuple(names)


def _relaxed_field(name: bytes, value: bytes) -> bytes:
    """``name:value`` in relaxed form, as ``Relaxed.canonicalize_headers`` renders it.

    Values from :func:`parse_headers` hold line breaks only as CRLF, so unfolding is a replace;
    compression runs only when there is a tab or a double space to compress.
    """
    value = value.replace(b"\r\n", b"")
    if b"\t" in value or b"  " in value:
        value = _WSP_TO_COMPRESS.sub(b" ", value)
    return name.lower().rstrip() + b":" + value.strip() + b"\r\n"


def select_headers(headers: Sequence[Header], names: Sequence[bytes]) -> list[Header]:
    """``dkim.select_headers``: per h= entry, the next instance of that field from the bottom."""
    positions: dict[bytes, list[int]] = {}
    for i, (name, _) in enumerate(headers):
        positions.setdefault(name.lower(), []).append(i)
    selected: list[Header] = []
    for name in names:
        stack = positions.get(name)
        if stack:
            selected.append(headers[stack.pop()])
    return selected


def canonical_signed_headers(headers: Sequence[Header], names: Sequence[bytes]) -> bytes:
    """The hashed header data for the fields named in h= (without the DKIM-Signature itself)."""
    return b"".join(_relaxed_field(n, v) for n, v in select_headers(headers, names))


def canonical_unsigned_field(name: bytes, value: bytes) -> bytes:
    """Hashed form of a DKIM-Signature we are building (its b= still empty): the fast path.

    Equal to :func:`canonical_signature_header` when b= is empty (nothing for RE_BTAG to strip)
    and the value holds no bare CR or LF — always true of the fields :mod:`engine.dkim.sign`
    renders.
    """
    return _relaxed_field(name, value).rstrip()


def canonical_signature_header(name: bytes, value: bytes) -> bytes:
    """Hashed form of the DKIM-Signature field itself: b= emptied, relaxed, no trailing CRLF."""
    stripped = dkim.RE_BTAG.sub(b"\\1", value)
    ((cname, cvalue),) = Relaxed.canonicalize_headers([(name, stripped)])
    return bytes(cname) + b":" + bytes(cvalue).rstrip()


class SharedHead:
    """The signed fields of a header block shared by many messages, parsed and in relaxed form
    once (a campaign's content-level fields: From, Subject, MIME...); see :func:`header_data`.

    ``fields`` maps each signed field name present to its relaxed forms, top to bottom;
    ``plans`` keeps, per list of signed names in the messages' own fields (the same for every
    message of a campaign), the h= names and how to assemble the hashed data.
    """

    __slots__ = ("fields", "plans")

    def __init__(self, block: bytes) -> None:
        fields: dict[bytes, list[bytes]] = {}
        for name, value in parse_headers(block):
            lname = name.lower()
            if lname in _SIGNED_SET:
                fields.setdefault(lname, []).append(_relaxed_field(name, value))
        self.fields = fields
        self.plans: dict[tuple[bytes, ...], _Plan] = {}


#: The h= names, then the pieces of the hashed data in order: an int is the index of one of
#: the message's own fields (in relaxed form), bytes are the shared head's fields between them.
_Plan = tuple[tuple[bytes, ...], tuple[int | bytes, ...]]
_MAX_PLANS = 64


def _plan(own: tuple[bytes, ...], shared: SharedHead) -> _Plan:
    """How to assemble h= and the hashed data for messages whose own signed fields are named
    ``own`` (top to bottom): what :func:`signed_header_names` and :func:`select_headers` do."""
    shared_fields = shared.fields
    froms = own.count(b"from") + len(shared_fields.get(b"from", ()))
    if froms != 1:
        raise DkimMessageError(
            f"message has {froms} From header fields; exactly one is required to sign"
        )
    names: list[bytes] = []
    pieces: list[int | bytes] = []
    for name in SIGNED_HEADERS:
        mine: list[int | bytes] = [i for i, n in enumerate(own) if n == name]
        found = mine + list(shared_fields.get(name, ()))
        names.extend([name] * len(found))
        pieces.extend(reversed(found))  # h= takes the instances from the bottom up
    names.append(b"from")  # over-signed, as signed_header_names does
    merged: list[int | bytes] = []
    for piece in pieces:  # adjacent shared fields joined once, here
        if isinstance(piece, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] += piece
        else:
            merged.append(piece)
    return tuple(names), tuple(merged)


def is_field_block(block: bytes) -> bool:
    """Whether ``block`` is whole header fields and nothing else: empty, or ending in a line
    break with no empty line before it. Two such blocks parse, one after the other, as their
    concatenation does (when the second does not start with a continuation line)."""
    if not block:
        return True
    return (
        block.endswith(b"\n")
        and block[:1] not in (b"\r", b"\n")
        and b"\n\r\n" not in block
        and b"\n\n" not in block
    )


def header_data(prefix: bytes, shared: SharedHead) -> tuple[tuple[bytes, ...], bytes]:
    """``(h= names, hashed header data)`` of the header block ``prefix`` + the shared block.

    The same as :func:`signed_header_names` and :func:`canonical_signed_headers` over
    :func:`parse_headers` of the whole block (tests/unit/test_dkim_shared_head.py compares
    them), with the shared block's part already done. ``prefix`` must pass
    :func:`is_field_block`, and the shared block must not start with a continuation line.
    """
    names: list[bytes] = []
    relaxed: list[bytes] = []
    for name, value in parse_headers(prefix):
        lname = name.lower()
        if lname in _SIGNED_SET:
            names.append(lname)
            # _relaxed_field inlined (a parsed name has no blanks to strip): per message.
            value = value.replace(b"\r\n", b"")
            if b"\t" in value or b"  " in value:
                value = _WSP_TO_COMPRESS.sub(b" ", value)
            relaxed.append(lname + b":" + value.strip() + b"\r\n")
    own = tuple(names)
    plan = shared.plans.get(own)
    if plan is None:
        if len(shared.plans) >= _MAX_PLANS:
            shared.plans.clear()
        plan = shared.plans[own] = _plan(own, shared)
    h, pieces = plan
    return h, b"".join([relaxed[p] if isinstance(p, int) else p for p in pieces])
