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
from engine.inbound.report import Reason
from engine.inbound.smtpstage import SmtpCommand, Stage, find_stage
from engine.smtp.codes import SYNTAX_REPLY_CODES, EnhancedClass, ReplyClass, parse_enhanced_status

#: RFC 3463 / IANA enhanced status codes -> reason (sisimai's table, with the RFC 7372/7505/8098
#: codes mapped to the newer reasons of the vocabulary).
STATUS_REASONS: dict[str, Reason] = {
    "4.1.6": Reason.HASMOVED,  # destination mailbox has moved
    "4.1.7": Reason.REJECTED,  # bad sender's mailbox address syntax
    "4.1.8": Reason.REJECTED,  # bad sender's system address
    "4.1.9": Reason.SYSTEMERROR,  # message relayed to non-compliant mailer
    "4.2.1": Reason.SUSPEND,  # mailbox disabled
    "4.2.2": Reason.MAILBOXFULL,  # mailbox full
    "4.2.3": Reason.EXCEEDLIMIT,  # message length exceeds administrative limit
    "4.2.4": Reason.FILTERED,  # mailing list expansion problem
    "4.3.1": Reason.SYSTEMFULL,  # mail system full
    "4.3.2": Reason.NOTACCEPT,  # system not accepting network messages
    "4.3.3": Reason.SYSTEMERROR,  # system not capable of selected features
    "4.3.5": Reason.SYSTEMERROR,  # system incorrectly configured
    "4.4.1": Reason.EXPIRED,  # no answer from host
    "4.4.2": Reason.NETWORKERROR,  # bad connection
    "4.4.4": Reason.NETWORKERROR,  # unable to route
    "4.4.5": Reason.SYSTEMFULL,  # mail system congestion
    "4.4.6": Reason.NETWORKERROR,  # routing loop detected
    "4.4.7": Reason.EXPIRED,  # delivery time expired
    "4.5.3": Reason.SYSTEMERROR,  # too many recipients
    "4.5.5": Reason.SYSTEMERROR,  # wrong protocol version
    "4.6.0": Reason.CONTENTERROR,  # other or undefined media error
    "4.6.2": Reason.CONTENTERROR,  # conversion required and prohibited
    "4.6.5": Reason.CONTENTERROR,  # conversion failed
    "4.7.1": Reason.BLOCKED,  # delivery not authorized, message refused
    "4.7.2": Reason.BLOCKED,  # mailing list expansion prohibited
    "4.7.5": Reason.SECURITYERROR,  # cryptographic failure
    "4.7.6": Reason.SECURITYERROR,  # cryptographic algorithm not supported
    "4.7.7": Reason.SECURITYERROR,  # message integrity failure
    "4.7.10": Reason.FAILEDSTARTTLS,  # encryption needed
    "4.7.12": Reason.SECURITYERROR,  # a password transition is needed
    "4.7.15": Reason.SECURITYERROR,  # priority level is too low
    "4.7.16": Reason.MESGTOOBIG,  # message too big for the specified priority
    "4.7.24": Reason.AUTHFAILURE,  # SPF validation error
    "4.7.25": Reason.REQUIREPTR,  # reverse DNS validation failed
    "4.7.28": Reason.SPEEDING,  # Gmail: unusual rate of mail from this IP
    "5.1.0": Reason.USERUNKNOWN,  # other address status
    "5.1.1": Reason.USERUNKNOWN,  # bad destination mailbox address
    "5.1.2": Reason.HOSTUNKNOWN,  # bad destination system address
    "5.1.3": Reason.USERUNKNOWN,  # bad destination mailbox address syntax
    "5.1.4": Reason.FILTERED,  # destination mailbox address ambiguous
    "5.1.6": Reason.HASMOVED,  # destination mailbox has moved, no forwarding address
    "5.1.7": Reason.REJECTED,  # bad sender's mailbox address syntax
    "5.1.8": Reason.REJECTED,  # bad sender's system address
    "5.1.9": Reason.SYSTEMERROR,  # message relayed to non-compliant mailer
    "5.1.10": Reason.NOTACCEPT,  # recipient address has null MX (RFC 7505)
    "5.2.0": Reason.FILTERED,  # other or undefined mailbox status
    "5.2.1": Reason.FILTERED,  # mailbox disabled, not accepting messages
    "5.2.2": Reason.MAILBOXFULL,  # mailbox full
    "5.2.3": Reason.EXCEEDLIMIT,  # message length exceeds administrative limit
    "5.2.4": Reason.FILTERED,  # mailing list expansion problem
    "5.3.0": Reason.SYSTEMERROR,  # other or undefined mail system status
    "5.3.1": Reason.SYSTEMFULL,  # mail system full
    "5.3.2": Reason.NOTACCEPT,  # system not accepting network messages
    "5.3.3": Reason.SYSTEMERROR,  # system not capable of selected features
    "5.3.4": Reason.MESGTOOBIG,  # message too big for system
    "5.3.5": Reason.SYSTEMERROR,  # system incorrectly configured
    "5.4.0": Reason.NETWORKERROR,  # other or undefined network or routing status
    "5.4.3": Reason.SYSTEMERROR,  # directory server failure
    "5.4.4": Reason.HOSTUNKNOWN,  # unable to route
    "5.4.6": Reason.NETWORKERROR,  # routing loop detected
    "5.4.7": Reason.EXPIRED,  # delivery time expired
    "5.5.3": Reason.TOOMANYCONN,  # too many recipients
    "5.5.4": Reason.SYSTEMERROR,  # invalid command arguments
    "5.5.5": Reason.SYSTEMERROR,  # wrong protocol version
    "5.5.6": Reason.SECURITYERROR,  # authentication exchange line is too long
    "5.6.0": Reason.CONTENTERROR,  # other or undefined media error
    "5.6.1": Reason.CONTENTERROR,  # media not supported
    "5.6.2": Reason.CONTENTERROR,  # conversion required and prohibited
    "5.6.3": Reason.CONTENTERROR,  # conversion required but not supported
    "5.6.5": Reason.CONTENTERROR,  # conversion failed
    "5.6.6": Reason.CONTENTERROR,  # message content not available
    "5.6.7": Reason.CONTENTERROR,  # non-ASCII addresses not permitted
    "5.6.8": Reason.CONTENTERROR,  # UTF-8 string reply required
    "5.6.9": Reason.CONTENTERROR,  # UTF-8 header cannot be transferred
    "5.7.0": Reason.SECURITYERROR,  # other or undefined security status
    "5.7.1": Reason.SECURITYERROR,  # delivery not authorized, message refused
    "5.7.2": Reason.SECURITYERROR,  # mailing list expansion prohibited
    "5.7.3": Reason.SECURITYERROR,  # security conversion required but not possible
    "5.7.4": Reason.SECURITYERROR,  # security features not supported
    "5.7.5": Reason.SECURITYERROR,  # cryptographic failure
    "5.7.6": Reason.SECURITYERROR,  # cryptographic algorithm not supported
    "5.7.7": Reason.SECURITYERROR,  # message integrity failure
    "5.7.8": Reason.SECURITYERROR,  # authentication credentials invalid
    "5.7.9": Reason.SECURITYERROR,  # authentication mechanism is too weak
    "5.7.10": Reason.FAILEDSTARTTLS,  # encryption needed
    "5.7.11": Reason.SECURITYERROR,  # encryption required for requested authentication mechanism
    "5.7.13": Reason.SUSPEND,  # user account disabled
    "5.7.14": Reason.SECURITYERROR,  # trust relationship required
    "5.7.15": Reason.SECURITYERROR,  # priority level is too low
    "5.7.16": Reason.MESGTOOBIG,  # message is too big for the specified priority
    "5.7.17": Reason.HASMOVED,  # mailbox owner has changed
    "5.7.18": Reason.HASMOVED,  # domain owner has changed
    "5.7.19": Reason.SECURITYERROR,  # RRVS test cannot be completed
    "5.7.20": Reason.AUTHFAILURE,  # no passing DKIM signature found
    "5.7.21": Reason.AUTHFAILURE,  # no acceptable DKIM signature found
    "5.7.22": Reason.AUTHFAILURE,  # no valid author-matched DKIM signature found
    "5.7.23": Reason.AUTHFAILURE,  # SPF validation failed
    "5.7.24": Reason.AUTHFAILURE,  # SPF validation error
    "5.7.25": Reason.REQUIREPTR,  # reverse DNS validation failed
    "5.7.26": Reason.AUTHFAILURE,  # multiple authentication checks failed
    "5.7.27": Reason.REJECTED,  # sender address has null MX: about our sender, not the recipient
}

