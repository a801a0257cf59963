"""``parse_bounce``: one inbound message (bytes) -> :class:`BounceReport`. Never raises.

Order of reading, most structured first:

1. an Amazon SES JSON notification;
2. an RFC 5965 feedback report (complaint);
3. a challenge-response screen (Boxbe & co. send a DSN, but the address is alive);
4. an RFC 3464/6533 delivery-status report, its diagnostics completed from the human text;
5. a non-standard bounce, read from the notification text;
6. an RFC 3834 automatic reply;
7. otherwise ``unknown`` with no recipients.
"""

from __future__ import annotations

import html
import logging
import re
from typing import NamedTuple

import msgspec

from engine.inbound import autoreply, nonstandard, ses
from engine.inbound.arf import FeedbackType, jmrp_recipient, parse_feedback_report
from engine.inbound.classify import classify, clean_status
from engine.inbound.dsn import DeliveryStatus, is_internal_address, parse_delivery_status
from engine.inbound.message import (
    MAX_QUOTED_CHARS,
    Headers,
    Message,
    addresses_in,
    first_address,
    iter_parts,
    load,
    original_headers,
    part_text,
    quoted_field,
    report_type_of,
    same_length_lower,
)
from engine.inbound.original import original_head
from engine.inbound.patterns import load_patterns, normalise
from engine.inbound.report import (
    BounceKind,
    BounceReport,
    Feedback,
    JobHints,
    Reason,
    Recipient,
)

log = logging.getLogger(__name__)

_STATUS_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_FEEDBACK_TYPE = "message/feedback-report"
_ORIGINAL_TYPES = frozenset(
    {"message/rfc822", "message/global", "text/rfc822-headers", "text/global-headers"}
)
_REPORT_DELIVERY = "delivery-status"
_REPORT_FEEDBACK = "feedback-report"
_JOB_HEADER = "X-PM-Job-Id"
_ACTION_DELAYED = "delayed"
_ACTION_FAILED = "failed"
_SMTP_DIAGNOSTIC = "SMTP"
#: Feedback types that report a failed authentication check, not a recipient's complaint.
_NOT_COMPLAINTS = frozenset({FeedbackType.AUTH_FAILURE.value, FeedbackType.DMARC.value})
_NOREPLY_LOCALPARTS = frozenset(
    {"noreply", "no-reply", "donotreply", "do-not-reply", "mailer-daemon", "postmaster"}
)
#: Headers of the bounce that name us (the VERP address), never the failed recipient.
_OUR_ADDRESS_HEADERS = ("To", "Return-Path", "Delivered-To", "X-Original-To", "X-Envelope-To")
_DELAY_KEEPS = frozenset(
    {
        Reason.MAILBOXFULL,
        Reason.SPEEDING,
        Reason.TOOMANYCONN,
        Reason.NETWORKERROR,
        Reason.SYSTEMFULL,
        Reason.BADREPUTATION,
        Reason.HOSTUNKNOWN,
    }
)
#: "Returned mail: <cause>" (Sendmail, V5 sendmail, Bigfoot ...), the subject in normalised form.
_SUBJECT_CAUSE = re.compile(r"returned mail: (.{3,80})")
#: Addresses taken from a subject at most (a notice names one or two there).
_SUBJECT_ADDRESSES = 5
#: Reasons an auto-reply may give that make it a bounce of its own sender.
_DEAD_MAILBOX = frozenset({Reason.USERUNKNOWN, Reason.SUSPEND, Reason.HASMOVED})
_WEAK_REASONS = frozenset({Reason.ONHOLD, Reason.UNDEFINED})
#: Subjects of feedback loops that predate ARF and attach the reported message as it was.
_LEGACY_FBL = re.compile(r"^(?:client tos notification|complaint about message from )")
_BULK_PRECEDENCE = frozenset({"bulk", "list"})
_PASTED_FEEDBACK = re.compile(r"(?:^|\n)[Ff]eedback-[Tt]ype:[ \t]*[A-Za-z]")
_PASTED_DSN = re.compile(r"(?:^|\n)(?:[Ff]inal|[Oo]riginal)-[Rr]ecipient:")
# Text every match of the pattern above holds: a C-speed "in" check spares the regex, which
# starts with an alternative and so tries every position of the text.
_PASTED_FEEDBACK_LITERAL = "eedback-"
_PASTED_DSN_LITERAL = "ecipient:"
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
#: Characters of the notification read for marker phrases.
_HEAD_CHARS = 3000
#: Characters of HTML markup converted to text, all parts together (real notices: a few KB to
#: tens of KB; the text read from the notification is cut shorter still).
MAX_HTML_CHARS = 128 * 1024


