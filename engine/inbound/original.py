"""The raw header block of the original message quoted in a report, for DKIM checks.

A report's parser reads the original's fields as text (:func:`engine.inbound.message.
original_headers`); a DKIM check needs the bytes as they were signed. This takes them from the
part the MIME walk already found: transfer-decoded (reporters base64 their attachments), cut at
the first empty line (the parser drops the original's body anyway, and reporters truncate or
redact it) and capped, so the evidence gatherer never reads more than :data:`MAX_HEAD_BYTES`.
"""

from __future__ import annotations

import email.message

from engine.inbound.rawcuts import blank_line_end

#: Bytes of the original's header block kept (a signed header block is a few KiB).
MAX_HEAD_BYTES = 64 * 1024
#: Bytes of a part looked at to find the end of that block (the transfer decode is C code).
_SCAN_BYTES = 4 * MAX_HEAD_BYTES


def original_head(part: email.message.Message, payload: object) -> bytes | None:
    """The original message's header block (ends with an EOL), or None when there is none.

    ``part`` is the message/rfc822 (or text/rfc822-headers) part and ``payload`` its
    ``get_payload()``, as :func:`engine.inbound.message.iter_parts` yields them.
    """
    if isinstance(payload, list):
        # The stdlib did parse the original (a folded Content-Type escaped the opaque
        # renaming): its fields keep their folding, which relaxed canonicalisation ignores.
        inner = payload[0] if payload else None
        if not isinstance(inner, email.message.Message):
            return None
        lines = [f"{k}: {v}\r\n" for k, v in inner.raw_items()]
        block = "".join(lines).encode("utf-8", "surrogateescape")
        return block[:MAX_HEAD_BYTES] or None
    try:
        # decode=True: transfer-decoded bytes; for 7bit/8bit text the loader's
        # surrogate-escaped bytes come back as they were received.
        data = part.get_payload(decode=True)
    except Exception:  # a broken encoding is no evidence, never an error
        return None
    if not isinstance(data, bytes):
        return None
    data = data[:_SCAN_BYTES].lstrip(b"\r\n")
    end = blank_line_end(data)
    # Up to the last field's line ending: the empty line (CRLF or LF) is not part of the block.
    head = data[: end - (2 if data.endswith(b"\n\r\n", 0, end) else 1)] if end >= 0 else data
    return head[:MAX_HEAD_BYTES] or None