#: Codes precise enough that no diagnostic text overrides them.
_FIRM_CODE_REASONS = frozenset(
    {
        Reason.MAILBOXFULL,
        Reason.MESGTOOBIG,
        Reason.EXCEEDLIMIT,
        Reason.HASMOVED,
        Reason.REQUIREPTR,
        Reason.AUTHFAILURE,
        Reason.FAILEDSTARTTLS,
        Reason.SPEEDING,
    }
)
#: Detail codes that no text overrides although their reason may be refined elsewhere:
#: "delivery time expired" (x.4.7: whatever the last error quoted was, the message expired in
#: the queue; x.4.1, "no answer from host", is also what MTAs use for a refused connection, so
#: the text may still say networkerror there) and "sender address has null MX" (5.7.27, RFC
#: 7505: the text's "null MX" is our sender's domain, not the recipient's).
_FIRM_STATUSES = frozenset({"4.4.7", "5.4.7", "5.7.27"})
#: Text that shows a user-unknown code was really about something else (sisimai's pre-matches).
_USERUNKNOWN_OVERRIDES = frozenset(
    {
        Reason.MAILBOXFULL,
        Reason.MESGTOOBIG,
        Reason.EXCEEDLIMIT,
        Reason.SUSPEND,
        Reason.HASMOVED,
        Reason.NORELAYING,
        Reason.BLOCKED,
        Reason.REJECTED,
        Reason.NOTACCEPT,
        Reason.HOSTUNKNOWN,
        Reason.REQUIREPTR,
        Reason.BADREPUTATION,
        Reason.AUTHFAILURE,
        Reason.SPEEDING,
        Reason.TOOMANYCONN,
        Reason.SUPPRESSED,
        Reason.SYSTEMFULL,
    }
)
#: Text that shows a host-unknown code was a transient routing problem or something precise.
_HOSTUNKNOWN_OVERRIDES = frozenset(
    {
        Reason.NETWORKERROR,
        Reason.NOTACCEPT,
        Reason.NORELAYING,
        Reason.MAILBOXFULL,
        Reason.SUSPEND,
        Reason.USERUNKNOWN,
    }
)
#: Reasons that suppress the address at once when the failure is permanent (DESIGN §7).
HARD_REASONS = frozenset(
    {Reason.USERUNKNOWN, Reason.HOSTUNKNOWN, Reason.HASMOVED, Reason.NOTACCEPT}
)
#: Reasons that describe the recipient's address, mailbox or domain. At MAIL FROM the server
#: has not been told the recipient yet, so such a reason was really about our sender
#: (``rejected``: an unknown or null-MX sender domain, RFC 7505's 5.7.27). At the greeting or
#: EHLO only reasons about the client or the session stand (``_CONNECTION_REASONS``); a null MX
#: or "no SMTP service" answer there (RFC 7504's 521/554) is the recipient domain's and stays.
_RECIPIENT_REASONS = frozenset(
    {
        Reason.USERUNKNOWN,
        Reason.MAILBOXFULL,
        Reason.SUSPEND,
        Reason.HASMOVED,
        Reason.FILTERED,
        Reason.HOSTUNKNOWN,
        Reason.NOTACCEPT,
        Reason.ONHOLD,
        Reason.UNDEFINED,
    }
)
#: Reasons a refusal at the greeting or EHLO may keep: they describe the client host or the
#: session (its reputation, PTR, rate, TLS, the network) rather than a mailbox or a message.
_CONNECTION_REASONS = frozenset(
    {
        Reason.BLOCKED,
        Reason.BADREPUTATION,
        Reason.REQUIREPTR,
        Reason.SPEEDING,
        Reason.TOOMANYCONN,
        Reason.FAILEDSTARTTLS,
        Reason.AUTHFAILURE,
        Reason.NETWORKERROR,
        Reason.NOTACCEPT,
        Reason.SYSTEMERROR,
        Reason.SYSTEMFULL,
        Reason.POLICYVIOLATION,
        Reason.NORELAYING,
        Reason.EXPIRED,
        Reason.SYNTAXERROR,
    }
)
#: Before DATA the server has not seen the content, so a rejection there is not about spam
#: content but about the sender's IP or name (sisimai's rule): "blocked", not "spamdetected".
_BEFORE_CONTENT = frozenset(
    {SmtpCommand.CONN, SmtpCommand.EHLO, SmtpCommand.MAIL, SmtpCommand.RCPT}
)
#: RFC 3464 Action values that mean the message did arrive.
_SUCCESS_ACTIONS = frozenset({"delivered", "relayed", "expanded"})
_DELAY_ACTIONS = frozenset({"delayed"})
#: RFC 3464 diagnostic types that name a local delivery agent (sisimai: mailererror).
_LOCAL_DIAGNOSTIC_TYPES = frozenset({"X-UNIX", "X-POSTFIX"})
#: RFC 3463 subject classes (the second field) whose detail codes are not in the table: what
#: the class alone says (§3.3-§3.9). x.1.x and x.2.x are left out: "other address status" and
#: "other mailbox status" do not say which address or why.
_SUBJECT_REASONS: dict[str, Reason] = {
    "3": Reason.SYSTEMERROR,  # mail system status
    "4": Reason.NETWORKERROR,  # network and routing status
    "5": Reason.SYNTAXERROR,  # mail delivery protocol status
    "6": Reason.CONTENTERROR,  # message content or media status
    "7": Reason.SECURITYERROR,  # security or policy status
}

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
    if act in _SUCCESS_ACTIONS:
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
    if code is not None and status in _FIRM_STATUSES:
        return code
    phrase = table.first(text) if text else None
    text_verdict = _Verdict(phrase.reason, phrase.rule) if phrase is not None else None
    command = stage.command if stage is not None else None
    where = _stage_rule(stage) if stage is not None else ""
    if (
        text_verdict is not None
        and text_verdict.reason is Reason.SPAMDETECTED
        and command in _BEFORE_CONTENT
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
    if code.reason in _FIRM_CODE_REASONS:
        return code
    if code.reason is Reason.USERUNKNOWN:
        return text if text.reason in _USERUNKNOWN_OVERRIDES else code
    if code.reason is Reason.HOSTUNKNOWN:
        return text if text.reason in _HOSTUNKNOWN_OVERRIDES else code
    return text


def _at_stage(verdict: _Verdict, stage: Stage) -> _Verdict:
    """Correct a reason that cannot hold at the SMTP stage the refusal came at."""
    command = stage.command
    rule = f"{_stage_rule(stage)}+{verdict.rule}"
    if command is SmtpCommand.DATA and verdict.reason is Reason.USERUNKNOWN:
        return _Verdict(Reason.FILTERED, rule)
    if command is SmtpCommand.MAIL and verdict.reason in _RECIPIENT_REASONS:
        return _Verdict(Reason.REJECTED, rule)
    if (
        command in (SmtpCommand.CONN, SmtpCommand.EHLO)
        and verdict.reason not in _CONNECTION_REASONS
    ):
        return _Verdict(Reason.BLOCKED, rule)
    return verdict


def _fallback(
    status: str | None, reply_code: str | None, text: str, action: str, diagnostic_type: str
) -> _Verdict:
    """The reason when neither the code table nor a phrase gave one."""
    if action in _DELAY_ACTIONS:
        return _Verdict(Reason.EXPIRED, "action:delayed")
    if status:
        subject = status.split(".")[1]
        by_class = _SUBJECT_REASONS.get(subject)
        if by_class is not None:
            return _Verdict(by_class, f"class:{status[0]}.{subject}")
    if diagnostic_type in _LOCAL_DIAGNOSTIC_TYPES:
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
