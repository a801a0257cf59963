"""MIME composition in two layers, so a 50k-recipient campaign encodes its body once.

* :func:`build_body` (once per content hash, cached by the caller): the MIME tree, its encoding
  (7bit / quoted-printable / base64 chosen by the stdlib's heuristics, never 8bit) and the
  content-level headers (From, Subject, custom headers, List-Unsubscribe, MIME headers), kept
  as CRLF bytes in a :class:`ComposedBody`.
* :func:`render_head` / :func:`render` (per recipient, a few microseconds): To, Message-ID and
  Date plus per-recipient extras (Feedback-ID, List-Unsubscribe, ...) in front of the cached
  bytes. DKIM signs the header block and reuses one body hash per ComposedBody.

Raw messages (a complete RFC 5322 message from the platform) are kept byte for byte except:
line endings become CRLF, Bcc and Return-Path are dropped, and their own Message-ID, Date and
To win over the per-recipient ones (the platform built the message on purpose, and may have
recorded its Message-ID for threading). :func:`effective_message_id` says which one went out.
"""

from __future__ import annotations

import email.policy
import functools
import re
from collections.abc import Sequence
from email import contentmanager
from email.generator import BytesGenerator
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage, Message, MIMEPart
from email.utils import collapse_rfc2231_value

import msgspec

from engine.compose.address import Address, parse_address
from engine.compose.headers import (
    ENGINE_OWNED,
    FIELD_NAME,
    INJECTION,
    MAX_LINE,
    RAW_DROPPED,
    check_field_name,
    field_name,
    fold,
    format_date,
    split_header_block,
    to_crlf,
    trace_field,
)
from engine.compose.unsubscribe import list_unsubscribe_headers, split_list_unsubscribe
from engine.errors import ComposeError, JobValidationError
from engine.model import Attachment, Content

#: SMTP wire form (CRLF), 78-column folding, and cte_type="7bit" so the stdlib picks
#: quoted-printable or base64 for non-ASCII text instead of emitting 8bit.
POLICY = email.policy.SMTP.clone(cte_type="7bit", max_line_length=78)
#: For a From with a UTF-8 local part: headers stay raw UTF-8 (RFC 6532), bodies still 7bit.
POLICY_UTF8 = POLICY.clone(utf8=True)

_CRLF = b"\r\n"
#: Any line ending, as email.generator splits a payload (its NLCRE).
_NLCRE = re.compile(r"\r\n|\r|\n")


class ComposedBody(msgspec.Struct, frozen=True):
    """The recipient-independent part of a message, ready for :func:`render`.

    ``head`` is the content-level header fields (each ending in CRLF, no empty line after them);
    ``body`` is everything after the empty line. Cache one per content hash.
    """

    head: bytes
    body: bytes
    #: Lower-case names of the fields in ``head``; render() adds nothing the content already has.
    header_names: frozenset[str]
    #: The raw message's own Message-ID (it wins over the engine's), None for structured content.
    message_id: str | None = None
    #: The header block has raw UTF-8 (RFC 6532): send with SMTPUTF8.
    smtputf8: bool = False
    #: The body has 8-bit bytes (raw messages only): send with BODY=8BITMIME.
    eight_bit: bool = False

    @property
    def size(self) -> int:
        """Bytes of the cached part (head + empty line + body)."""
        return len(self.head) + 2 + len(self.body)


def build_body(content: Content) -> ComposedBody:
    """Compose the recipient-independent part of a message from ``content``.

    Raises :class:`ComposeError` when the content cannot make a valid message (validation at
    enqueue should have refused it already).
    """
    if content.raw is not None:
        return _build_raw(content.raw, content.list_unsubscribe)
    if content.from_ is None:
        raise ComposeError("content has no 'from' address")
    from_line, utf8 = _from_line(content.from_)
    policy = POLICY_UTF8 if utf8 else POLICY
    lines = [from_line]
    if content.subject is not None:
        lines.append(_registry_line("Subject", content.subject, policy))
    for name, value in content.headers.items():
        lines.append(_custom_line(name, value, policy))
    if content.list_unsubscribe:
        lines.extend(_list_unsubscribe_lines(content.list_unsubscribe))
    mime_head, body = _mime(content, policy)
    head = "".join(lines).encode("utf-8") + mime_head
    fields, _ = split_header_block(head + _CRLF)
    names = frozenset(field_name(f) for f in fields)
    _check_line_lengths(head + _CRLF + body)
    return ComposedBody(head=head, body=body, header_names=names, smtputf8=not head.isascii())


