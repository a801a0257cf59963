"""What an inbound message proves about itself, gathered where it is parsed (off the event loop).

A complaint or a bounce may only change state when it proves it is about our mail (DESIGN §7):
our own DKIM signature in the embedded original, an authenticated feedback-loop reporter, our
ENVID, or a valid VERP address (checked by the listener). Everything that costs CPU on attacker
bytes (canonicalisation, hashing) happens here, in the parse worker under its CPU budget; the
event loop is left with key lookups and one signature check per signature
(:mod:`engine.inbound.trust`).

The work is bounded: at most :data:`MAX_SIGNATURES` DKIM-Signature fields per header block,
header blocks of at most :data:`MAX_HEAD_BYTES`, and a report body hashed only up to
:data:`MAX_BODY_BYTES` (beyond it the body hash counts as not matching).
"""

from __future__ import annotations

import re

import dkim
import dkim.util
import msgspec

from engine.dkim import verify
from engine.inbound.hints import first_bracketed
from engine.inbound.parse import parse_bounce
from engine.inbound.rawcuts import blank_line_end
from engine.inbound.report import BounceKind, BounceReport
from engine.inbound.textscan import addresses_in

#: DKIM-Signature fields looked at per header block (a real message has one to three).
MAX_SIGNATURES = 8
#: Bytes of a header block looked at (the report's own, or the quoted original's).
MAX_HEAD_BYTES = 64 * 1024
#: Bytes of one DKIM-Signature field value (an RSA-4096 one with a long h= is under 2 KiB), and
#: the longest run of whitespace in it: dkimpy's b= checks and its b= stripping regex backtrack
#: quadratically over long whitespace runs (a 60 KB folded b= costs it ~20 s), so such fields
#: are skipped before dkimpy sees them.
MAX_SIGNATURE_BYTES = 4096
MAX_WSP_RUN = 32
#: Fields one signature's h= may name (ours names about a dozen, big providers' as many).
MAX_SIGNED_FIELDS = 64
#: Header fields of one block; more is not mail, and every field is canonicalised per signature.
MAX_FIELDS = 1000
#: Bytes of a report's body hashed for its own signature's bh=; larger reports do not verify.
MAX_BODY_BYTES = 1024 * 1024  # as much as the parser reads (message.MAX_PARSE_BYTES)
#: Bytes of a message searched for ``Original-Envelope-Id`` (DSN fields come first).
_ENVID_SCAN_BYTES = 1024 * 1024
_ENVID_FIELD = b"\noriginal-envelope-id:"
_MAX_ENVID = 100
_MAX_FIELD_VALUE = 998
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")  # dkimpy's name bytes, up to the colon
_WSP_RUN = re.compile(rb"\s+")
_DKIM_SIGNATURE = b"dkim-signature"
_MESSAGE_ID = b"message-id"
_TO = b"to"
_FROM = b"from"
#: Addresses of a signed To kept (ours names one: the job's recipient).
MAX_TO_ADDRESSES = 10


class DkimEvidence(msgspec.Struct, frozen=True, kw_only=True):
    """One DKIM-Signature field, canonicalised and hashed: only the public-key check is left."""

    domain: str
    selector: str
    algorithm: str
    digest: bytes  # what b= signs (hash of the canonicalised signed fields)
    signature: bytes  # b=, decoded
    body_ok: bool | None = None  # None: the body was not there to check
    signed: tuple[str, ...] = ()  # the h= field names, lower-case
    message_id: str | None = None  # the Message-ID this signature covers (None: not signed)
    # The addresses of the To this signature covers, lower-case: which job of a Message-ID
    # shared by several (raw content keeps its own Message-ID) the signed copy was.
    to: tuple[str, ...] = ()
    from_addresses: tuple[str, ...] = ()  # of the From this signature covers, lower-case


class Evidence(msgspec.Struct, frozen=True, kw_only=True):
    """DKIM material of the report itself (``outer``) and of the original it quotes."""

    outer: tuple[DkimEvidence, ...] = ()
    original: tuple[DkimEvidence, ...] = ()
    envid: str | None = None
    # Unauthenticated fields of the quoted original, for matching a report about a redacted
    # original to its job once its reporter is authenticated: our VERP address and Feedback-ID.
    return_path: str | None = None
    feedback_id: str | None = None


class Analysis(msgspec.Struct, frozen=True):
    """What the parse worker returns for one inbound message."""

    report: BounceReport
    evidence: Evidence = Evidence()


def gather(raw: bytes, report: BounceReport) -> Evidence:
    """The authentication material of ``raw`` (see the module doc). Never raises."""
    original: tuple[DkimEvidence, ...] = ()
    return_path = feedback_id = None
    if report.original_head:
        headers = _headers(report.original_head[:MAX_HEAD_BYTES])
        if headers is not None:
            original = _signatures(headers, None)
            return_path = _field(headers, b"return-path")
            feedback_id = _field(headers, b"feedback-id")
    outer: tuple[DkimEvidence, ...] = ()
    if report.kind is BounceKind.ARF:
        outer = _outer(raw)
    envid = _envid(raw) if report.kind in (BounceKind.DSN, BounceKind.NONSTANDARD) else None
    return Evidence(
        outer=outer,
        original=original,
        envid=envid,
        return_path=return_path,
        feedback_id=feedback_id,
    )


