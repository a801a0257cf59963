r"""A hostile corpus for ``parse_bounce``: SMTP-legal messages built to make a parser slow.

:func:`hostile_corpus` returns ``{name: raw message}``, generated (nothing big is committed) and
deterministic (a seeded ``random.Random``; the same bytes on every call and every host). Every
message is at most :data:`MAX_MESSAGE_BYTES` (the listener's default ``max_message_bytes``) and,
except the ones whose point is bare LF or bare CR line ends, every line is at most 998 bytes
before its CRLF (RFC 5321 §4.5.3.1.6), so a real MTA would relay each of them to us. Generation
takes well under a second.

``tests/fuzz/test_hostile_corpus.py`` parses each one under a CPU budget, and
``python -m bench bounces --json`` reports the worst one as ``hostile_max_ms``/``hostile_worst``.

What each message models (the name prefix groups them):

HTML notifications (read only when a bounce has no text/plain part; the text is taken out of the
markup with regexes):

- ``html_style_flood_15parts``: the reported 963 KB stall: 15 ``text/html`` parts, each a run of
  ``<style>`` openings that never close. A lazy ``<style>.*?</style>`` search restarts at every
  opening and runs to the end of the part: quadratic in the part size.
- ``html_style_unclosed_one``: one 960 KB part, a single unclosed ``<style`` with no ``>`` at all
  followed by text: the ``[^>]*`` of a tag pattern scans to the end from each ``<``.
- ``html_script_mismatched``: ``<script>`` blocks closed by ``</style>`` (never by their own tag).
- ``html_header_tags``: ``<header>`` and ``<head-x>`` elements, which a ``<(head)[^>]*>`` pattern
  takes for ``<head>`` and then looks for a ``</head>`` that never comes.
- ``html_lt_flood``: ``<`` without ``>``: every ``<`` starts a ``<[^>]*>`` scan to the end.
- ``html_br_flood``: ``<br`` / ``< /p`` without ``>``: the line-break pattern's ``[^>]*``.
- ``html_nested_tags``: 100,000 nested ``<div><span>`` (a recursive HTML walker would overflow).
- ``html_long_attributes``: attribute values hundreds of KB long, spread over legal lines.
- ``html_entities``: a flood of numeric, named and broken character references.

Header fields (read before the MIME parse; unfolding and RFC 2047 decoding are classic
quadratic traps):

- ``folded_subject_crlf_1mb``, ``folded_subject_lf_1mb``, ``folded_subject_cr_1mb``: a 1 MB
  Subject folded into short continuation lines, with CRLF, bare LF and bare CR line ends
  (naive unfolding appends each line to a growing string).
- ``folded_to_1mb``: a 1 MB To: of addresses, folded (the fields the parser asks for).
- ``folded_content_type_1mb``: a Content-Type folded into 1 MB of parameters (the MIME parser
  and ``get_param`` parse it, several times in the stdlib).
- ``many_header_fields``: 60,000 short header fields (a dict per field, a scan per lookup).
- ``encoded_word_flood``: a 1 MB Subject and From of RFC 2047 encoded words (the stdlib's
  ``decode_header`` is quadratic in the number of words), with odd charsets among them.

The original message (``text/rfc822-headers``, ``message/rfc822``): fields of the mail we
sent, read for the job hints with address regexes:

- ``rfc822_headers_b64_to_65k``: the reported 174 KB base64 part whose decoded To: is one 65 K
  line of addresses.
- ``rfc822_headers_b64_localpart``: a To: that is one 65 K local part with no ``@`` (an
  unanchored address regex restarts at each character and scans to the end).
- ``rfc822_headers_b64_dots``: local parts and domains made of ``.`` and ``-`` runs, where a
  domain pattern ending in an alphanumeric backtracks.
- ``rfc822_headers_b64_many``: 20,000 short addresses in To:, Cc: and Message-ID.
- ``rfc822_headers_angles``: ``<<<<`` runs in To: and From: (angle-address patterns).

MIME structure:

- ``bare_cr_multipart_deep``, ``bare_lf_multipart_deep``: multiparts nested 3,000 deep whose
  lines end in bare CR / bare LF (the boundary-count cap looks for CRLF/LF lines only; the
  stdlib parser recurses per level and hits RecursionError).
- ``bare_cr_multipart_wide``: 40,000 sibling parts with bare-CR line ends.
- ``crlf_multipart_deep``: multiparts nested 5,000 deep with CRLF.
- ``crlf_multipart_wide``: 100,000 tiny parts.
- ``rfc822_chain``: ``message/rfc822`` nested 2,000 times, each a tiny bounce.
- ``rfc822_chain_folded``: the same with a folded Content-Type, which a line-start search for
  ``Content-Type: message/`` does not see (so the original really is parsed as a message).
- ``rfc822_chain_bare_cr``: the chain with bare-CR line ends.
- ``digest_chain``: ``multipart/digest`` nested 3,000 deep (a digest's children default to
  message/rfc822, which the fast MIME parser leaves to the recursive stdlib one).
- ``boundary_prefixes``: nested boundaries that are prefixes of each other (every line is a
  candidate delimiter for every level).

Delivery reports and complaints:

- ``dsn_5000_recipients``: a message/delivery-status with 5,000 recipient blocks and a long
  human-readable part (each recipient is classified, with the human text as context).
- ``dsn_long_diagnostics``: few recipients whose Diagnostic-Code lines are folded to 60 KB of
  pattern bait ("550 5.1.1", ``<`` runs, "try again later", spam words).
- ``dsn_pasted_fields``: delivery-status fields pasted into a text/plain part 30,000 times.
- ``arf_huge_report``: a feedback report with 1 MB of fields, repeated Original-Rcpt-To lines
  and folded values.
- ``ses_json_huge``: an SES JSON notification with 50,000 bounced recipients.

Plain-text notifications (the non-standard scraper reads them line by line, and the phrase
tables and status-code regexes run over what it finds):

- ``text_at_runs``: long runs of ``@`` and ``a@`` and ``@a``.
- ``text_lt_runs``: long runs of ``<``, ``<a@`` and ``(`` followed by "> not found".
- ``text_digit_runs``: runs of digits, dotted digits (``5.5.5.5...``) and reply-code lookalikes.
- ``text_status_lookalikes``: thousands of "550 5.1.1" / "550-5.1.1 <x@y>" / "#5.1.1" lines.
- ``text_long_words``: 990-byte words without spaces, and a base64 part whose decoded text is a
  single 700 KB word.
- ``text_address_tokens``: tens of thousands of address-like tokens ("to a@b", "for x@y.z").
- ``text_inline_intro_runs``: ``a-a-a-a...`` and ``to-to-to...`` runs, where an inline
  "to <address>" pattern restarts its local-part scan at every word.
- ``text_bounce_phrases``: every marker phrase repeated, so each phrase regex runs.
- ``text_many_parts``: 64 text/plain parts of 16 KB each (per-part caps add up).
- ``text_base64_lines``: base64 text/plain whose decoded lines are 60 KB long.
- ``text_qp_soft_breaks``: quoted-printable text of soft line breaks joining into one long line.
- ``text_blank_lines``: thousands of blank-only lines (a ``^\s*`` from each line start runs over
  all the following ones).
- ``text_dotted_capital_i``: text full of U+0130, the one character whose lower case is longer
  (index-preserving lower-casing fell back to a per-character loop).
- ``text_quoted_field_runs``: decoded lines full of ``to: from: message-id:`` (the search for
  the original's fields pasted in the text looked back to the line start at each).
- ``text_remote_host_runs``: ``host a.a.a...`` and ``x.x.x... said:`` lines (host-name and
  reply-line patterns with nested repeats).
- ``short_lines_in_part``, ``short_lines_bare_cr``: a part of 500,000 empty CRLF lines, or a
  million bare-CR ones (every line is a step of the MIME parser's Python loop).
- ``message_slash_bare_cr``, ``message_slash_flood``: hundreds of thousands of ``message/``
  words (with bare CR no line starts exist; the Content-Type renaming looked at each word).
- ``ses_json_deep``: SES JSON nested 400,000 arrays deep (the JSON decoder's recursion limit).
- ``encoded_words_in_original``: RFC 2047 words in the original's fields.
- ``encoded_words_everywhere``: every field the parser reads (eleven at the top level, five of
  the original) is a folded run of encoded words (the stdlib decodes ~0.6 µs per character).
- ``dsn_folded_b64``: a base64 delivery-status whose Diagnostic-Code has 60,000 continuation
  lines (unfolding by appending copies the value per line).
- ``decoded_line_floods``: base64 delivery-status and text parts whose decoded text is tens of
  thousands of short lines (the line cap counts encoded lines; the DSN field reader and the
  pasted-DSN path walk the decoded ones).
- ``repair_boundary_wide``: a multipart whose declared boundary never occurs, 390 parts under
  another one and megabytes of filler (the boundary repair re-parses with the stdlib).
- ``odd_charsets``: parts in utf-7, utf-16, punycode, idna, iso-2022-jp, a charset with a NUL,
  an unknown charset, and bytes invalid in each.

DKIM evidence (the parse worker also canonicalises and hashes every DKIM signature of the report
and of the original it quotes, ``engine.inbound.evidence.gather``):

- ``dkim_outer_wsp_body``: a complaint signed relaxed/relaxed over a body of tab and space runs
  (the worst case of relaxed body canonicalisation): ``dkim_outer_wsp_body`` just under the
  1 MiB hashing cap, ``dkim_outer_wsp_body_over_cap`` far past it.
- ``dkim_original_many_signatures``: an ARF whose original carries 200 signatures, each with an
  ``h=`` of 2,000 names and a folded ``b=``.
- ``dkim_folded_b_tag``: a signature whose ``b=`` is 60 KB of folded base64 with whitespace runs
  (dkimpy's tag regexes backtrack on it).
- ``dkim_many_signed_fields``: ``h=`` names ``received`` 20,000 times over 20,000 Received fields.

Size limits:

- ``max_size_text``: a 10 MiB message (the default limit) of bounce text.
- ``max_size_base64``: a 10 MiB base64 attachment after a short real-looking DSN.
- ``max_size_one_line_lf``: 10 MiB with bare LF, almost no line breaks in the body.
"""

