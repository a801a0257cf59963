"""Does a stored message mention an address? Sans-IO search of contents and raw messages.

Bodies are stored compressed (and raw messages may carry base64 or quoted-printable parts), so a
SQL ``LIKE`` cannot see the address; these functions look at what a reader would see.
"""

from __future__ import annotations

import email.parser
import email.policy
from collections.abc import Iterable

from engine.model import Content

_PARSER = email.parser.BytesParser(policy=email.policy.compat32)


def _texts(content: Content) -> Iterable[str]:
    yield from (content.from_ or "", content.subject or "", content.text or "")
    yield from (content.html or "", content.list_unsubscribe or "")
    yield from content.headers.keys()
    yield from content.headers.values()
    for att in content.attachments:
        yield att.filename


def raw_mentions(raw: bytes, address: str) -> bool:
    """True if the address appears in a raw RFC 5322 message, in clear or in a decoded part."""
    needle = address.lower().encode("utf-8")
    if needle in raw.lower():
        return True
    try:
        message = _PARSER.parsebytes(raw)
    except Exception:  # a message too broken to parse was searched in clear above
        return False
    for part in message.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes) and needle in payload.lower():
            return True
    return False


def content_mentions(content: Content, address: str) -> bool:
    """True if the address appears anywhere in a job's content (fields, attachments, raw)."""
    needle = address.lower()
    if any(needle in text.lower() for text in _texts(content)):
        return True
    if any(raw_mentions(att.content, address) for att in content.attachments):
        return True
    return content.raw is not None and raw_mentions(content.raw, address)