class _View(NamedTuple):
    """Normalised (lower-case, whitespace-collapsed) text the marker phrases are matched on."""

    subject: str
    sender: str
    head: str


_HTML_BREAKS = re.compile(r"<\s*(?:br|/p|/div|/tr|/li|/h\d)[^>]*>", re.IGNORECASE)
_HTML_TAGS = re.compile(r"<[^>]*>")
#: The opening of an element whose content is hidden: ``<(style|script|head)[^>]*>.*?</\1\s*>``
#: (IGNORECASE, DOTALL) is what :func:`_drop_hidden` removes, without that regex's quadratic
#: retries (each unclosed ``<style>`` searched to the end of the text: 71 s for 960 KB).
_HIDDEN_OPEN = re.compile(r"<(style|script|head)", re.IGNORECASE)
_CLOSE_REST = re.compile(r"\s*>")


class _Parts:
    """What the MIME walk found, sorted by role."""

    __slots__ = ("feedback", "notes", "original", "original_head", "statuses")

    def __init__(self) -> None:
        self.statuses: list[str] = []
        self.feedback: list[str] = []
        self.notes: list[str] = []
        self.original: Headers | None = None
        self.original_head: bytes | None = None


def parse_bounce(raw: bytes, envelope_to: str | None = None) -> BounceReport:
    """Understand one inbound message: a bounce, a complaint, an auto-reply or nothing.

    ``envelope_to`` is the SMTP RCPT TO the listener received (the VERP address); it is returned
    in ``report.hints`` for the effects layer, which checks its HMAC. No input makes it raise:
    what cannot be understood yields ``kind="unknown"`` with the cause in ``defects``. The one
    exception is a deployment error: a missing or broken pattern file raises ConfigError (on
    the first call) instead of silently classifying nothing.
    """
    load_patterns()  # cached; outside the guard so a deployment error is not taken for input
    try:
        return _parse(raw, envelope_to)
    except Exception as exc:  # last-resort guard: a bounce must never crash the listener
        log.warning("bounce parse failed", extra={"error": repr(exc)[:200]})
        return BounceReport(
            kind=BounceKind.UNKNOWN,
            hints=JobHints(envelope_to=envelope_to),
            defects=(f"parser error: {type(exc).__name__}",),
        )


def _parse(raw: bytes, envelope_to: str | None) -> BounceReport:
    msg, heads, defects, known_report_type = load(raw)
    parts = _collect(msg)
    report = _read(heads, parts, defects, known_report_type, msg, envelope_to)
    if parts.original_head is None:
        return report
    return msgspec.structs.replace(report, original_head=parts.original_head)


def _read(
    heads: Headers,
    parts: _Parts,
    defects: tuple[str, ...],
    known_report_type: str | None,
    msg: Message,
    envelope_to: str | None,
) -> BounceReport:
    subject = heads.get("Subject")
    from_header = heads.get("From")
    body = "\n\n".join(parts.notes)
    note = nonstandard.notification_body(body)
    hints = _hints(heads, parts, body, note, envelope_to)
    # Marker phrases are matched against this normalised view, computed once.
    view = _View(normalise(subject), normalise(from_header), normalise(note[:_HEAD_CHARS]))

    if ses.looks_like_ses_json(body):
        report = ses.parse_ses_json(body)
        if report is not None:
            return _finish(report, hints, subject, defects, prefer_own=True)

    report_type = report_type_of(msg) if known_report_type is None else known_report_type
    complaint = _any_complaint(heads, parts, report_type, hints)
    if complaint is not None:
        return _finish(complaint, hints, subject, defects)

    # A message without any From field is not an MTA's notice (they all sign theirs); an
    # empty one ("<>") is.
    daemon = heads.has("From") and nonstandard.is_daemon_sender(from_header)
    if not daemon and autoreply.is_challenge(f"{view.sender} {view.subject} {view.head}"):
        return _finish(_autoreply(parts, from_header, hints), hints, subject, defects)

    exclude = _excluded(heads, from_header, hints)
    scraped = {r.address.lower(): r for r in nonstandard.scrape(note, exclude)} if note else {}
    if parts.statuses or report_type == _REPORT_DELIVERY:
        status = parse_delivery_status("\n\n".join(parts.statuses))
        if status.recipients:
            status = _real_recipients(status, exclude, hints)
            recipients = _dsn_recipients(status, scraped, note)
            if recipients:
                return _finish(_report(BounceKind.DSN, recipients), hints, subject, defects)

    refusal = _is_list_refusal(heads, view, daemon)
    if refusal or _looks_like_bounce(heads, view, daemon):
        listed = _failed_header(heads, exclude, list_address=refusal)
        recipients = _nonstandard_recipients(body, note, view, scraped, hints, listed, exclude)
        if recipients:
            return _finish(_report(BounceKind.NONSTANDARD, recipients), hints, subject, defects)

    if autoreply.is_autoreply(heads, view.subject, view.head):
        dead = _dead_mailbox_reply(from_header, note, view)
        if dead is not None:
            return _finish(_report(BounceKind.NONSTANDARD, [dead]), hints, subject, defects)
        return _finish(_autoreply(parts, from_header, hints), hints, subject, defects)
    return _finish(BounceReport(kind=BounceKind.UNKNOWN), hints, subject, defects)