from __future__ import annotations

import base64
import quopri
import random
from collections.abc import Callable

#: The listener's default ``max_message_bytes`` (10 MiB): nothing bigger reaches the parser.
MAX_MESSAGE_BYTES = 10 * 1024 * 1024
#: RFC 5321 §4.5.3.1.6: a text line is at most 1,000 octets including CRLF.
MAX_LINE_BYTES = 998
#: The fixed seed: the corpus is the same bytes on every run.
SEED = 20261206
#: VERP address the messages are sent to (the envelope recipient).
ENVELOPE_TO = "b-1-abcdefghij@bounces.example"

_CRLF = "\r\n"


def _fit(raw: bytes) -> bytes:
    """``raw`` cut after its last CRLF that fits in :data:`MAX_MESSAGE_BYTES`."""
    if len(raw) <= MAX_MESSAGE_BYTES:
        return raw
    return raw[: raw.rindex(b"\r\n", 0, MAX_MESSAGE_BYTES - 1) + 2]


def _wrap(text: str, width: int = 76) -> list[str]:
    """``text`` cut into lines of ``width`` characters (no line ends added)."""
    return [text[i : i + width] for i in range(0, len(text), width)] or [""]


def _b64_lines(data: bytes) -> list[str]:
    return _wrap(base64.b64encode(data).decode("ascii"), 76)