@functools.lru_cache(maxsize=4096)
def _from_line(from_: str) -> tuple[str, bool]:
    """The folded From field of ``from_`` and whether it needs SMTPUTF8. Cached: a tenant sends
    from a few addresses, and the stdlib header registry is slow (paid per message of
    transactional mail otherwise). Errors are raised each time, never cached."""
    try:
        sender = parse_address(from_)
    except JobValidationError as exc:
        raise ComposeError(f"from: {exc.message}") from None
    policy = POLICY_UTF8 if sender.smtputf8 else POLICY
    return _registry_line("From", _header_address(sender), policy), sender.smtputf8


def _list_unsubscribe_lines(value: str) -> list[str]:
    pairs = list_unsubscribe_headers(*split_list_unsubscribe(value))
    return [fold(f"{name}: {val}") + "\r\n" for name, val in pairs]


def _header_address(address: Address) -> HeaderAddress:
    local = address.local
    if local.startswith('"'):
        # Address.local keeps the SMTP quoting; the header registry quotes again by itself.
        local = re.sub(r"\\(.)", r"\1", local[1:-1])
    return HeaderAddress(display_name=address.display_name, username=local, domain=address.domain)


def _registry_line(name: str, value: object, policy: email.policy.EmailPolicy[EmailMessage]) -> str:
    """One header through the stdlib header registry: RFC 2047 / address encoding, folding."""
    if isinstance(value, str) and INJECTION.search(value):
        raise ComposeError(f"header {name!r} contains CR/LF/NUL (header injection)")
    header = policy.header_factory(name, value)
    if header.defects:
        raise ComposeError(f"header {name!r} value {value!s:.60} is malformed: {header.defects[0]}")
    folded: str = header.fold(policy=policy)
    return folded


def _custom_line(name: str, value: str, policy: email.policy.EmailPolicy[EmailMessage]) -> str:
    problem = check_field_name(name)
    if problem:
        raise ComposeError(problem)
    lowered = name.lower()
    if lowered in ENGINE_OWNED or lowered in RAW_DROPPED:
        raise ComposeError(f"header {name!r} may not be set by the platform")
    if INJECTION.search(value):
        raise ComposeError(f"header {name!r} contains CR/LF/NUL (header injection)")
    if value.isascii() and "=?" not in value:
        # ASCII goes out verbatim, only folded at spaces: the stdlib would turn a long token
        # (a tracking id, a JWT) into RFC 2047 encoded-words that machines reading it miss.
        return fold(f"{name}: {value}") + "\r\n"
    return _registry_line(name, value, policy)


def _mime(content: Content, policy: email.policy.EmailPolicy[EmailMessage]) -> tuple[bytes, bytes]:
    """Build the MIME tree; return (its top-level MIME header fields, body), CRLF bytes."""
    if content.text is None and content.html is None:
        raise ComposeError("content has neither text nor html (nor raw)")
    if "\x00" in (content.text or "") or "\x00" in (content.html or ""):
        # The stdlib would send a NUL as is in a 7bit part; no MTA should have to carry one.
        raise ComposeError("text/html contains a NUL character")
    if not content.attachments and policy is POLICY:
        return _text_mime(content)
    return _stdlib_mime(content, policy)


def _lines(payload: str) -> bytes:
    """A part's payload as the generator writes it: every line ending made CRLF (the last line
    written without one when the payload does not end with one)."""
    return "\r\n".join(_NLCRE.split(payload)).encode("ascii")


def _text_part(subtype: str, text: str) -> tuple[bytes, bytes]:
    """(header fields, body) of one text part: the stdlib's own choice of transfer encoding
    (``contentmanager._encode_text``, as ``set_content`` makes it), without the object tree."""
    # The stdlib's private helper, so the choice (7bit / quoted-printable / base64) and the
    # encoded text are exactly set_content's.
    encoded: tuple[str, str] = contentmanager._encode_text(  # type: ignore[attr-defined]
        text, "utf-8", None, POLICY
    )
    cte, payload = encoded
    head = (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {cte}\r\n'
    ).encode("ascii")
    return head, _lines(payload)