def _dead_mailbox_reply(from_header: str, note: str, view: _View) -> Recipient | None:
    """An automatic reply that is in fact a bounce: the mailbox answers that it no longer
    exists or is disabled and that the message was not delivered. The responder is the
    failed address."""
    if not nonstandard.has_bounce_markers(view.head):
        return None
    sender = first_address(from_header)
    if not sender or nonstandard.is_robot_address(sender):
        return None
    text = " ".join(note[: nonstandard.MAX_FALLBACK_CHARS].split())
    result = classify(None, None, text, action=None, permanent=True)
    if result.reason not in _DEAD_MAILBOX:
        return None
    return Recipient(
        address=sender,
        status=result.status,
        reply_code=result.reply_code,
        reason=result.reason,
        hard=result.hard,
        diagnostic=text or None,
        remote_mta=None,
        action=_ACTION_FAILED,
        rule=f"format:dead-mailbox-reply+{result.rule}",
    )


def _any_complaint(
    heads: Headers, parts: _Parts, report_type: str | None, hints: JobHints
) -> BounceReport | None:
    """An RFC 5965 report, feedback fields pasted in plain text, a Microsoft JMRP complaint or
    an AOL pre-ARF one."""
    if not parts.feedback and not parts.statuses:
        # Feedback fields pasted into a text part by a small FBL (no message/feedback-report
        # part): still a complaint, never the auto-reply its Auto-Submitted header suggests.
        pasted = next((n for n in parts.notes if _pasted_feedback(n[:_HEAD_CHARS])), None)
        if pasted is not None:
            parts.feedback.append(pasted[:_HEAD_CHARS])
    if parts.feedback or report_type == _REPORT_FEEDBACK:
        return _complaint(parts, hints)
    if not parts.statuses:
        reporter = jmrp_recipient(heads, parts.original)
        if (
            reporter is None
            and parts.original is not None
            and _LEGACY_FBL.search(normalise(heads.get("Subject")))
        ):
            reporter = ""  # AOL's pre-ARF "Client TOS Notification": the original's To
        if reporter is not None:
            return _jmrp_complaint(reporter, hints)
    return None


def _pasted_feedback(text: str) -> bool:
    return _PASTED_FEEDBACK_LITERAL in text and _PASTED_FEEDBACK.search(text) is not None


def _collect(msg: Message) -> _Parts:
    parts = _Parts()
    html_notes: list[str] = []
    for part, ctype, inside, payload in iter_parts(msg):
        if ctype in _ORIGINAL_TYPES:
            if parts.original is None and not inside:
                parts.original = original_headers(part, ctype, payload)
                parts.original_head = original_head(part, payload)
            continue
        if inside or ctype.startswith("multipart/"):
            continue
        if ctype in _STATUS_TYPES:
            parts.statuses.append(part_text(part, payload))
        elif ctype == _FEEDBACK_TYPE:
            parts.feedback.append(part_text(part, payload))
        elif ctype == "text/html":
            html_notes.append(part_text(part, payload))
        elif ctype.startswith("text/") or ctype == "application/json":
            parts.notes.append(part_text(part, payload))
    if not parts.notes and html_notes:
        budget = MAX_HTML_CHARS
        for markup in html_notes:
            if budget <= 0:
                break
            parts.notes.append(_html_to_text(markup[:budget]))
            budget -= len(markup)
    return parts