def _fill(unit: str, size: int) -> str:
    """``unit`` repeated to about ``size`` characters."""
    return unit * max(1, size // max(1, len(unit)))


def _lines_of(unit: str, size: int, width: int = 900) -> list[str]:
    """``unit`` repeated to ``size`` characters, cut into legal lines."""
    return _wrap(_fill(unit, size), width)


def _head(subject: str = "Undelivered Mail Returned to Sender", *extra: str) -> list[str]:
    return [
        "Return-Path: <>",
        "Received: from mx.example.net (mx.example.net [192.0.2.1]) by in.example; "
        "Sun, 6 Dec 2026 10:00:00 +0000",
        "From: MAILER-DAEMON@mx.example.net (Mail Delivery System)",
        f"To: {ENVELOPE_TO}",
        f"Subject: {subject}",
        "Date: Sun, 6 Dec 2026 10:00:00 +0000",
        "Message-ID: <hostile.1@mx.example.net>",
        "MIME-Version: 1.0",
        *extra,
    ]


def _join(lines: list[str], eol: str = _CRLF) -> bytes:
    return (eol.join(lines) + eol).encode("utf-8", "surrogateescape")


def _split_ends(lines: list[str], eol: str) -> bytes:
    """The top-level header block and its blank line with CRLF (so the body is found), the
    rest of ``lines`` ended with ``eol``."""
    body_at = lines.index("") + 1
    return _join(lines[:body_at]) + _join(lines[body_at:], eol)


def _multipart(
    parts: list[list[str]],
    *,
    boundary: str = "hostile-boundary",
    subtype: str = "mixed",
    head: list[str] | None = None,
    extra: str = "",
) -> list[str]:
    """A whole message: ``head`` then a multipart of ``parts`` (each: its header + body lines)."""
    lines = list(head if head is not None else _head())
    lines.append(f'Content-Type: multipart/{subtype}; boundary="{boundary}"{extra}')
    lines.append("")
    lines.append("This is a MIME-encapsulated message.")
    for part in parts:
        lines.append(f"--{boundary}")
        lines.extend(part)
    lines.append(f"--{boundary}--")
    return lines


def _text_part(body: list[str], ctype: str = "text/plain; charset=us-ascii") -> list[str]:
    return [f"Content-Type: {ctype}", "", *body]


def _b64_part(data: bytes, ctype: str) -> list[str]:
    return [f"Content-Type: {ctype}", "Content-Transfer-Encoding: base64", "", *_b64_lines(data)]


_NOTICE = [
    "This is the mail system at host mx.example.net.",
    "",
    "I'm sorry to have to inform you that your message could not",
    "be delivered to one or more recipients.",
    "",
    "<someone@example.org>: host mx.example.org[192.0.2.9] said: 550 5.1.1",
    "    <someone@example.org>: Recipient address rejected: User unknown (in reply",
    "    to RCPT TO command)",
    "",
]

_DSN_FIELDS = [
    "Reporting-MTA: dns; mx.example.net",
    "",
    "Final-Recipient: rfc822; someone@example.org",
    "Action: failed",
    "Status: 5.1.1",
    "Remote-MTA: dns; mx.example.org",
    "Diagnostic-Code: smtp; 550 5.1.1 <someone@example.org>: User unknown",
]


def _original(*extra: str) -> list[str]:
    return [
        "From: News <news@sender.example>",
        "To: someone@example.org",
        "Subject: Our newsletter",
        "Message-ID: <j1.abcdef@sender.example>",
        "X-PM-Job-Id: 1",
        *extra,
    ]


def _report(
    notice: list[str], status: list[str] | None = None, original: list[str] | None = None
) -> list[str]:
    """A multipart/report delivery-status message with the given three parts."""
    parts = [_text_part(notice)]
    parts.append(["Content-Type: message/delivery-status", "", *(status or _DSN_FIELDS)])
    parts.append(["Content-Type: text/rfc822-headers", "", *(original or _original())])
    return _multipart(parts, subtype="report", extra="; report-type=delivery-status")


# -- HTML ---------------------------------------------------------------------------------------


def _html_parts(unit: str, parts: int, size: int) -> bytes:
    body = [_text_part(_lines_of(unit, size), "text/html; charset=utf-8") for _ in range(parts)]
    return _join(_multipart(body))


def html_style_flood_15parts(rng: random.Random) -> bytes:
    return _html_parts("<style>p{color:red}", 15, 64_000)


def html_style_unclosed_one(rng: random.Random) -> bytes:
    body = ["<html><body><style", *_lines_of("p { color: red; } x < y ", 960_000), "</body>"]
    return _join(_multipart([_text_part(body, "text/html")]))


def html_script_mismatched(rng: random.Random) -> bytes:
    return _html_parts("<script type=x>var a=1;</style >", 12, 60_000)


def html_header_tags(rng: random.Random) -> bytes:
    return _html_parts("<header class=a><head-x>t</header>", 12, 60_000)


def html_lt_flood(rng: random.Random) -> bytes:
    return _html_parts("a < b <c <<", 15, 64_000)


def html_br_flood(rng: random.Random) -> bytes:
    return _html_parts("<br <br/ < /p <  /div x", 15, 64_000)


def html_nested_tags(rng: random.Random) -> bytes:
    depth = 100_000
    markup = "<div><span>" * depth + "deep" + "</span></div>" * depth
    return _join(_multipart([_text_part(_wrap(markup, 900), "text/html")]))


def html_long_attributes(rng: random.Random) -> bytes:
    value = "".join(rng.choices("abcdef<&;= ", k=300_000))
    markup = f'<html><body><a href="{value}" title="{value}">x</a>' + f"<img alt='{value}'"
    return _join(_multipart([_text_part(_wrap(markup, 900), "text/html")]))


def html_entities(rng: random.Random) -> bytes:
    return _html_parts("&amp;&#99999999;&#x;&nbsp&lt;&#0;&bogus;&#x10FFFF;", 15, 60_000)


# -- header fields ------------------------------------------------------------------------------


def _folded_subject(eol: str) -> bytes:
    words = _fill("word ", 1_000_000)
    head = _head("Undelivered: " + words[:60])
    head = [h for h in head if not h.startswith("Subject:")]
    head.append("Subject: Undelivered Mail Returned to Sender")
    head.extend(" " + line for line in _wrap(words, 70))
    lines = [*head, "Content-Type: text/plain", "", *_NOTICE]
    return _join(lines, eol)


def folded_subject_crlf_1mb(rng: random.Random) -> bytes:
    return _folded_subject(_CRLF)


def folded_subject_lf_1mb(rng: random.Random) -> bytes:
    return _folded_subject("\n")


def folded_subject_cr_1mb(rng: random.Random) -> bytes:
    return _folded_subject("\r")


def folded_to_1mb(rng: random.Random) -> bytes:
    addresses = ", ".join(f"user{i}@example{i % 97}.org" for i in range(40_000))
    head = [h for h in _head() if not h.startswith("To:")]
    head.append("To: " + ENVELOPE_TO + ",")
    head.extend(" " + line for line in _wrap(addresses, 78))
    return _join([*head, "Content-Type: text/plain", "", *_NOTICE])


def folded_content_type_1mb(rng: random.Random) -> bytes:
    params = [f' p{i}="{rng.randrange(10**9)}";' for i in range(45_000)]
    head = [*_head(), "Content-Type: multipart/report; report-type=delivery-status;", *params]
    head.append(' boundary="hostile-boundary"')
    body = ["", "--hostile-boundary", *_text_part(_NOTICE), "--hostile-boundary--"]
    return _join(head + body)


def many_header_fields(rng: random.Random) -> bytes:
    fields = [f"X-F{i}: {rng.randrange(10**6)}" for i in range(60_000)]
    return _join([*_head(), *fields, "Content-Type: text/plain", "", *_NOTICE])


def encoded_word_flood(rng: random.Random) -> bytes:
    charsets = ["utf-8", "iso-8859-1", "x-bogus", "utf-7", "punycode", "idna", "utf-16", "cp1252"]
    words = []
    for i in range(14_000):
        charset = charsets[i % len(charsets)]
        words.append(f"=?{charset}?{'bq'[i % 2]}?{'QUFB' if i % 2 == 0 else 'a=3D_b'}?=")
    head = [h for h in _head() if not h.startswith(("Subject:", "From:"))]
    head.append("Subject: " + words[0])
    head.extend(" " + w for w in words[1:])
    head.append("From: " + words[0])
    head.extend(" " + w for w in words[1:])
    return _join([*head, "Content-Type: text/plain", "", *_NOTICE])


# -- the original message -----------------------------------------------------------------------


def _headers_b64(original: list[str]) -> bytes:
    data = "\r\n".join(original).encode("utf-8") + b"\r\n"
    parts = [_text_part(_NOTICE), ["Content-Type: message/delivery-status", "", *_DSN_FIELDS]]
    parts.append(_b64_part(data, "text/rfc822-headers"))
    return _join(_multipart(parts, subtype="report", extra="; report-type=delivery-status"))


def rfc822_headers_b64_to_65k(rng: random.Random) -> bytes:
    to = ", ".join(f'"User {i}" <user{i}@example.org>' for i in range(2_200))
    return _headers_b64(_original()[:1] + ["To: " + to[:65_000]] + _original()[2:] * 1)


def rfc822_headers_b64_localpart(rng: random.Random) -> bytes:
    local = "".join(rng.choices("abc.+-_", k=65_000))
    return _headers_b64(
        ["From: " + local, "To: " + local, "Subject: x " + local, "Message-ID: " + local]
    )


def rfc822_headers_b64_dots(rng: random.Random) -> bytes:
    run = "a." * 16_000 + "-" * 16_000
    return _headers_b64([f"From: x@{run}", f"To: {run}@{run}", f"Message-ID: <{run}@{run}"])


def rfc822_headers_b64_many(rng: random.Random) -> bytes:
    addresses = ", ".join(f"u{i}@d{i}.example" for i in range(20_000))
    ids = " ".join(f"<{i}@id.example>" for i in range(10_000))
    return _headers_b64(
        [f"To: {addresses}", f"Cc: {addresses}", f"Message-ID: {ids}", f"References: {ids}"]
    )


def rfc822_headers_angles(rng: random.Random) -> bytes:
    run = "<" * 60_000
    original = [f"From: {run}", f"To: {run}a@b", f"Message-ID: {run}", "X-PM-Job-Id: " + run]
    return _headers_b64(original)


# -- MIME structure -----------------------------------------------------------------------------


def _nested(depth: int, eol: str) -> bytes:
    lines = [*_head(), 'Content-Type: multipart/mixed; boundary="b0"', ""]
    body: list[str] = []
    for level in range(1, depth):
        body.append(f"--b{level - 1}")
        body.append(f'Content-Type: multipart/mixed; boundary="b{level}"')
        body.append("")
    body.extend([f"--b{depth - 1}", "Content-Type: text/plain", "", *_NOTICE])
    for level in range(depth - 1, -1, -1):
        body.append(f"--b{level}--")
    # The top-level header block keeps CRLF so the body is reached; the body uses ``eol``.
    return _join(lines) + _join(body, eol)


def bare_cr_multipart_deep(rng: random.Random) -> bytes:
    return _nested(3_000, "\r")


def bare_lf_multipart_deep(rng: random.Random) -> bytes:
    return _nested(3_000, "\n")


def crlf_multipart_deep(rng: random.Random) -> bytes:
    return _nested(5_000, _CRLF)


def bare_cr_multipart_wide(rng: random.Random) -> bytes:
    parts = [["Content-Type: text/plain", "", f"part {i} 550 5.1.1"] for i in range(40_000)]
    lines = _multipart(parts)
    return _split_ends(lines, "\r")


def crlf_multipart_wide(rng: random.Random) -> bytes:
    parts = [["", "x"] for _ in range(100_000)]
    return _join(_multipart(parts, boundary="b"))


def _chain(depth: int, folded: bool, eol: str) -> bytes:
    lines = _head()
    for _ in range(depth):
        if folded:
            lines.extend(["Content-Type:", " message/rfc822", ""])
        else:
            lines.extend(["Content-Type: message/rfc822", ""])
        lines.extend(["From: MAILER-DAEMON@mx.example.net", "Subject: Undelivered"])
    lines.extend(["Content-Type: text/plain", "", *_NOTICE])
    return _split_ends(lines, eol)


def rfc822_chain(rng: random.Random) -> bytes:
    return _chain(2_000, False, _CRLF)


def rfc822_chain_folded(rng: random.Random) -> bytes:
    return _chain(2_000, True, _CRLF)


def rfc822_chain_bare_cr(rng: random.Random) -> bytes:
    return _chain(2_000, True, "\r")


def digest_chain(rng: random.Random) -> bytes:
    depth = 3_000
    lines = [*_head(), 'Content-Type: multipart/digest; boundary="d0"', ""]
    for level in range(1, depth):
        # A digest's child has no Content-Type: it is a message/rfc822 by default, so each
        # level costs the attacker one field and the stdlib parser two or three frames.
        lines.extend(
            [f"--d{level - 1}", "", f'Content-Type: multipart/digest; boundary="d{level}"', ""]
        )
    lines.extend([f"--d{depth - 1}", "", "Content-Type: text/plain", "", *_NOTICE])
    lines.extend(f"--d{level}--" for level in range(depth - 1, -1, -1))
    return _join(lines)


def boundary_prefixes(rng: random.Random) -> bytes:
    depth = 300
    lines = [*_head(), 'Content-Type: multipart/mixed; boundary="b"', ""]
    for level in range(1, depth):
        lines.append("--" + "b" * level)
        lines.append(f'Content-Type: multipart/mixed; boundary="{"b" * (level + 1)}"')
        lines.append("")
    lines.extend(["--" + "b" * depth, "Content-Type: text/plain", "", *_NOTICE])
    lines.extend(["--" + "b" * (level + 1) + "x" for level in range(depth)] * 60)
    return _join(lines)


# -- reports ------------------------------------------------------------------------------------


def dsn_5000_recipients(rng: random.Random) -> bytes:
    status = ["Reporting-MTA: dns; mx.example.net"]
    for i in range(5_000):
        status.extend(
            [
                "",
                f"Final-Recipient: rfc822; user{i}@example.org",
                "Action: failed",
                f"Status: 5.{i % 8}.{i % 10}",
                f"Diagnostic-Code: smtp; 550 5.1.1 <user{i}@example.org> user unknown {i}",
            ]
        )
    notice = _NOTICE + [f"<user{i}@example.org>: 550 5.1.1 user unknown" for i in range(3_000)]
    return _join(_report(notice, status))


def dsn_long_diagnostics(rng: random.Random) -> bytes:
    bait = (
        "550 5.1.1 <<<<<<<< ((((((( try again later rate spam mailbox user "
        "dmarc spf 5.5.5.5.5 host x said: "
    )
    status = ["Reporting-MTA: dns; mx.example.net"]
    for i in range(12):
        status.extend(["", f"Final-Recipient: rfc822; user{i}@example.org", "Action: failed"])
        status.append("Status: 5.0.0")
        status.append("Diagnostic-Code: smtp; 550 5.0.0 refused")
        status.extend(" " + line for line in _lines_of(bait, 60_000))
    return _join(_report(_NOTICE + _lines_of(bait, 200_000), status))


def dsn_pasted_fields(rng: random.Random) -> bytes:
    block = ["Final-Recipient: rfc822; x@example.org", "Action: failed", "Status: 5.1.1", ""]
    text = _NOTICE + block * 30_000
    return _join([*_head(), "Content-Type: text/plain", "", *text])


def arf_huge_report(rng: random.Random) -> bytes:
    fields = ["Feedback-Type: abuse", "User-Agent: Hostile/1.0", "Version: 1"]
    for i in range(12_000):
        fields.append(f"Original-Rcpt-To: <user{i}@example.org>")
        fields.append(f"Reported-URI: http://example.org/{i}")
        fields.append(" continued " + "x" * 60)
    parts = [
        _text_part(["This is an email abuse report."]),
        ["Content-Type: message/feedback-report", "", *fields],
        ["Content-Type: message/rfc822", "", *_original(), "", "body"],
    ]
    head = _head("FW: abuse report")
    return _join(
        _multipart(parts, head=head, subtype="report", extra="; report-type=feedback-report")
    )


def ses_json_huge(rng: random.Random) -> bytes:
    recipients = ",".join(
        f'{{"emailAddress":"u{i}@example.org","status":"5.1.1","diagnosticCode":"smtp; 550 5.1.1 '
        f'user unknown <<<<"}}'
        for i in range(8_000)
    )
    doc = (
        '{"notificationType":"Bounce","bounce":{"bounceType":"Permanent","bounceSubType":'
        f'"General","bouncedRecipients":[{recipients}]}},"mail":{{"messageId":"x"}}}}'
    )
    head = _head("Amazon SES Email Event Notification")
    return _join([*head, "Content-Type: application/json", "", *_wrap(doc, 900)])


# -- plain-text notifications -------------------------------------------------------------------


def _text_message(body: list[str], parts: int = 1) -> bytes:
    return _join(_multipart([_text_part(_NOTICE + body) for _ in range(parts)]))


def text_at_runs(rng: random.Random) -> bytes:
    body = _lines_of("@", 200_000) + _lines_of("a@", 200_000) + _lines_of("@a.", 200_000)
    return _text_message(body)


def text_lt_runs(rng: random.Random) -> bytes:
    body = _lines_of("<", 100_000) + _lines_of("<a@", 100_000) + _lines_of("(", 100_000)
    body += ["> not found :blocked) user unknown"]
    return _text_message(body, 3)


def text_digit_runs(rng: random.Random) -> bytes:
    body = _lines_of("5", 100_000) + _lines_of("5.5.", 100_000) + _lines_of("550-550 ", 100_000)
    return _text_message(body, 3)


def text_status_lookalikes(rng: random.Random) -> bytes:
    units = ["550 5.1.1", "550-5.1.1 <x@y.example>", "(#5.1.1)", "#5.1.1 ", "5.1.1.1.1.1"]
    body = [" ".join(rng.choice(units) for _ in range(40)) for _ in range(5_000)]
    return _text_message(body, 2)


def text_long_words(rng: random.Random) -> bytes:
    word = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=700_000))
    parts = [_text_part(_NOTICE + _wrap(word, 990))]
    parts.append(_b64_part(word.encode("ascii"), "text/plain"))
    return _join(_multipart(parts))


