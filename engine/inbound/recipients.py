"""The failed recipients of a bounce: from its delivery-status report, from headers that name
them (X-Failed-Recipients), or scraped from a non-standard notice, each classified."""

from __future__ import annotations

import re
from typing import NamedTuple

import msgspec

from engine.inbound import nonstandard
from engine.inbound.classify import classify, clean_status
from engine.inbound.dsn import DeliveryStatus, is_internal_address, parse_delivery_status
from engine.inbound.message import Headers
from engine.inbound.report import WEAK_REASONS, JobHints, Reason, Recipient
from engine.inbound.textscan import addresses_in

ACTION_DELAYED = "delayed"
ACTION_FAILED = "failed"
_SMTP_DIAGNOSTIC = "SMTP"
#: Reasons a delay notice keeps: they explain a delay (else the reason is "expired").
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
_PASTED_DSN = re.compile(r"(?:^|\n)(?:[Ff]inal|[Oo]riginal)-[Rr]ecipient:")
# Text every match of the pattern above holds: a C-speed "in" check spares the regex, which
# starts with an alternative and so tries every position of the text.
_PASTED_DSN_LITERAL = "ecipient:"


class View(NamedTuple):
    """Normalised (lower-case, whitespace-collapsed) text the marker phrases are matched on."""

    subject: str
    sender: str
    head: str


def failed_header(heads: Headers, exclude: frozenset[str], *, list_address: bool) -> list[str]:
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


def real_recipients(
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


def dsn_recipients(
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


def nonstandard_recipients(
    body: str,
    note: str,
    view: View,
    scraped: dict[str, nonstandard.ScrapedRecipient],
    hints: JobHints,
    listed: list[str],
    exclude: frozenset[str],
) -> list[Recipient]:
    delayed = nonstandard.is_delay_notice(view.subject, view.head)
    action = ACTION_DELAYED if delayed else ACTION_FAILED
    found = list(scraped.values())
    if not found and _PASTED_DSN_LITERAL in body and _PASTED_DSN.search(body) is not None:
        pasted = real_recipients(parse_delivery_status(body), exclude, hints)
        return dsn_recipients(pasted, {}, note) if pasted.recipients else []
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
        if result.reason in WEAK_REASONS and cause is not None:
            # Sendmail and its heirs name the cause in the subject ("Returned mail: User
            # unknown") when the text only quotes a bare reply.
            named = classify(
                None,
                result.reply_code,
                f"{item.diagnostic or ''} {cause.group(1)}",
                action=None,
                permanent=not delayed,
            )
            if named.reason not in WEAK_REASONS:
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
