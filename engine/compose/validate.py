"""Job validation at enqueue: refuse what cannot become a correct, safe message.

Every refusal is a :class:`JobValidationError` whose message starts with the field at fault, so
``engine enqueue`` can print it per line and the platform can fix the job. Nothing here touches
the network or the database; it runs for every job of a 100k-job batch, so the common case
(plain addresses, a few headers) is a handful of regex matches.
"""

from __future__ import annotations

import re
from datetime import datetime
from email.headerregistry import Address as HeaderAddress
from typing import Literal

from engine.compose.address import Address, normalise_domain, parse_address
from engine.compose.headers import (
    ENGINE_OWNED,
    NEVER_SUBMITTED,
    check_field_name,
    check_field_value,
    field_name,
    split_header_block,
    to_crlf,
    trace_field,
)
from engine.compose.metadata import check_metadata
from engine.compose.mime import POLICY, build_body, parse_content_type
from engine.compose.unsubscribe import list_unsubscribe_headers, split_list_unsubscribe
from engine.errors import ComposeError, JobValidationError
from engine.model import Attachment, Content, Job, Priority

__all__ = ["Address", "parse_address", "validate_job"]

MAX_KEY_LENGTH = 255
MAX_FILENAME_LENGTH = 255
#: Headers whose value is an address list: parsed, so a garbage Reply-To is refused up front.
_ADDRESS_HEADERS = frozenset({"reply-to", "cc", "sender"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTENT_ID = re.compile(r"<?[!-;=?-~]+>?")
_PARTS = ("subject", "text", "html", "headers", "attachments")


def _fail(message: str) -> JobValidationError:
    return JobValidationError(message)


RawTrace = Literal["refuse", "strip"]


def validate_job(job: Job, *, max_message_bytes: int, raw_trace: RawTrace = "refuse") -> None:
    """Raise :class:`JobValidationError` naming the field when ``job`` cannot be sent.

    ``raw_trace`` is ``[security] raw_trace_headers``: "refuse" refuses a raw message carrying
    trace or authentication fields (:func:`~engine.compose.headers.trace_field`); "strip"
    accepts it, and composition drops them.
    """
    _check_identity(job)
    try:
        parse_address(job.to)
    except JobValidationError as exc:
        raise _fail(f"to: {exc.message}") from None
    sender = _sender(job)
    if job.raw is not None and job.variables is not None:
        raise _fail("variables: a templated job takes its body from its campaign; remove raw")
    if job.raw is not None:
        _check_raw(job, sender, max_message_bytes)
        if raw_trace == "refuse":
            _check_raw_trace(job.raw)
    else:
        if sender is None:
            raise _fail("from: missing (a structured job needs a sender address)")
        if job.variables is not None:
            _check_templated(job)
        else:
            _check_structured(job, max_message_bytes)
    _check_options(job)


def _check_identity(job: Job) -> None:
    if not job.tenant_id or not job.tenant_id.strip():
        raise _fail("tenant_id: missing or empty")
    if _CONTROL.search(job.tenant_id):
        raise _fail("tenant_id: contains a control character")
    key = job.idempotency_key
    if not key or not key.strip():
        raise _fail("idempotency_key: missing or empty")
    if len(key) > MAX_KEY_LENGTH:
        raise _fail(f"idempotency_key: longer than {MAX_KEY_LENGTH} characters ({len(key)})")
    if _CONTROL.search(key):
        raise _fail("idempotency_key: contains a control character")


def _sender(job: Job) -> Address | None:
    if job.from_ is None:
        return None
    try:
        return parse_address(job.from_)
    except JobValidationError as exc:
        raise _fail(f"from: {exc.message}") from None


def _utf8_size(field: str, value: str | None) -> int:
    if value is None:
        return 0
    if "\x00" in value:
        raise _fail(f"{field}: contains a NUL character")
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise _fail(f"{field}: not valid UTF-8 (contains a lone surrogate)") from None


def _check_structured(job: Job, max_message_bytes: int) -> None:
    if job.text is None and job.html is None:
        raise _fail("text/html: the job has neither text, html nor raw")
    if job.subject is not None:
        problem = check_field_value("subject", job.subject)
        if problem:
            raise _fail(problem)
        _utf8_size("subject", job.subject)
    size = _utf8_size("text", job.text) + _utf8_size("html", job.html)
    seen: set[str] = set()
    for name, value in job.headers.items():
        _check_header(name, value, seen)
        size += len(name) + len(value.encode("utf-8", "replace")) + 4
    encoded_attachments = 0
    for index, att in enumerate(job.attachments):
        _check_attachment(index, att)
        encoded_attachments += _base64_size(len(att.content))
    size += encoded_attachments
    if size > max_message_bytes:
        raise _fail(
            f"size: about {size} bytes once encoded (attachments count {encoded_attachments} "
            f"after base64) exceeds max_message_bytes {max_message_bytes}"
        )


def _check_templated(job: Job) -> None:
    """A templated job: the campaign's template gives subject, text and HTML; the job gives
    its recipient's variables (the names the template needs are checked against the stored
    campaign by the enqueue service)."""
    assert job.variables is not None  # narrowed by the caller
    if not job.campaign_id:
        raise _fail("variables: a templated job needs campaign_id (whose template to render)")
    given = [part for part in ("subject", "text", "html") if getattr(job, part) is not None]
    if given:
        raise _fail(
            f"variables: a templated job takes subject/text/html from its campaign;"
            f" remove {', '.join(given)}"
        )
    check_metadata(job.variables, "variables")
    seen: set[str] = set()
    for name, value in job.headers.items():
        _check_header(name, value, seen)
    for index, att in enumerate(job.attachments):
        _check_attachment(index, att)


def _check_header(name: str, value: str, seen: set[str]) -> None:
    problem = check_field_name(name)
    if problem:
        raise _fail(problem)
    lowered = name.lower()
    if lowered in ENGINE_OWNED:
        raise _fail(f"header {name!r} is set by the engine: {ENGINE_OWNED[lowered]}")
    if lowered in NEVER_SUBMITTED:
        raise _fail(f"header {name!r} is refused: {NEVER_SUBMITTED[lowered]}")
    if lowered in seen:
        raise _fail(f"header {name!r} is given twice (names are case-insensitive)")
    seen.add(lowered)
    problem = check_field_value(f"header {name!r}", value)
    if problem:
        raise _fail(problem + (" (header injection)" if "CR/LF" not in problem else ""))
    _utf8_size(f"header {name!r}", value)
    if lowered in _ADDRESS_HEADERS:
        parsed = POLICY.header_factory(name, value)
        if parsed.defects or not getattr(parsed, "addresses", ()):
            raise _fail(f"header {name!r}: {value!r} is not a valid address list")


def _check_attachment(index: int, att: Attachment) -> None:
    where = f"attachments[{index}]"
    if not att.filename or _CONTROL.search(att.filename):
        raise _fail(f"{where}.filename: empty or contains a control character (CR/LF/NUL)")
    if len(att.filename) > MAX_FILENAME_LENGTH:
        raise _fail(f"{where}.filename: longer than {MAX_FILENAME_LENGTH} characters")
    _utf8_size(f"{where}.filename", att.filename)
    try:
        parse_content_type(att.content_type)
    except ComposeError as exc:
        raise _fail(f"{where}.content_type: {exc.message}") from None
    if att.disposition not in ("attachment", "inline"):
        raise _fail(f"{where}.disposition: must be 'attachment' or 'inline'")
    if att.content_id is not None and not _CONTENT_ID.fullmatch(att.content_id):
        raise _fail(f"{where}.content_id: {att.content_id!r} is not a valid Content-ID")


def _base64_size(n: int) -> int:
    # 4 characters per 3 bytes, lines of 76 characters (57 bytes) each ending in CRLF.
    return 4 * ((n + 2) // 3) + 2 * ((n + 56) // 57)


def _check_raw(job: Job, sender: Address | None, max_message_bytes: int) -> None:
    assert job.raw is not None  # narrowed by the caller
    given = [part for part in _PARTS if getattr(job, part)]
    if given:
        raise _fail(
            f"raw: a raw message carries its own headers and body; remove {', '.join(given)}"
        )
    if len(job.raw) > max_message_bytes:
        raise _fail(f"raw: {len(job.raw)} bytes exceeds max_message_bytes {max_message_bytes}")
    try:
        composed = build_body(Content(raw=job.raw))
    except ComposeError as exc:
        raise _fail(f"raw: not a usable RFC 5322 message: {exc.message}") from None
    fields, _ = split_header_block(composed.head)
    from_fields = [f for f in fields if field_name(f) == "from"]
    if len(from_fields) != 1:
        raise _fail(f"raw: must have exactly one From header, found {len(from_fields)}")
    field = from_fields[0]
    from_value = " ".join(field[field.find(b":") + 1 :].decode("utf-8", "replace").split())
    parsed = POLICY.header_factory("From", from_value)
    addresses: tuple[HeaderAddress, ...] = getattr(parsed, "addresses", ())
    if parsed.defects or len(addresses) != 1:
        raise _fail(f"raw: From {from_value!r} is not a single valid address")
    if sender is not None:
        raw_from = addresses[0]
        try:
            raw_domain = normalise_domain(raw_from.domain)
        except JobValidationError:
            raw_domain = raw_from.domain
        if raw_from.username != sender.local or raw_domain != sender.domain:
            raise _fail(
                f"from: {job.from_!r} differs from the raw message's From "
                f"{raw_from.addr_spec!r} (DKIM signs for the From domain)"
            )


def _check_raw_trace(raw: bytes) -> None:
    fields, _ = split_header_block(to_crlf(raw))
    found: dict[str, str] = {}
    for f in fields:
        name = field_name(f)
        why = trace_field(name)
        if why is not None:
            found.setdefault(name, why)
    if found:
        names = ", ".join(sorted(found))
        raise _fail(
            f"raw: trace/authentication header(s) {names} may not be submitted"
            f" ({'; '.join(sorted(set(found.values())))}); remove them, or have the operator set"
            ' [security] raw_trace_headers = "strip"'
        )


def _check_options(job: Job) -> None:
    if job.metadata:
        check_metadata(job.metadata)
    try:
        Priority.parse(job.priority)
    except ValueError as exc:
        raise _fail(f"priority: {exc}") from None
    if job.send_at is not None:
        try:
            when = datetime.fromisoformat(job.send_at)
        except ValueError:
            raise _fail(f"send_at: {job.send_at!r} is not an ISO 8601 timestamp") from None
        if when.tzinfo is None:
            raise _fail(
                f"send_at: {job.send_at!r} has no time zone; add one (e.g. 'Z' or '+02:00')"
            )
    if job.campaign_id is not None and (
        len(job.campaign_id) > MAX_KEY_LENGTH or _CONTROL.search(job.campaign_id)
    ):
        raise _fail(f"campaign_id: control characters or over {MAX_KEY_LENGTH} characters")
    if job.list_unsubscribe is not None:
        try:
            list_unsubscribe_headers(*split_list_unsubscribe(job.list_unsubscribe))
        except ComposeError as exc:
            raise _fail(f"list_unsubscribe: {exc.message}") from None