def text_address_tokens(rng: random.Random) -> bytes:
    intros = ["to", "for", "recipient", "user", "mailbox", "an", "a", "para", "do"]
    tokens = [f"{rng.choice(intros)} u{i}@d{i % 50}.example" for i in range(40_000)]
    body = _wrap(" ".join(tokens), 900)
    return _text_message(body)


def text_inline_intro_runs(rng: random.Random) -> bytes:
    body = _lines_of("a-", 300_000) + _lines_of("to-", 300_000) + ["x@y.example"]
    parts = [_text_part(["Delivery failed", *body])]
    parts.append(_b64_part(("a-" * 40_000 + "z@y.example").encode(), "text/plain"))
    return _join(_multipart(parts))


def text_bounce_phrases(rng: random.Random) -> bytes:
    phrases = (
        "undeliverable mailbox full user unknown quota exceeded blocked spamhaus try again "
        "later volume rate dmarc reject spf fail out of office boxbe please click verify link "
        "delivery delayed will retry mailbox unavailable does not exist "
    )
    return _text_message(_lines_of(phrases, 900_000))


def text_many_parts(rng: random.Random) -> bytes:
    unit = "user@example.org: 550 5.1.1 <a@b> user unknown; "
    return _join(_multipart([_text_part(_lines_of(unit, 16_000)) for _ in range(64)]))