def _html_to_text(markup: str) -> str:
    text = _drop_hidden(markup)
    text = _sub_tags(_HTML_BREAKS, "\n", text)
    return html.unescape(_sub_tags(_HTML_TAGS, " ", text))


def _sub_tags(pattern: re.Pattern[str], replacement: str, text: str) -> str:
    """``pattern.sub(replacement, text)`` for a pattern whose matches end at a ``>``.

    No match lies after the last ``>``; searching there anyway costs a scan to the end from
    every ``<`` (quadratic in a flood of ``<``).
    """
    end = text.rfind(">") + 1
    return pattern.sub(replacement, text[:end]) + text[end:]


def _drop_hidden(markup: str) -> str:
    """``markup`` with each ``<style|script|head ...>...</same>`` element replaced by a space.

    The same matches, leftmost first, as the regex in the comment on :data:`_HIDDEN_OPEN`, in
    linear time: the first ``>`` after an opening and, per element name, the position after
    which no closing tag remains are remembered instead of being searched again.
    """
    lowered = same_length_lower(markup)
    pieces: list[str] = []
    done = position = 0
    tag_end = -1  # the first ">" at or after the current opening's name
    no_close_from: dict[str, int] = {}
    while (opening := _HIDDEN_OPEN.search(markup, position)) is not None:
        name = opening.group(1).lower()
        if tag_end < opening.end():
            tag_end = markup.find(">", opening.end())
            if tag_end < 0:
                break  # no ">" left: no later opening can complete either
        end = _close_end(lowered, name, tag_end + 1, no_close_from)
        if end < 0:
            position = opening.start() + 1
            continue
        pieces.append(markup[done : opening.start()])
        pieces.append(" ")
        done = position = end
    if not pieces:
        return markup
    pieces.append(markup[done:])
    return "".join(pieces)


def _close_end(lowered: str, name: str, start: int, no_close_from: dict[str, int]) -> int:
    """End of the first ``</name\\s*>`` at or after ``start``, or -1 (remembered per name)."""
    if start >= no_close_from.get(name, len(lowered) + 1):
        return -1
    closing = "</" + name
    at = lowered.find(closing, start)
    while at >= 0:
        rest = _CLOSE_REST.match(lowered, at + len(closing))
        if rest is not None:
            return rest.end()
        at = lowered.find(closing, at + len(closing))
    no_close_from[name] = start
    return -1


def _hints(
    heads: Headers, parts: _Parts, body: str, note: str, envelope_to: str | None
) -> JobHints:
    found: dict[str, str | None] = dict.fromkeys(_QUOTED_FIELDS)
    original = parts.original
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


def _excluded(heads: Headers, from_header: str, hints: JobHints) -> frozenset[str]:
    """Addresses that are never the failed recipient: ours, the reporter's, the daemon's."""
    excluded = {a.lower() for a in addresses_in(from_header)}
    for name in _OUR_ADDRESS_HEADERS:
        excluded.update(a.lower() for a in addresses_in(heads.get(name)))
    for value in (hints.envelope_to, hints.original_from):
        if value:
            excluded.add(value.lower())
    return frozenset(excluded)


def _looks_like_bounce(heads: Headers, view: _View, daemon: bool) -> bool:
    if daemon:
        return True
    if heads.has("List-Unsubscribe") or heads.get("Precedence").lower() in _BULK_PRECEDENCE:
        # A newsletter or list post that talks about bounces: mail systems never send their
        # notices as bulk mail with an unsubscribe link.
        return False
    subject_says = nonstandard.has_bounce_markers(view.subject)
    body_says = nonstandard.has_bounce_markers(view.head)
    if subject_says and body_says:
        return True
    null_sender = heads.has("Return-Path") and heads.get("Return-Path") in ("<>", "")
    return null_sender and (subject_says or body_says)


def _is_list_refusal(heads: Headers, view: _View, daemon: bool) -> bool:
    """A list manager refusing the post: its robot (or a list header) plus a refusal text."""
    if not nonstandard.is_list_refusal(f"{view.subject} {view.head}"):
        return False
    sender = first_address(heads.get("From")) or ""
    return (
        daemon
        or nonstandard.is_robot_address(sender)
        or nonstandard.list_headers_present(heads.has)
    )


