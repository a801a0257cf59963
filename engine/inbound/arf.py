"""RFC 5965 Abuse Reporting Format: the machine-readable part of a complaint (feedback loop).

The message/feedback-report part is a single field block; unlike a DSN some fields repeat
(Original-Rcpt-To, Reported-URI), so the fields are collected as lists here.
"""

from __future__ import annotations

import enum
import re

from engine.inbound.dsn import decode_address
from engine.inbound.message import Headers
from engine.inbound.report import Feedback
from engine.inbound.textscan import first_address

_FIELD_LINE = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$")
#: Field lines read from a report at most (RFC 5965 reports have a dozen).
MAX_FIELDS = 200


class FeedbackType(enum.StrEnum):
    """RFC 5965 §7.3 feedback types (plus RFC 6650's not-spam), the IANA registry."""

    ABUSE = "abuse"
    FRAUD = "fraud"
    VIRUS = "virus"
    OTHER = "other"
    NOT_SPAM = "not-spam"
    AUTH_FAILURE = "auth-failure"  # RFC 6591, sent for DKIM/SPF failures
    DMARC = "dmarc"  # RFC 7489 forensic reports


def parse_feedback_fields(text: str) -> dict[str, list[str]]:
    """``{lower-case name: [values]}`` of a feedback-report block (continuations unfolded)."""
    fields: dict[str, list[str]] = {}
    last: list[str] | None = None
    for count, line in enumerate(text.splitlines()):
        if count >= MAX_FIELDS:
            break
        if not line.strip():
            last = None
            continue
        if line[0] in " \t" and last is not None:
            last[-1] = f"{last[-1]} {line.strip()}"
            continue
        found = _FIELD_LINE.match(line)
        if found is None:
            last = None
            continue
        last = fields.setdefault(found.group(1).lower(), [])
        last.append(found.group(2).strip())
    return fields


def feedback_from_fields(fields: dict[str, list[str]]) -> Feedback:
    """Build :class:`Feedback` from the report fields; an unknown type is kept as sent."""
    raw_type = _first(fields, "feedback-type") or FeedbackType.ABUSE.value
    feedback_type = raw_type.split()[0].lower() if raw_type.strip() else FeedbackType.ABUSE.value
    rcpts: list[str] = []
    for value in fields.get("original-rcpt-to", []) + fields.get("removal-recipient", []):
        address = decode_address(value)
        if address and address not in rcpts:
            rcpts.append(address)
    mail_from = _first(fields, "original-mail-from")
    source_ip = _first(fields, "source-ip")
    return Feedback(
        feedback_type=feedback_type,
        user_agent=_first(fields, "user-agent"),
        original_mail_from=decode_address(mail_from) if mail_from else None,
        original_rcpt_to=tuple(rcpts),
        source_ip=source_ip.split()[0] if source_ip else None,
        reported_domain=_first(fields, "reported-domain"),
        arrival_date=_first(fields, "arrival-date") or _first(fields, "received-date"),
    )


#: The header Microsoft's Junk Mail Reporting Program (Outlook.com/Hotmail) puts on the copy of
#: a reported message: the mailbox of the user who pressed "junk". JMRP reports are not RFC 5965
#: (a message/rfc822 part, or the reported message re-sent whole), so this header is the mark.
JMRP_HEADER = "X-HmXmrOriginalRecipient"


def jmrp_recipient(top: Headers, original: Headers | None) -> str | None:
    """The complaining address of a Microsoft JMRP complaint ('' when the header is empty),
    or None when the message is not one."""
    for headers in (top, original):
        if headers is not None and headers.has(JMRP_HEADER):
            return first_address(headers.get(JMRP_HEADER)) or ""
    return None


def parse_feedback_report(text: str) -> Feedback:
    """Parse the text of a message/feedback-report part."""
    return feedback_from_fields(parse_feedback_fields(text))


def _first(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    return values[0] if values and values[0] else None