def text_base64_lines(rng: random.Random) -> bytes:
    line = "<someone@example.org>: 550 5.1.1 " + "x@y. <<< ((( 5.5.5 " * 3_000
    data = "\n".join([line] * 12).encode("ascii")
    return _join(_multipart([_b64_part(data, "text/plain")] * 3))


def text_qp_soft_breaks(rng: random.Random) -> bytes:
    unit = "a-a@<(5.5.5 to-"
    text = quopri.encodestring(_fill(unit, 600_000).encode("ascii")).decode("ascii")
    part = ["Content-Type: text/plain", "Content-Transfer-Encoding: quoted-printable", ""]
    return _join(_multipart([part + text.splitlines()]))


def odd_charsets(rng: random.Random) -> bytes:
    charsets = [
        "utf-7",
        "utf-16",
        "utf-32",
        "punycode",
        "idna",
        "iso-2022-jp",
        "x-unknown-charset",
        '"\x00"',
        "hz",
        "cp037",
    ]
    parts = []
    for charset in charsets:
        data = rng.randbytes(40_000) + b"+AGEAYQ-" * 5_000
        parts.append(_b64_part(data, f"text/plain; charset={charset}"))
    payload = ("x" * 60 + "-") * 1_000
    parts.append(_b64_part(payload.encode(), "text/plain; charset=punycode"))
    return _join(_multipart(parts))