def _text_mime(content: Content) -> tuple[bytes, bytes]:
    """text/plain, text/html or both (multipart/alternative), no attachments: the bytes
    :func:`_stdlib_mime` makes through ``EmailMessage`` and the generator, written directly.
    Nearly every message is one of these, and building the object tree is the costly part of
    composing, paid on the event loop per distinct content (tests/unit/test_compose_text_mime.py
    compares the two byte for byte)."""
    parts = []
    if content.text is not None:
        parts.append(_text_part("plain", content.text))
    if content.html is not None:
        parts.append(_text_part("html", content.html))
    if len(parts) == 1:
        head, body = parts[0]
        return head + b"MIME-Version: 1.0\r\n", body
    texts = [head + b"\r\n" + body for head, body in parts]
    # The generator's own boundary maker (random, and checked against the parts' text).
    boundary: str = BytesGenerator._make_boundary(b"\r\n".join(texts))  # type: ignore[attr-defined]
    dash = b"--" + boundary.encode("ascii")
    body = dash + b"\r\n" + texts[0]
    for text in texts[1:]:
        body += b"\r\n" + dash + b"\r\n" + text
    body += b"\r\n" + dash + b"--\r\n"
    head = b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n boundary="%s"\r\n' % (
        boundary.encode("ascii")
    )
    return head, body


def _stdlib_mime(
    content: Content, policy: email.policy.EmailPolicy[EmailMessage]
) -> tuple[bytes, bytes]:
    """Any content, through the stdlib's ``EmailMessage`` (attachments, inline parts, UTF-8
    headers)."""
    msg = EmailMessage(policy=policy)
    html_part: MIMEPart | None = None
    if content.text is not None and content.html is not None:
        msg.set_content(content.text)
        msg.add_alternative(content.html, subtype="html")
        html_part = list(msg.iter_parts())[1]
    elif content.html is not None:
        msg.set_content(content.html, subtype="html")
        html_part = msg
    else:
        msg.set_content(content.text or "")
    for att in content.attachments:
        # Inline parts referenced by cid: go next to the HTML (multipart/related); without
        # HTML nothing can reference them, so they become ordinary parts of multipart/mixed.
        if att.content_id and html_part is not None:
            _add_part(html_part, att, related=True)
    for att in content.attachments:
        if not (att.content_id and html_part is not None):
            _add_part(msg, att, related=False)
    for part in msg.walk():
        if part is not msg:
            # The stdlib stamps MIME-Version on every part it creates; RFC 2045 wants it once,
            # at the top, and some spam filters score the repeats.
            del part["MIME-Version"]
    data = msg.as_bytes(policy=policy)
    fields, body = split_header_block(data)
    return b"".join(fields), body


def _add_part(parent: MIMEPart, att: Attachment, *, related: bool) -> None:
    maintype, subtype, params = parse_content_type(att.content_type)
    cid = None
    if att.content_id:
        cid = att.content_id if att.content_id.startswith("<") else f"<{att.content_id}>"
    add = parent.add_related if related else parent.add_attachment
    try:
        add(
            att.content,
            maintype=maintype,
            subtype=subtype,
            filename=att.filename or None,
            cid=cid,
            disposition=att.disposition,
            params=params,
        )
    except (TypeError, ValueError) as exc:
        raise ComposeError(f"attachment {att.filename!r}: {exc}") from None


def parse_content_type(value: str) -> tuple[str, str, dict[str, str]]:
    """Split an attachment's ``type/subtype; k=v`` with the stdlib parameter parser."""
    if INJECTION.search(value):
        raise ComposeError(f"attachment content type {value!r} contains CR/LF/NUL")
    parsed = Message()
    parsed["Content-Type"] = value
    maintype, subtype = parsed.get_content_maintype(), parsed.get_content_subtype()
    if value.split(";", 1)[0].strip().lower() != f"{maintype}/{subtype}":
        raise ComposeError(f"attachment content type {value!r} is not 'type/subtype'")
    if maintype in ("multipart", "message"):
        raise ComposeError(
            f"attachment content type {value!r}: {maintype}/* cannot be base64-encoded; "
            "attach it as application/octet-stream"
        )
    params = {
        k: collapse_rfc2231_value(v)
        for k, v in parsed.get_params(failobj=[])[1:]
        if k.lower() != "name"  # the filename comes from Attachment.filename
    }
    return maintype, subtype, params


