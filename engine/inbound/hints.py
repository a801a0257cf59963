"""The fields of a bounce that tie it to the job it reports on (:class:`JobHints`)."""

from __future__ import annotations

from engine.inbound.message import Headers
from engine.inbound.report import JobHints
from engine.inbound.textscan import MAX_QUOTED_CHARS, first_address, quoted_field, same_length_lower

#: Our header carrying the job id, read from a quoted original.
_JOB_HEADER = "X-PM-Job-Id"

#: Fields of the original message that map a bounce to its job (hint key -> field name).
_QUOTED_FIELDS = {
    "message_id": "Message-ID",
    "job_id": _JOB_HEADER,
    "from": "From",
    "to": "To",
    "subject": "Subject",
}
#: Identifiers are distinctive enough to be trusted even when quoted indented.
_ID_FIELDS = frozenset({"message_id", "job_id"})


def job_hints(
    heads: Headers, original: Headers | None, body: str, note: str, envelope_to: str | None
) -> JobHints:
    """What ties a bounce to its job: the original's fields (its attached headers, else a copy
    pasted below the notification ``note`` in ``body``), In-Reply-To, the envelope recipient."""
    found: dict[str, str | None] = dict.fromkeys(_QUOTED_FIELDS)
    if original is not None:
        for key, name in _QUOTED_FIELDS.items():
            found[key] = original.get(name) or None
    if None in found.values() and body:
        # A copy of the original pasted into the text part (qmail, Exim, Sendmail): read its
        # fields below the notification (Message-ID and our job header anywhere in the body).
        tail = body[len(note) :]
        # Only the start is searched (quoted_field reads MAX_QUOTED_CHARS): lower-casing
        # all of a long non-ASCII body costs more than the rest of the parse.
        lowered_tail = same_length_lower(tail[:MAX_QUOTED_CHARS])
        lowered_body = same_length_lower(body[:MAX_QUOTED_CHARS])
        for key, name in _QUOTED_FIELDS.items():
            if found[key] is None:
                indented = key in _ID_FIELDS
                found[key] = quoted_field(tail, lowered_tail, name, indented=indented)
                if found[key] is None and indented:
                    found[key] = quoted_field(body, lowered_body, name, indented=True)
    message_id = found["message_id"] or heads.get("In-Reply-To") or None
    job_id = found["job_id"].split()[0] if found["job_id"] else None
    return JobHints(
        envelope_to=envelope_to,
        job_id=job_id,
        message_id=first_bracketed(message_id),
        original_from=first_address(found["from"]) if found["from"] else None,
        original_to=first_address(found["to"]) if found["to"] else None,
        original_subject=found["subject"],
    )


def first_bracketed(value: str | None) -> str | None:
    """``<id@host>`` out of a header that may carry comments or several ids."""
    if not value:
        return None
    start = value.find("<")
    end = value.find(">", start + 1)
    if start >= 0 and end > start:
        return value[start : end + 1]
    return value.split()[0] if value.split() else None