def text_blank_lines(rng: random.Random) -> bytes:
    blank = [" " * rng.randrange(1, 80) for _ in range(3_000)]
    return _text_message(["Delivery failed", *blank, "<x@y.example>: 550 5.1.1"], 4)


def text_dotted_capital_i(rng: random.Random) -> bytes:
    unit = "İ to: İ from: x@y İ <a@b> 550 5.1.1 "
    data = _fill(unit, 60_000).encode("utf-8")
    parts = [_b64_part(data, "text/plain; charset=utf-8") for _ in range(12)]
    return _join(_multipart(parts))


def text_quoted_field_runs(rng: random.Random) -> bytes:
    line = "Delivery failed\n" + "to: from: subject: message-id: x-pm-job-id: " * 1_500
    parts = [_b64_part(line.encode("ascii"), "text/plain") for _ in range(12)]
    return _join(_multipart(parts))


def text_remote_host_runs(rng: random.Random) -> bytes:
    body = ["Delivery failed", "<x@y.example>: host " + "a." * 400 + " said: 550 5.1.1"]
    body += ["host " + "a-b." * 200 for _ in range(200)]
    body += [f"{'x.' * 300} said: " + "a" * 300 + ":" for _ in range(200)]
    return _text_message(body, 4)


def message_slash_bare_cr(rng: random.Random) -> bytes:
    lines = ["Content-Type: text/plain", "", *_NOTICE]
    lines += _lines_of("Content-Type: message/rfc822 message/global ", 900_000)
    return _join(_head()) + _join(lines, "\r")


