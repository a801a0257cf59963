"""Amazon SES bounce and complaint notifications delivered as JSON (directly or wrapped in SNS).

SES mails a classic DSN for bounces too (handled by the DSN path); this reads the JSON form that
SES/SNS "email-json" subscriptions and event destinations send, where the recipients, status
and diagnostic code are structured fields.
"""

from __future__ import annotations

from typing import Any

import msgspec

from engine.inbound.classify import classify, clean_status
from engine.inbound.dsn import decode_address
from engine.inbound.reasons import HARD_REASONS
from engine.inbound.report import (
    WEAK_REASONS,
    BounceKind,
    BounceReport,
    Feedback,
    JobHints,
    Reason,
    Recipient,
)

#: SES bounce sub-types that name the reason outright (SES docs, "Bounce types").
_SUBTYPE_REASONS: dict[str, Reason] = {
    "suppressed": Reason.SUPPRESSED,
    "onaccountsuppressionlist": Reason.SUPPRESSED,
    "noemail": Reason.USERUNKNOWN,
    "mailboxfull": Reason.MAILBOXFULL,
    "messagetoolarge": Reason.MESGTOOBIG,
    "contentrejected": Reason.CONTENTERROR,
    "attachmentrejected": Reason.POLICYVIOLATION,
}
_ALWAYS_SUBTYPE = frozenset({Reason.SUPPRESSED})
_MAX_RECIPIENTS = 500
_PERMANENT = "permanent"


def looks_like_ses_json(text: str) -> bool:
    """Cheap pre-check before decoding: a JSON object naming an SES notification type."""
    head = text.lstrip()[:4096]
    return head.startswith("{") and ("notificationType" in head or "eventType" in head)


def parse_ses_json(text: str) -> BounceReport | None:
    """A report from an SES JSON notification, or None when ``text`` is not one."""
    doc = _decode_object(text.strip())
    if doc is None:
        # SNS "email" subscriptions append an unsubscribe footer ("--\nIf you wish to stop
        # receiving notifications ...") after the JSON: read up to its last closing brace.
        end = text.rfind("}")
        doc = _decode_object(text[: end + 1].strip()) if end > 0 else None
    if doc is None:
        return None
    if isinstance(doc, dict) and isinstance(doc.get("Message"), str):  # SNS envelope
        try:
            doc = msgspec.json.decode(doc["Message"].encode("utf-8", "replace"))
        except (msgspec.DecodeError, RecursionError):
            return None
    if not isinstance(doc, dict):
        return None
    kind = str(doc.get("notificationType") or doc.get("eventType") or "").lower()
    hints = _hints(doc.get("mail"))
    if kind == "bounce":
        return _bounce(_dict(doc.get("bounce")), hints)
    if kind == "complaint":
        return _complaint(_dict(doc.get("complaint")), hints)
    if kind == "delivery":
        return _delivery(_dict(doc.get("delivery")), hints)
    return None


def _decode_object(text: str) -> Any:
    """The decoded JSON value of ``text``, or None when it is not JSON."""
    # RecursionError: msgspec refuses JSON nested deeper than the interpreter's recursion limit
    # ("[[[[..." is cheap to send).
    try:
        return msgspec.json.decode(text.encode("utf-8", "replace"))
    except (msgspec.DecodeError, RecursionError):
        return None


def _bounce(bounce: dict[str, Any], hints: JobHints) -> BounceReport:
    subtype = str(bounce.get("bounceSubType") or "").lower()
    permanent = str(bounce.get("bounceType") or "").lower() == _PERMANENT
    remote_default = _text(bounce.get("remoteMtaIp"))
    recipients: list[Recipient] = []
    for entry in _list(bounce.get("bouncedRecipients"))[:_MAX_RECIPIENTS]:
        item = _dict(entry)
        address = decode_address(_text(item.get("emailAddress")) or "")
        if not address:
            continue
        diagnostic = _text(item.get("diagnosticCode"))
        if diagnostic and diagnostic.lower().startswith("smtp;"):
            diagnostic = diagnostic[len("smtp;") :].strip()
        status = clean_status(_text(item.get("status")))
        result = classify(
            status, None, diagnostic, action=_text(item.get("action")), permanent=permanent
        )
        reason, rule = result.reason, result.rule
        mapped = _SUBTYPE_REASONS.get(subtype)
        if mapped and (reason in WEAK_REASONS or mapped in _ALWAYS_SUBTYPE):
            reason, rule = mapped, f"ses:{subtype}"
        recipients.append(
            Recipient(
                address=address,
                status=result.status,
                reply_code=result.reply_code,
                reason=reason,
                hard=result.hard
                if reason is result.reason
                else (reason in HARD_REASONS and permanent),
                diagnostic=diagnostic,
                remote_mta=remote_default,
                action=_text(item.get("action")),
                rule=rule,
            )
        )
    return BounceReport(kind=BounceKind.NONSTANDARD, recipients=tuple(recipients), hints=hints)


def _complaint(complaint: dict[str, Any], hints: JobHints) -> BounceReport:
    addresses = [
        a
        for a in (
            decode_address(_text(_dict(e).get("emailAddress")) or "")
            for e in _list(complaint.get("complainedRecipients"))[:_MAX_RECIPIENTS]
        )
        if a
    ]
    feedback = Feedback(
        feedback_type=(_text(complaint.get("complaintFeedbackType")) or "abuse").lower(),
        user_agent=_text(complaint.get("userAgent")),
        original_mail_from=hints.original_from,
        original_rcpt_to=tuple(addresses),
        arrival_date=_text(complaint.get("arrivalDate")),
    )
    recipients = tuple(
        Recipient(a, None, None, Reason.FEEDBACK, False, None, None, rule="ses:complaint")
        for a in addresses
    )
    return BounceReport(kind=BounceKind.ARF, recipients=recipients, feedback=feedback, hints=hints)


def _delivery(delivery: dict[str, Any], hints: JobHints) -> BounceReport:
    remote = _text(delivery.get("reportingMTA"))
    diagnostic = _text(delivery.get("smtpResponse"))
    recipients = []
    for entry in _list(delivery.get("recipients"))[:_MAX_RECIPIENTS]:
        address = decode_address(_text(entry) or "")
        if address:
            recipients.append(
                Recipient(
                    address,
                    "2.0.0",
                    None,
                    Reason.DELIVERED,
                    False,
                    diagnostic,
                    remote,
                    rule="ses:delivery",
                )
            )
    return BounceReport(kind=BounceKind.NONSTANDARD, recipients=tuple(recipients), hints=hints)


def _hints(mail: Any) -> JobHints:
    data = _dict(mail)
    common = _dict(data.get("commonHeaders"))
    job_id: str | None = None
    message_id = _text(common.get("messageId"))
    for entry in _list(data.get("headers")):
        item = _dict(entry)
        name = (_text(item.get("name")) or "").lower()
        if name == "x-pm-job-id":
            job_id = _text(item.get("value"))
        elif name == "message-id" and not message_id:
            message_id = _text(item.get("value"))
    senders = _list(common.get("from"))
    destinations = _list(common.get("to")) or _list(data.get("destination"))
    return JobHints(
        job_id=job_id,
        message_id=message_id,
        original_from=_text(senders[0]) if senders else _text(data.get("source")),
        original_to=_text(destinations[0]) if destinations else None,
        original_subject=_text(common.get("subject")),
    )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None