def _failed_header(heads: Headers, exclude: frozenset[str], *, list_address: bool) -> list[str]:
    """X-Failed-Recipients (Exim, Google and others that write no DSN part), else for a list
    refusal the list's own post address (X-BeenThere)."""
    names = ["X-Failed-Recipients"] + (["X-BeenThere"] if list_address else [])
    for name in names:
        found = [
            a
            for a in addresses_in(heads.get(name))[: nonstandard.MAX_RECIPIENTS]
            if not nonstandard.not_a_recipient(a, exclude)
        ]
        if found:
            return found
    return []


def _real_recipients(
    status: DeliveryStatus, exclude: frozenset[str], hints: JobHints
) -> DeliveryStatus:
    """The report's recipients less ours (the VERP address, the original sender, a list robot,
    the reporting daemon), with a lone internal Final-Recipient that has no Original-Recipient
    replaced by the original message's To (the address the sender wrote)."""
    kept = [
        entry
        for entry in status.recipients
        if not nonstandard.not_a_recipient(entry.address, exclude)
    ]
    if (
        len(kept) == 1
        and is_internal_address(kept[0].address)
        and hints.original_to
        and not is_internal_address(hints.original_to)
        and hints.original_to.lower() not in exclude
    ):
        kept = [msgspec.structs.replace(kept[0], address=hints.original_to)]
    # A bare local name (LOCAL;jdoe) nobody could replace is no address to suppress.
    kept = [entry for entry in kept if "@" in entry.address]
    if len(kept) == len(status.recipients) and kept[:1] == list(status.recipients[:1]):
        return status
    return msgspec.structs.replace(status, recipients=tuple(kept))


def _dsn_recipients(
    status: DeliveryStatus, scraped: dict[str, nonstandard.ScrapedRecipient], note: str
) -> list[Recipient]:
    recipients: list[Recipient] = []
    for entry in status.recipients:
        extra = scraped.get(entry.address.lower())
        if extra is None and len(status.recipients) == 1 and len(scraped) == 1:
            extra = next(iter(scraped.values()))
        diagnostic = entry.diagnostic or (extra.diagnostic if extra else None)
        remote = entry.remote_mta or nonstandard.remote_host(diagnostic)
        result = classify(
            clean_status(entry.status),
            None,
            diagnostic,
            action=entry.action,
            context=f"{extra.diagnostic} {note}" if extra else note,
            # A local verdict (X-Notes, X-Unix ...) is the reporting MTA's own directory
            # lookup, not a remote filter's answer: it needs no RCPT transcript to be believed.
            rcpt_evidence=entry.diagnostic_type in (None, _SMTP_DIAGNOSTIC),
            diagnostic_type=entry.diagnostic_type,
        )
        recipients.append(
            Recipient(
                address=entry.address,
                status=result.status,
                reply_code=result.reply_code,
                reason=result.reason,
                hard=result.hard,
                diagnostic=diagnostic,
                remote_mta=remote,
                action=entry.action,
                rule=result.rule,
            )
        )
    return recipients


def _nonstandard_recipients(
    body: str,
    note: str,
    view: _View,
    scraped: dict[str, nonstandard.ScrapedRecipient],
    hints: JobHints,
    listed: list[str],
    exclude: frozenset[str],
) -> list[Recipient]:
    delayed = nonstandard.is_delay_notice(view.subject, view.head)
    action = _ACTION_DELAYED if delayed else _ACTION_FAILED
    found = list(scraped.values())
    if not found and _PASTED_DSN_LITERAL in body and _PASTED_DSN.search(body) is not None:
        pasted = _real_recipients(parse_delivery_status(body), exclude, hints)
        return _dsn_recipients(pasted, {}, note) if pasted.recipients else []
    text = " ".join(note[: nonstandard.MAX_FALLBACK_CHARS].split())
    if not found and not listed:
        # Named only in the subject ("Undeliverable mail: a@b", "Delivery failure (a@b)").
        listed = [
            a
            for a in addresses_in(view.subject)[:_SUBJECT_ADDRESSES]
            if not nonstandard.not_a_recipient(a, exclude)
        ]
    if not found and listed:
        # Named only in a header (X-Failed-Recipients): the whole notice is the diagnostic.
        found = [nonstandard.ScrapedRecipient(a, text or None, None) for a in listed]
    if not found and hints.original_to:
        # No recipient named in the text (an AOL screen name, a terse notice): the original To.
        found = [
            nonstandard.ScrapedRecipient(hints.original_to, text or None, None),
        ]
    recipients: list[Recipient] = []
    cause = _SUBJECT_CAUSE.match(view.subject)
    for item in found:
        result = classify(None, None, item.diagnostic, action=None, permanent=not delayed)
        if result.reason in _WEAK_REASONS and cause is not None:
            # Sendmail and its heirs name the cause in the subject ("Returned mail: User
            # unknown") when the text only quotes a bare reply.
            named = classify(
                None,
                result.reply_code,
                f"{item.diagnostic or ''} {cause.group(1)}",
                action=None,
                permanent=not delayed,
            )
            if named.reason not in _WEAK_REASONS:
                result = msgspec.structs.replace(named, rule=f"format:subject+{named.rule}")
        reason, rule = result.reason, result.rule
        if delayed and reason not in _DELAY_KEEPS:
            # A "still trying" warning: the cause is a delay unless the text names a
            # reason that explains one (mailbox full, rate limits, network trouble).
            reason, rule = Reason.EXPIRED, f"format:delay-notice+{rule}"
        recipients.append(
            Recipient(
                address=item.address,
                status=result.status,
                reply_code=result.reply_code,
                reason=reason,
                hard=result.hard and not delayed,
                diagnostic=item.diagnostic,
                remote_mta=item.remote_mta,
                action=action,
                rule=rule,
            )
        )
    return recipients