def ses_json_deep(rng: random.Random) -> bytes:
    doc = '{"notificationType":"Bounce","bounce":' + "[" * 400_000 + "]" * 400_000 + "}"
    head = _head("Amazon SES Email Event Notification")
    return _join([*head, "Content-Type: application/json", "", *_wrap(doc, 900)])


_READ_FIELDS = (
    "Subject",
    "From",
    "To",
    "Return-Path",
    "In-Reply-To",
    "Delivered-To",
    "X-Original-To",
    "X-Envelope-To",
    "Auto-Submitted",
    "Precedence",
    "X-Precedence",
)


def encoded_words_everywhere(rng: random.Random) -> bytes:
    folded = [" =?x?q?a?= =?a?q??= =?utf-8?b?QQ==?=" * 20 for _ in range(60)]
    head = [h for h in _head() if not h.startswith(_READ_FIELDS)]
    for name in _READ_FIELDS:
        head.extend([f"{name}: =?utf-8?q?x?=", *folded])
    original = []
    for name in ("From", "To", "Subject", "Message-ID", "X-PM-Job-Id"):
        original.extend([f"{name}: =?utf-8?q?x?=", *folded])
    parts = [_text_part(_NOTICE), ["Content-Type: text/rfc822-headers", "", *original]]
    return _join(_multipart(parts, head=head))


def short_lines_in_part(rng: random.Random) -> bytes:
    parts = [_text_part(_NOTICE + [""] * 500_000), _text_part(["x"])]
    return _join(_multipart(parts))


def short_lines_bare_cr(rng: random.Random) -> bytes:
    parts = [_text_part([*_NOTICE, *([""] * 1_000_000)]), _text_part(["x"])]
    lines = _multipart(parts)
    return _split_ends(lines, "\r")


def message_slash_flood(rng: random.Random) -> bytes:
    lines = ["Content-Type: text/plain", "", *_NOTICE]
    lines += _lines_of("message/", 900_000, 896) + _lines_of("message/rfc822 ", 100_000)
    return _join([*_head(), *lines])


def dsn_folded_b64(rng: random.Random) -> bytes:
    status = ["Reporting-MTA: dns; mx.example.net", "", "Final-Recipient: rfc822; x@example.org"]
    status += ["Action: failed", "Status: 5.0.0", "Diagnostic-Code: smtp; 550"]
    status += [" x"] * 60_000
    data = "\n".join(status).encode("ascii")
    parts = [_text_part(_NOTICE), _b64_part(data, "message/delivery-status")]
    return _join(_multipart(parts, subtype="report", extra="; report-type=delivery-status"))


def decoded_line_floods(rng: random.Random) -> bytes:
    fields = "Final-Recipient: rfc822; x@example.org\nAction: failed\nStatus: 5.1.1\n"
    data = (fields + "\n" * 30_000 + "X: y\n" * 6_000).encode("ascii")
    parts = [_text_part(["Final-Recipient: rfc822; y@example.org"])]
    for i in range(12):
        ctype = "message/delivery-status" if i % 2 else "text/plain"
        parts.append(_b64_part(data, ctype))
    return _join(_multipart(parts, subtype="report", extra="; report-type=delivery-status"))


def repair_boundary_wide(rng: random.Random) -> bytes:
    parts = [["Content-Type: text/plain", "", f"part {i}", *_NOTICE] for i in range(390)]
    lines = _multipart(parts, boundary="real")
    lines = [line.replace('boundary="real"', 'boundary="declared"') for line in lines]
    return _fit(_join(lines + _lines_of("filler line ", 8_000_000, 40)))


def encoded_words_in_original(rng: random.Random) -> bytes:
    words = " ".join(f"=?utf-8?q?{'=C3=A9' * 10}?=" for _ in range(3_000))
    original = [f"Subject: {words}", f"From: {words} <news@sender.example>", f"To: {words}"]
    return _headers_b64(original)


# -- size limits --------------------------------------------------------------------------------


def max_size_text(rng: random.Random) -> bytes:
    lines = _NOTICE + _lines_of("<a@b.example>: 550 5.1.1 user unknown; try again later ", 10_000)
    raw = _join([*_head(), "Content-Type: text/plain", "", *lines])
    filler = _lines_of("a < b (x@ 5.5.5 ", MAX_MESSAGE_BYTES - len(raw))
    return _fit(raw + _join(filler))


def max_size_base64(rng: random.Random) -> bytes:
    data = rng.randbytes(7_000_000)
    report = _report(_NOTICE)
    report.insert(-1, "--hostile-boundary")
    report[-1:-1] = _b64_part(data, "application/octet-stream")
    return _fit(_join(report))


def max_size_one_line_lf(rng: random.Random) -> bytes:
    head = "\n".join([*_head(), "Content-Type: text/plain", "", *_NOTICE]) + "\n"
    body = ("550 5.1.1 a@b <" * 700_000)[: MAX_MESSAGE_BYTES - len(head) - 1000]
    return (head + body + "\n").encode("ascii")


# -- DKIM evidence ------------------------------------------------------------------------------


def _dkim_field(domain: str, names: str, b_lines: list[str]) -> list[str]:
    return [
        f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain}; s=sel;",
        f" h={names};",
        " bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;",
        " b=",
        *b_lines,
    ]


def _b_lines(rng: random.Random, count: int) -> list[str]:
    return [" " + base64.b64encode(rng.randbytes(57)).decode("ascii") for _ in range(count)]