def analyse(raw: bytes, envelope_to: str | None = None) -> Analysis:
    """Parse one inbound message and gather its evidence: the parse worker's one call."""
    report = parse_bounce(raw, envelope_to)
    try:
        evidence = gather(raw, report)
    except Exception:  # evidence is optional: a report without it changes nothing, never fails
        evidence = Evidence()
    return Analysis(report, evidence)


def _headers(block: bytes) -> list[tuple[bytes, bytes]] | None:
    """``dkim.rfc822_parse``'s header list for ``block`` (None where it would refuse it).

    Same fields as dkimpy gives (LF or CRLF; values keep their folding as CRLF), but folded
    lines are joined once per field: dkimpy appends them one by one, quadratic in the number of
    continuation lines, which an attacker chooses.
    """
    fields: list[tuple[bytes, list[bytes]]] = []
    for line in re.split(rb"\r?\n", block):
        if not line:
            break
        if line[0] in (0x09, 0x20):
            if not fields:
                return None
            fields[-1][1].append(line)
            continue
        name = _FIELD_NAME.match(line)
        if name is not None and line[name.end() : name.end() + 1] == b":":
            if len(fields) >= MAX_FIELDS:
                return None
            fields.append((name.group(), [line[name.end() + 1 :]]))
        elif not line.startswith(b"From "):
            return None
    return [(name, b"\r\n".join(lines) + b"\r\n") for name, lines in fields]


def _signatures(headers: list[tuple[bytes, bytes]], body: bytes | None) -> tuple[DkimEvidence, ...]:
    """Evidence for the first :data:`MAX_SIGNATURES` DKIM-Signature fields of ``headers``.

    ``body`` is the CRLF body to check bh= against, or None when there is none to check.
    """
    found: list[DkimEvidence] = []
    fields = [h for h in headers if h[0].lower() == _DKIM_SIGNATURE][:MAX_SIGNATURES]
    for field in fields:
        if len(field[1]) > MAX_SIGNATURE_BYTES or _longest_wsp_run(field[1]) > MAX_WSP_RUN:
            continue
        try:
            prepared = verify.prepare(headers, field, max_signed=MAX_SIGNED_FIELDS)
        except (verify.SignatureFailure, dkim.DKIMException, dkim.util.InvalidTagValueList):
            continue
        except (ValueError, KeyError, IndexError, UnicodeError):
            continue
        body_ok: bool | None = None
        if body is not None:
            body_ok = _body_ok(prepared, body)
        names = tuple(n.decode("ascii", "replace") for n, _ in prepared.signed)
        mid = next((v for n, v in prepared.signed if n.lower() == _MESSAGE_ID), None)
        to = next((v for n, v in prepared.signed if n.lower() == _TO), None)
        sender = next((v for n, v in prepared.signed if n.lower() == _FROM), None)
        found.append(
            DkimEvidence(
                domain=prepared.domain,
                selector=prepared.selector,
                algorithm=prepared.algorithm,
                digest=prepared.digest,
                signature=prepared.signature,
                body_ok=body_ok,
                signed=tuple(dict.fromkeys(n.lower() for n in names)),
                message_id=first_bracketed(mid.decode("utf-8", "replace")) if mid else None,
                to=_addresses(to),
                from_addresses=_addresses(sender),
            )
        )
    return tuple(found)


def _addresses(value: bytes | None) -> tuple[str, ...]:
    if not value:
        return ()
    found = addresses_in(value[:_MAX_FIELD_VALUE].decode("utf-8", "replace"))
    return tuple(dict.fromkeys(a.lower() for a in found))[:MAX_TO_ADDRESSES]


def _longest_wsp_run(value: bytes) -> int:
    return max(map(len, _WSP_RUN.findall(value)), default=0)


def _body_ok(prepared: verify.Prepared, body: bytes) -> bool:
    if b"l" in prepared.tags:
        return False  # a length limit lets anyone append to a signed report
    try:
        verify.check_body(prepared, body)
    except (verify.SignatureFailure, ValueError):
        return False
    return True


def _outer(raw: bytes) -> tuple[DkimEvidence, ...]:
    """Evidence for the report's own signatures (body checked up to :data:`MAX_BODY_BYTES`)."""
    lowered = raw[:MAX_HEAD_BYTES].lower()
    if b"dkim-signature" not in lowered:
        return ()
    end = blank_line_end(raw[: MAX_HEAD_BYTES + 4])
    if end < 0:
        return ()  # no end of header within the cap: nothing we would check
    headers = _headers(raw[:end])
    if headers is None:
        return ()
    body = raw[end:]
    if len(body) > MAX_BODY_BYTES:
        return tuple(msgspec.structs.replace(e, body_ok=False) for e in _signatures(headers, None))
    if body.count(b"\n") != body.count(b"\r\n"):
        body = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return _signatures(headers, body)


def _field(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for n, v in headers:
        if n.lower() == name:
            value = b" ".join(v[:_MAX_FIELD_VALUE].split())
            return value.decode("utf-8", "replace") or None
    return None


def _envid(raw: bytes) -> str | None:
    """The DSN's ``Original-Envelope-Id`` (RFC 3464 §2.2.1), if any: checked by its HMAC later."""
    scan = raw[:_ENVID_SCAN_BYTES]
    at = scan.lower().find(_ENVID_FIELD)
    if at < 0:
        return None
    line = scan[at + len(_ENVID_FIELD) : at + len(_ENVID_FIELD) + 2 * _MAX_ENVID]
    value = line.split(b"\n", 1)[0].strip()
    if not value or len(value) > _MAX_ENVID or not value.isascii():
        return None
    return value.split()[0].decode("ascii")