def _complaint(parts: _Parts, hints: JobHints) -> BounceReport:
    feedback = parse_feedback_report(parts.feedback[0]) if parts.feedback else Feedback("abuse")
    if feedback.feedback_type in _NOT_COMPLAINTS:
        # A DMARC/authentication failure report (RFC 6591) is about our signature, not a
        # person's opinion: no recipient complained.
        return BounceReport(kind=BounceKind.ARF, feedback=feedback)
    addresses = list(feedback.original_rcpt_to)
    if not addresses and hints.original_to:
        addresses = [hints.original_to]
    recipients = tuple(
        Recipient(a, None, None, Reason.FEEDBACK, False, None, None, rule="format:arf")
        for a in addresses
    )
    return BounceReport(kind=BounceKind.ARF, recipients=recipients, feedback=feedback)


def _jmrp_complaint(reporter: str, hints: JobHints) -> BounceReport:
    address = reporter or hints.original_to
    recipients = (
        (Recipient(address, None, None, Reason.FEEDBACK, False, None, None, rule="format:jmrp"),)
        if address
        else ()
    )
    return BounceReport(
        kind=BounceKind.ARF, recipients=recipients, feedback=Feedback(FeedbackType.ABUSE.value)
    )


def _autoreply(parts: _Parts, from_header: str, hints: JobHints) -> BounceReport:
    address: str | None = None
    if parts.statuses:
        status = parse_delivery_status("\n\n".join(parts.statuses))
        if status.recipients:
            address = status.recipients[0].address
    if address is None:
        sender = first_address(from_header)
        if sender and sender.split("@")[0].lower() not in _NOREPLY_LOCALPARTS:
            address = sender
    if address is None:
        address = hints.original_to
    recipients: tuple[Recipient, ...] = ()
    if address:
        recipients = (
            Recipient(
                address, None, None, Reason.VACATION, False, None, None, rule="format:autoreply"
            ),
        )
    return BounceReport(kind=BounceKind.AUTOREPLY, recipients=recipients)


def _report(kind: BounceKind, recipients: list[Recipient]) -> BounceReport:
    return BounceReport(kind=kind, recipients=tuple(recipients))


def _finish(
    report: BounceReport,
    hints: JobHints,
    subject: str,
    defects: tuple[str, ...],
    *,
    prefer_own: bool = False,
) -> BounceReport:
    """Attach the job hints, subject and defects the format-specific readers do not know."""
    merged = hints
    if prefer_own:
        own = report.hints
        merged = JobHints(
            envelope_to=hints.envelope_to,
            job_id=own.job_id or hints.job_id,
            message_id=own.message_id or hints.message_id,
            original_from=own.original_from or hints.original_from,
            original_to=own.original_to or hints.original_to,
            original_subject=own.original_subject or hints.original_subject,
        )
    return BounceReport(
        kind=report.kind,
        recipients=report.recipients,
        feedback=report.feedback,
        hints=merged,
        subject=subject or None,
        defects=defects + report.defects,
    )
