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

import logging
import re

import msgspec

from engine.inbound import autoreply, nonstandard, ses
from engine.inbound.arf import FeedbackType, jmrp_recipient, parse_feedback_report
from engine.inbound.classify import classify
from engine.inbound.dsn import parse_delivery_status
from engine.inbound.hints import job_hints
from engine.inbound.htmltext import MAX_HTML_CHARS, html_to_text
from engine.inbound.message import (
    Headers,
    Message,
    iter_parts,
    load,
    original_headers,
    part_text,
    report_type_of,
)
from engine.inbound.original import original_head
from engine.inbound.patterns import load_patterns, normalise
from engine.inbound.recipients import (
    ACTION_FAILED,
    View,
    dsn_recipients,
    failed_header,
    nonstandard_recipients,
    real_recipients,
)
from engine.inbound.report import (
    BounceKind,
    BounceReport,
    Feedback,
    JobHints,
    Reason,
    Recipient,
)
from engine.inbound.textscan import addresses_in, first_address

log = logging.getLogger(__name__)

_STATUS_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_FEEDBACK_TYPE = "message/feedback-report"
_ORIGINAL_TYPES = frozenset(
    {"message/rfc822", "message/global", "text/rfc822-headers", "text/global-headers"}
)
_REPORT_DELIVERY = "delivery-status"
_REPORT_FEEDBACK = "feedback-report"
#: Feedback types that report a failed authentication check, not a recipient's complaint.
_NOT_COMPLAINTS = frozenset({FeedbackType.AUTH_FAILURE.value, FeedbackType.DMARC.value})
_NOREPLY_LOCALPARTS = frozenset(
    {"noreply", "no-reply", "donotreply", "do-not-reply", "mailer-daemon", "postmaster"}
)
#: Headers of the bounce that name us (the VERP address), never the failed recipient.
_OUR_ADDRESS_HEADERS = ("To", "Return-Path", "Delivered-To", "X-Original-To", "X-Envelope-To")
#: Reasons an auto-reply may give that make it a bounce of its own sender.
_DEAD_MAILBOX = frozenset({Reason.USERUNKNOWN, Reason.SUSPEND, Reason.HASMOVED})
#: Subjects of feedback loops that predate ARF and attach the reported message as it was.
_LEGACY_FBL = re.compile(r"^(?:client tos notification|complaint about message from )")
_BULK_PRECEDENCE = frozenset({"bulk", "list"})
_PASTED_FEEDBACK = re.compile(r"(?:^|\n)[Ff]eedback-[Tt]ype:[ \t]*[A-Za-z]")
# Text every match of the pattern above holds: a C-speed "in" check spares the regex, which
# starts with an alternative and so tries every position of the text.
_PASTED_FEEDBACK_LITERAL = "eedback-"
#: Characters of the notification read for marker phrases.
_HEAD_CHARS = 3000


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
    hints = job_hints(heads, parts.original, body, note, envelope_to)
    # Marker phrases are matched against this normalised view, computed once.
    view = View(normalise(subject), normalise(from_header), normalise(note[:_HEAD_CHARS]))

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
            status = real_recipients(status, exclude, hints)
            recipients = dsn_recipients(status, scraped, note)
            if recipients:
                return _finish(_report(BounceKind.DSN, recipients), hints, subject, defects)

    refusal = _is_list_refusal(heads, view, daemon)
    if refusal or _looks_like_bounce(heads, view, daemon):
        listed = failed_header(heads, exclude, list_address=refusal)
        recipients = nonstandard_recipients(body, note, view, scraped, hints, listed, exclude)
        if recipients:
            return _finish(_report(BounceKind.NONSTANDARD, recipients), hints, subject, defects)

    if autoreply.is_autoreply(heads, view.subject, view.head):
        dead = _dead_mailbox_reply(from_header, note, view)
        if dead is not None:
            return _finish(_report(BounceKind.NONSTANDARD, [dead]), hints, subject, defects)
        return _finish(_autoreply(parts, from_header, hints), hints, subject, defects)
    return _finish(BounceReport(kind=BounceKind.UNKNOWN), hints, subject, defects)


def _dead_mailbox_reply(from_header: str, note: str, view: View) -> Recipient | None:
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
        action=ACTION_FAILED,
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
            parts.notes.append(html_to_text(markup[:budget]))
            budget -= len(markup)
    return parts


def _excluded(heads: Headers, from_header: str, hints: JobHints) -> frozenset[str]:
    """Addresses that are never the failed recipient: ours, the reporter's, the daemon's."""
    excluded = {a.lower() for a in addresses_in(from_header)}
    for name in _OUR_ADDRESS_HEADERS:
        excluded.update(a.lower() for a in addresses_in(heads.get(name)))
    for value in (hints.envelope_to, hints.original_from):
        if value:
            excluded.add(value.lower())
    return frozenset(excluded)


def _looks_like_bounce(heads: Headers, view: View, daemon: bool) -> bool:
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


def _is_list_refusal(heads: Headers, view: View, daemon: bool) -> bool:
    """A list manager refusing the post: its robot (or a list header) plus a refusal text."""
    if not nonstandard.is_list_refusal(f"{view.subject} {view.head}"):
        return False
    sender = first_address(heads.get("From")) or ""
    return (
        daemon
        or nonstandard.is_robot_address(sender)
        or nonstandard.list_headers_present(heads.has)
    )


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