def _build_raw(raw: bytes, list_unsubscribe: str | None) -> ComposedBody:
    if b"\x00" in raw:
        raise ComposeError("raw message contains NUL bytes")
    data = to_crlf(raw)
    _check_line_lengths(data)
    fields, body = split_header_block(data)
    # Trace fields go whatever [security] raw_trace_headers says: with "refuse" enqueue has
    # refused them already (SQL-path and older jobs included, nothing carries them out).
    kept = [
        f for f in fields if field_name(f) not in RAW_DROPPED and trace_field(field_name(f)) is None
    ]
    if not kept:
        raise ComposeError("raw message has no header fields")
    names = frozenset(field_name(f) for f in kept)
    if "from" not in names:
        raise ComposeError("raw message has no From header")
    message_id = None
    for f in kept:
        if field_name(f) == "message-id":
            value = f[f.find(b":") + 1 :].decode("utf-8", "replace")
            message_id = " ".join(value.split())
    if list_unsubscribe and "list-unsubscribe" not in names:
        # A raw message's own List-Unsubscribe wins; otherwise the job's field adds it.
        extra = _list_unsubscribe_lines(list_unsubscribe)
        kept.extend(line.encode("ascii") for line in extra)
        names = frozenset(field_name(f) for f in kept)
    head = b"".join(kept)
    return ComposedBody(
        head=head,
        body=body,
        header_names=names,
        message_id=message_id,
        smtputf8=not head.isascii(),
        eight_bit=not body.isascii(),
    )


def _check_line_lengths(data: bytes) -> None:
    if len(data) > MAX_LINE and max(map(len, data.split(_CRLF))) > MAX_LINE:
        raise ComposeError(
            f"message has a line over {MAX_LINE} characters (RFC 5322 §2.1.1); "
            "re-encode the raw message (quoted-printable/base64) or fold its headers"
        )


def format_to(to: str) -> str:
    """The ``To:`` field (without CRLF) for one recipient; validated at enqueue.

    A plain ASCII ``user@domain`` is used as is (the per-message fast path); a display name, an
    IDN domain or a UTF-8 local part goes through the parser and the stdlib header registry.
    """
    if to.isascii() and "<" not in to and " " not in to:
        return f"To: {to}"
    try:
        address = parse_address(to)
    except JobValidationError as exc:
        raise ComposeError(f"to: {exc.message}") from None
    policy = POLICY_UTF8 if address.smtputf8 else POLICY
    return _registry_line("To", _header_address(address), policy).removesuffix("\r\n")


def render_head(
    body: ComposedBody,
    *,
    to: str,
    message_id: str,
    date: str | None,
    extra_headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """The full header block for one recipient (every field ends in CRLF; no empty line).

    Adds Message-ID, Date (``None``: now) and To, then ``extra_headers`` (ASCII, e.g.
    Feedback-ID, List-Unsubscribe), in front of ``body.head``. A field the content already has
    is not added again: the content's (raw message's, or the job's own header) wins.
    """
    names = body.header_names
    # Header injection is refused at enqueue; this re-check makes render() safe for callers that
    # skipped validation. isprintable() is one C call and False for CR/LF/NUL, so the regex only
    # runs for the rare value with a TAB or non-printable Unicode in it.
    for value in (to, message_id, date or ""):
        if not value.isprintable() and INJECTION.search(value):
            raise ComposeError(f"{value!r} contains CR/LF/NUL (header injection)")
    lines: list[str] = []
    if "message-id" not in names:
        lines.append("Message-ID: " + message_id)
    if "date" not in names:
        lines.append("Date: " + (date or format_date()))
    if "to" not in names:
        lines.append(format_to(to))
    for name, value in extra_headers:
        if name.lower() in names:
            continue
        if name not in _CHECKED_NAMES:
            _check_extra_name(name)
        if not (value.isascii() and (value.isprintable() or not INJECTION.search(value))):
            raise ComposeError(f"extra header {name!r}: value must be ASCII without CR/LF/NUL")
        line = name + ": " + value
        lines.append(line if len(line) <= 78 else fold(line))
    lines.append("")
    return "\r\n".join(lines).encode("utf-8") + body.head


#: Extra header names already checked (a handful in practice: Feedback-ID, List-Unsubscribe...).
_CHECKED_NAMES: set[str] = set()


def _check_extra_name(name: str) -> None:
    if not FIELD_NAME.fullmatch(name):
        raise ComposeError(f"extra header {name!r} is not an RFC 5322 field name")
    if len(_CHECKED_NAMES) < 1024:  # bounded: names are code constants, not user data
        _CHECKED_NAMES.add(name)


def render(
    body: ComposedBody,
    *,
    to: str,
    message_id: str,
    date: str | None,
    extra_headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """The complete message for one recipient in SMTP wire form (CRLF line endings).

    Same arguments as :func:`render_head`; equal to ``render_head(...) + b"\\r\\n" + body.body``.
    """
    head = render_head(body, to=to, message_id=message_id, date=date, extra_headers=extra_headers)
    return b"".join((head, _CRLF, body.body))


def effective_message_id(body: ComposedBody, generated: str) -> str:
    """The Message-ID the recipient sees: a raw message's own one wins over ``generated``."""
    return body.message_id or generated
