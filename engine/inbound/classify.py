"""Classification of one bounced recipient: RFC 3463 status, SMTP reply code, reason, hard/soft.

A pipeline that keeps its evidence (docs/bounces.md, "Classification"). The enhanced status code
gives a first reason from a table; the diagnostic text, matched against ``bounce_patterns.toml``
(engine/inbound/patterns.py), then overrides codes that are generic (5.0.0, 5.7.1, 4.7.0 ...) but
not codes that already say something precise (5.2.2 is a full mailbox whatever the text adds), as
sisimai does. A user-unknown code yields to text that shows the real cause was elsewhere (5.1.1 +
"mailbox full", 5.1.1 + "blocked using spamhaus"). The SMTP stage of the refusal (``smtpstage``)
then corrects what cannot be true at that point of the dialogue, and what nothing explains falls
back on the RFC 3463 class. Every result names the rule that decided it.
"""

from __future__ import annotations

import functools
import re

import msgspec

from engine.inbound.patterns import ReasonPatterns, load_patterns, normalise
from engine.inbound.reasons import (
    BEFORE_CONTENT,
    CONNECTION_REASONS,
    DELAY_ACTIONS,
    FIRM_CODE_REASONS,
    FIRM_STATUSES,
    HARD_REASONS,
    HOSTUNKNOWN_OVERRIDES,
    LOCAL_DIAGNOSTIC_TYPES,
    RECIPIENT_REASONS,
    STATUS_REASONS,
    SUBJECT_REASONS,
    SUCCESS_ACTIONS,
    USERUNKNOWN_OVERRIDES,
)
from engine.inbound.report import Reason
from engine.inbound.smtpstage import SmtpCommand, Stage, find_stage
from engine.smtp.codes import SYNTAX_REPLY_CODES, EnhancedClass, ReplyClass, parse_enhanced_status

# sisimai's status finders: "(#5.1.1)", "550-5.1.1" / "550 5.1.1", then any bare x.y.z.
_STATUS_PATTERNS = (
    re.compile(r"\(#([245]\.\d{1,3}\.\d{1,3})\)"),
    re.compile(r"\b[245]\d\d[ -]#?([245]\.\d{1,3}\.\d{1,3})\b"),
    re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.]*\d)"),
)
_REPLY_CODE = re.compile(r"(?:^|[\s:;(\[\"'<#])([245][0-5]\d)(?=[ \-]|$)")
#: Characters of a diagnostic the patterns read (normalised). Real diagnostics are a few
#: hundred; the cap bounds what a pattern with a repeat can cost on attacker text.
MAX_DIAGNOSTIC_CHARS = 4096
#: Characters of the context text (a DSN's human-readable part) searched for the SMTP command.
MAX_CONTEXT_CHARS = 8192


class Classification(msgspec.Struct, frozen=True):
    """The classified status of one recipient, and the rule that decided its reason.

    ``rule`` names the evidence, joined by ``+``: ``status:5.2.2`` (the RFC 3463 table),
    ``phrase:mailboxfull/de/2`` (a pattern of ``engine/data/bounce_patterns.toml``),
    ``stage:data`` (where in the SMTP dialogue the refusal came), ``class:5.4`` (the status
    class alone), ``reply:501``, ``action:delayed``, ``format:x-unix``, ``none``.
    """

    status: str | None
    reply_code: str | None
    reason: Reason
    hard: bool
    rule: str = ""


def clean_status(value: str | None) -> str | None:
    """Normalise an RFC 3463 status field ("5.1.1 (user unknown)" -> "5.1.1"); None if invalid."""
    if not value:
        return None
    return parse_enhanced_status(value)


def find_status(text: str) -> str | None:
    """The first enhanced status code quoted in a diagnostic text, or None."""
    for pattern in _STATUS_PATTERNS:
        found = pattern.search(text)
        if found:
            return clean_status(found.group(1))
    return None


def find_reply_code(text: str) -> str | None:
    """The first SMTP reply code in a diagnostic text ("550 5.1.1 ..." -> "550"), or None."""
    found = _REPLY_CODE.search(text)
    return found.group(1) if found else None


def find_command(text: str) -> SmtpCommand | None:
    """The SMTP command a normalised diagnostic says the rejection answered, or None."""
    stage = find_stage(text)
    return stage.command if stage is not None else None


def is_generic_status(status: str | None) -> bool:
    """True for x.0.0-style codes that carry only the class (text should refine them)."""
    return status is None or status.endswith(".0.0")


class _Verdict(msgspec.Struct, frozen=True):
    reason: Reason
    rule: str