def _dkim_wsp_body(rng: random.Random, lines: int) -> bytes:
    # A complaint (the report's own signature is checked for ARF only) from a "reporter".
    head = _dkim_field("reporter.example", "from:to:subject", _b_lines(rng, 4))
    head += _head("FW: abuse report")
    wsp = [" \t " * 150 + "x" + "\t  " * 100 for _ in range(lines)]
    parts = [
        _text_part(["This is an email abuse report.", *wsp]),
        ["Content-Type: message/feedback-report", "", "Feedback-Type: abuse", "Version: 1"],
        ["Content-Type: message/rfc822", "", *_original(), "", "body"],
    ]
    return _join(
        _multipart(parts, head=head, subtype="report", extra="; report-type=feedback-report")
    )


def dkim_outer_wsp_body(rng: random.Random) -> bytes:
    return _dkim_wsp_body(rng, 1_300)  # ~980 KB: hashed, just under the cap


def dkim_outer_wsp_body_over_cap(rng: random.Random) -> bytes:
    return _dkim_wsp_body(rng, 13_000)  # ~9.8 MB: past the cap


def dkim_original_many_signatures(rng: random.Random) -> bytes:
    names = ":".join(rng.choice(("from", "to", "subject", "x-a", "received")) for _ in range(2_000))
    original: list[str] = []
    for _ in range(200):
        original += _dkim_field("sender.example", names[:900], _b_lines(rng, 6))
        original += [f" {chunk}" for chunk in _wrap(names, 900)[1:6]]
    original += _original()
    parts = [
        _text_part(["This is an email abuse report."]),
        ["Content-Type: message/feedback-report", "", "Feedback-Type: abuse", "Version: 1"],
        ["Content-Type: message/rfc822", "", *original, "", "body"],
    ]
    head = _head("FW: abuse report")
    return _join(
        _multipart(parts, head=head, subtype="report", extra="; report-type=feedback-report")
    )


def dkim_folded_b_tag(rng: random.Random) -> bytes:
    b_lines = [f" {line.strip()}{' ' * 40}\t" for line in _b_lines(rng, 800)]
    head = _dkim_field("reporter.example", "from:to:subject", b_lines) + _head()
    return _join([*head, "Content-Type: text/plain", "", *_NOTICE])


def dkim_many_signed_fields(rng: random.Random) -> bytes:
    names = [" received:" * 80 for _ in range(250)]
    head = [
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=reporter.example; s=sel;",
        " h=from:",
        *names,
        " bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=" + "A" * 300,
    ]
    received = [f"Received: from h{i}.example by mx.example; 7 Dec 2026" for i in range(20_000)]
    return _join([*head, *received, *_head(), "Content-Type: text/plain", "", *_NOTICE])


_GENERATORS: tuple[Callable[[random.Random], bytes], ...] = (
    dkim_outer_wsp_body,
    dkim_outer_wsp_body_over_cap,
    dkim_original_many_signatures,
    dkim_folded_b_tag,
    dkim_many_signed_fields,
    html_style_flood_15parts,
    html_style_unclosed_one,
    html_script_mismatched,
    html_header_tags,
    html_lt_flood,
    html_br_flood,
    html_nested_tags,
    html_long_attributes,
    html_entities,
    folded_subject_crlf_1mb,
    folded_subject_lf_1mb,
    folded_subject_cr_1mb,
    folded_to_1mb,
    folded_content_type_1mb,
    many_header_fields,
    encoded_word_flood,
    rfc822_headers_b64_to_65k,
    rfc822_headers_b64_localpart,
    rfc822_headers_b64_dots,
    rfc822_headers_b64_many,
    rfc822_headers_angles,
    bare_cr_multipart_deep,
    bare_lf_multipart_deep,
    bare_cr_multipart_wide,
    crlf_multipart_deep,
    crlf_multipart_wide,
    rfc822_chain,
    rfc822_chain_folded,
    rfc822_chain_bare_cr,
    digest_chain,
    boundary_prefixes,
    dsn_5000_recipients,
    dsn_long_diagnostics,
    dsn_pasted_fields,
    arf_huge_report,
    ses_json_huge,
    text_at_runs,
    text_lt_runs,
    text_digit_runs,
    text_status_lookalikes,
    text_long_words,
    text_address_tokens,
    text_inline_intro_runs,
    text_bounce_phrases,
    text_many_parts,
    text_base64_lines,
    text_qp_soft_breaks,
    odd_charsets,
    text_blank_lines,
    text_dotted_capital_i,
    text_quoted_field_runs,
    text_remote_host_runs,
    message_slash_bare_cr,
    ses_json_deep,
    encoded_words_in_original,
    encoded_words_everywhere,
    short_lines_in_part,
    short_lines_bare_cr,
    message_slash_flood,
    dsn_folded_b64,
    repair_boundary_wide,
    decoded_line_floods,
    max_size_text,
    max_size_base64,
    max_size_one_line_lf,
)
#: Messages whose point is bare LF or bare CR line ends (exempt from the CRLF line-length rule).
BARE_LINE_END_CASES = frozenset(
    {
        "folded_subject_lf_1mb",
        "folded_subject_cr_1mb",
        "bare_cr_multipart_deep",
        "bare_lf_multipart_deep",
        "bare_cr_multipart_wide",
        "rfc822_chain_bare_cr",
        "max_size_one_line_lf",
        "message_slash_bare_cr",
        "short_lines_bare_cr",
    }
)


def hostile_corpus() -> dict[str, bytes]:
    """``{name: raw message}``: every hostile message, the same bytes on every call.

    Each generator gets its own ``random.Random`` seeded from :data:`SEED` and its name, so
    adding a case never changes the others.
    """
    corpus: dict[str, bytes] = {}
    for generate in _GENERATORS:
        name = generate.__name__
        corpus[name] = generate(random.Random(f"{SEED}:{name}"))
    return corpus