def classify(
    status: str | None,
    reply_code: str | None,
    diagnostic: str | None,
    *,
    action: str | None = None,
    permanent: bool | None = None,
    context: str | None = None,
    rcpt_evidence: bool = False,
    diagnostic_type: str | None = None,
    patterns: ReasonPatterns | None = None,
) -> Classification:
    """Classify one recipient from its status, reply code and diagnostic text.

    The evidence is read in a fixed order: the enhanced status code (and, when it is generic,
    the one the text quotes), the reply code, the SMTP stage of the refusal (from the
    diagnostic, else from ``context``: other text about the same recipient such as a DSN's
    human-readable part), then the diagnostic phrases. The code and the phrases give a reason
    (:func:`_decide`), the stage corrects what cannot be true at that point of the dialogue,
    and what is left unexplained falls back on the status class, the reply code, the action.

    ``permanent`` is the parser's judgement when the message carries no code at all (a qmail
    "permanent error", an Exim "failed" list); codes win over it when present. With
    ``rcpt_evidence`` (structured reports) a "user unknown" text under a code that does not
    say so counts only when the refusal came at RCPT; otherwise it is ``filtered``.
    """
    table = patterns if patterns is not None else load_patterns()
    text = _bounded_normalise(diagnostic, MAX_DIAGNOSTIC_CHARS) if diagnostic else ""
    if reply_code is None and text:
        reply_code = find_reply_code(text)
    if is_generic_status(status) and text:
        refined = find_status(text)
        if refined and (status is None or refined[0] == status[0]):
            status = refined
    act = (action or "").lower()
    if status and int(status[0]) == EnhancedClass.SUCCESS:
        return Classification(status, reply_code, Reason.DELIVERED, False, f"status:{status}")
    if act in SUCCESS_ACTIONS:
        return Classification(status, reply_code, Reason.DELIVERED, False, f"action:{act}")
    stage = find_stage(text) if text else None
    if stage is None and context:
        stage = _context_stage(context)
    verdict = _evidence(status, text, stage, table, rcpt_evidence)
    fallback = verdict is None
    if verdict is None:
        verdict = _fallback(status, reply_code, text, act, (diagnostic_type or "").upper())
    if stage is not None:
        corrected = _at_stage(verdict, stage)
        # A reason the stage gave is evidence, not a fallback any more.
        fallback = fallback and corrected.reason is verdict.reason
        verdict = corrected
    failed_for_good = _is_permanent(status, reply_code, act, permanent)
    if (
        fallback
        and act == "failed"
        and status is not None
        and int(status[0]) == EnhancedClass.PERSISTENT_TRANSIENT
    ):
        # A transient code in a final failure, with nothing more precise than its class: the
        # MTA kept retrying and gave up.
        verdict = _Verdict(Reason.EXPIRED, f"action:failed+{verdict.rule}")
    hard = verdict.reason in HARD_REASONS and (
        failed_for_good or (verdict.reason is not Reason.NOTACCEPT and _gave_up(act, permanent))
    )
    return Classification(status, reply_code, verdict.reason, hard, verdict.rule)


def _bounded_normalise(text: str, limit: int) -> str:
    """:func:`normalise` of about the first ``limit`` characters of ``text``, cut to ``limit``."""
    return normalise(text[: 2 * limit])[:limit]


@functools.lru_cache(maxsize=8)
def _context_stage(context: str) -> Stage | None:
    # Cached: a DSN with hundreds of recipients passes the same human-readable text for each.
    return find_stage(_bounded_normalise(context, MAX_CONTEXT_CHARS))


def _stage_rule(stage: Stage) -> str:
    return f"stage:{stage.command.value.lower()}"


def _evidence(
    status: str | None,
    text: str,
    stage: Stage | None,
    table: ReasonPatterns,
    need_rcpt: bool,
) -> _Verdict | None:
    """The reason the status code and the phrases give together, or None if neither does."""
    code_reason = STATUS_REASONS.get(status) if status else None
    code = _Verdict(code_reason, f"status:{status}") if code_reason is not None else None
    if code is not None and status in FIRM_STATUSES:
        return code
    phrase = table.first(text) if text else None
    text_verdict = _Verdict(phrase.reason, phrase.rule) if phrase is not None else None
    command = stage.command if stage is not None else None
    where = _stage_rule(stage) if stage is not None else ""
    if (
        text_verdict is not None
        and text_verdict.reason is Reason.SPAMDETECTED
        and command in BEFORE_CONTENT
        and table.matches_specific(Reason.BLOCKED, text)
    ):
        # Spam words and a DNSBL phrase before DATA: the server judged the client, not content.
        text_verdict = _Verdict(Reason.BLOCKED, f"{where}+{text_verdict.rule}")
    verdict = _decide(code, text_verdict)
    if verdict is None:
        return None
    # "No such user" answered after DATA (or with a mailbox-status code): the address was
    # accepted at RCPT, so a filter refused the content (sisimai's Filtered rule). In a DSN
    # whose code does not say "user unknown" the text alone is not trusted either unless the
    # refusal came at RCPT: "550 mailbox unavailable" is also what filters answer. (Microsoft
    # sends 5.1.10, null MX in RFC 7505, for unknown recipients: that text is trusted.)
    if verdict.reason is Reason.USERUNKNOWN and code_reason is not Reason.USERUNKNOWN:
        if command is SmtpCommand.DATA:
            return _Verdict(Reason.FILTERED, f"{where}+{verdict.rule}")
        if code_reason is Reason.FILTERED and (need_rcpt or command is not SmtpCommand.RCPT):
            # A plain notice whose transcript shows the refusal at RCPT is believed over its
            # mailbox-status code (qmail-ldap's "no mailbox here by that name (#5.2.1)").
            return _Verdict(Reason.FILTERED, f"status:{status}+{verdict.rule}")
        if need_rcpt and command is None and code_reason is not Reason.NOTACCEPT:
            return _Verdict(Reason.FILTERED, f"dsn:no-rcpt-stage+{verdict.rule}")
    return verdict


def _decide(code: _Verdict | None, text: _Verdict | None) -> _Verdict | None:
    """Code against text: precise codes hold, generic ones yield (RFC 3463 detail codes)."""
    if code is None or text is None:
        return code or text
    if code.reason in FIRM_CODE_REASONS:
        return code
    if code.reason is Reason.USERUNKNOWN:
        return text if text.reason in USERUNKNOWN_OVERRIDES else code
    if code.reason is Reason.HOSTUNKNOWN:
        return text if text.reason in HOSTUNKNOWN_OVERRIDES else code
    return text


def _at_stage(verdict: _Verdict, stage: Stage) -> _Verdict:
    """Correct a reason that cannot hold at the SMTP stage the refusal came at."""
    command = stage.command
    rule = f"{_stage_rule(stage)}+{verdict.rule}"
    if command is SmtpCommand.DATA and verdict.reason is Reason.USERUNKNOWN:
        return _Verdict(Reason.FILTERED, rule)
    if command is SmtpCommand.MAIL and verdict.reason in RECIPIENT_REASONS:
        return _Verdict(Reason.REJECTED, rule)
    if command in (SmtpCommand.CONN, SmtpCommand.EHLO) and verdict.reason not in CONNECTION_REASONS:
        return _Verdict(Reason.BLOCKED, rule)
    return verdict


def _fallback(
    status: str | None, reply_code: str | None, text: str, action: str, diagnostic_type: str
) -> _Verdict:
    """The reason when neither the code table nor a phrase gave one."""
    if action in DELAY_ACTIONS:
        return _Verdict(Reason.EXPIRED, "action:delayed")
    if status:
        subject = status.split(".")[1]
        by_class = SUBJECT_REASONS.get(subject)
        if by_class is not None:
            return _Verdict(by_class, f"class:{status[0]}.{subject}")
    if diagnostic_type in LOCAL_DIAGNOSTIC_TYPES:
        # A local delivery program failed, not a remote server.
        return _Verdict(Reason.MAILERERROR, f"format:{diagnostic_type.lower()}")
    if reply_code and int(reply_code) in SYNTAX_REPLY_CODES:
        return _Verdict(Reason.SYNTAXERROR, f"reply:{reply_code}")
    return _Verdict(Reason.ONHOLD, "none:text") if text else _Verdict(Reason.UNDEFINED, "none")


def _gave_up(action: str, permanent: bool | None) -> bool:
    """Whether the report is a final failure (the MTA stopped trying), whatever the last code.

    A "550 user unknown" is permanent at once; a "450 4.1.1 user unknown" that an MTA kept
    getting until it gave up (RFC 3464 Action: failed) says the same about the address. A delay
    (Action: delayed) never is final.
    """
    if action:
        return action == "failed"
    return bool(permanent)


def _is_permanent(
    status: str | None, reply_code: str | None, action: str, permanent: bool | None
) -> bool:
    if status:
        return int(status[0]) == EnhancedClass.PERMANENT
    if reply_code:
        return int(reply_code[0]) == ReplyClass.PERMANENT_NEGATIVE
    if action:
        return action == "failed"
    return bool(permanent)
