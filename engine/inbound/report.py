"""What a parsed bounce says: the structs handed to the effects layer and the Bounce JSON contract.

:class:`BounceReport` is the full result of :func:`engine.inbound.parse_bounce` (recipients plus the
job-mapping candidates); :class:`BounceRecord` is exactly the Bounce JSON line of DESIGN §8 that
``engine bounce parse --json`` prints. Keep :class:`BounceRecord` and :class:`RecipientRecord`
field-for-field identical to the contract.
"""

from __future__ import annotations

import enum

import msgspec


class BounceKind(enum.StrEnum):
    """What kind of inbound message this was (DESIGN §8 ``kind``)."""

    DSN = "dsn"  # RFC 3464 / RFC 6533 multipart/report delivery-status
    ARF = "arf"  # RFC 5965 feedback report (complaint)
    AUTOREPLY = "autoreply"  # RFC 3834 auto-reply, vacation, challenge-response: never a bounce
    NONSTANDARD = "nonstandard"  # a bounce in some MTA's own human-readable format
    UNKNOWN = "unknown"  # not a bounce at all (or nothing could be understood)


class Reason(enum.StrEnum):
    """The bounce reason vocabulary (DESIGN §7, a contract: sisimai's names)."""

    AUTHFAILURE = "authfailure"
    BADREPUTATION = "badreputation"
    BLOCKED = "blocked"
    CONTENTERROR = "contenterror"
    EXCEEDLIMIT = "exceedlimit"
    EXPIRED = "expired"
    FAILEDSTARTTLS = "failedstarttls"
    FEEDBACK = "feedback"
    FILTERED = "filtered"
    HASMOVED = "hasmoved"
    HOSTUNKNOWN = "hostunknown"
    MAILBOXFULL = "mailboxfull"
    MAILERERROR = "mailererror"
    MESGTOOBIG = "mesgtoobig"
    NETWORKERROR = "networkerror"
    NORELAYING = "norelaying"
    NOTACCEPT = "notaccept"
    NOTCOMPLIANTRFC = "notcompliantrfc"
    ONHOLD = "onhold"
    POLICYVIOLATION = "policyviolation"
    REJECTED = "rejected"
    REQUIREPTR = "requireptr"
    SECURITYERROR = "securityerror"
    SPAMDETECTED = "spamdetected"
    SPEEDING = "speeding"
    SUPPRESSED = "suppressed"
    SUSPEND = "suspend"
    SYNTAXERROR = "syntaxerror"
    SYSTEMERROR = "systemerror"
    SYSTEMFULL = "systemfull"
    TOOMANYCONN = "toomanyconn"
    USERUNKNOWN = "userunknown"
    VIRUSDETECTED = "virusdetected"
    DELIVERED = "delivered"
    VACATION = "vacation"
    UNDEFINED = "undefined"


#: Reasons that name no cause: another source (a subject, a provider's sub-type) may say more.
WEAK_REASONS = frozenset({Reason.ONHOLD, Reason.UNDEFINED})


class Recipient(msgspec.Struct, frozen=True):
    """One recipient of a bounce, classified."""

    address: str
    status: str | None  # RFC 3463 enhanced status, e.g. "5.1.1"
    reply_code: str | None  # SMTP reply code, e.g. "550"
    reason: Reason
    hard: bool  # suppress the address at once
    diagnostic: str | None  # the remote server's words, whitespace-collapsed
    remote_mta: str | None
    action: str | None = None  # RFC 3464 Action (failed, delayed, delivered, relayed, expanded)
    rule: str = ""  # which evidence decided the reason (engine/inbound/classify.py)


class JobHints(msgspec.Struct, frozen=True):
    """Everything that may map the bounce back to the job that caused it.

    The effects layer tries them in order: the VERP ``envelope_to`` (checked by compose's HMAC),
    the ``X-PM-Job-Id`` header of the original message, then its ``Message-ID``.
    """

    envelope_to: str | None = None
    job_id: str | None = None
    message_id: str | None = None
    original_from: str | None = None
    original_to: str | None = None
    original_subject: str | None = None


class Feedback(msgspec.Struct, frozen=True):
    """RFC 5965 fields of a complaint, for the effects layer (suppression per tenant)."""

    feedback_type: str
    user_agent: str | None = None
    original_mail_from: str | None = None
    original_rcpt_to: tuple[str, ...] = ()
    source_ip: str | None = None
    reported_domain: str | None = None
    arrival_date: str | None = None


class BounceReport(msgspec.Struct, frozen=True):
    """The full result of parsing one inbound message."""

    kind: BounceKind
    recipients: tuple[Recipient, ...] = ()
    feedback: Feedback | None = None
    hints: JobHints = JobHints()
    subject: str | None = None
    defects: tuple[str, ...] = ()  # why parsing was cut short (size cap, malformed MIME, ...)
    #: The quoted original's raw header block (transfer-decoded, at most 64 KiB): what its DKIM
    #: signature covers (engine/inbound/evidence.py). Not part of the Bounce JSON contract.
    original_head: bytes | None = None

    @property
    def feedback_type(self) -> str | None:
        """The ARF feedback type (abuse, fraud, ...) or None when this is not a complaint."""
        return self.feedback.feedback_type if self.feedback else None

    def to_record(self, file: str) -> BounceRecord:
        """The Bounce JSON contract line (DESIGN §8) for this report, naming ``file``."""
        return BounceRecord(
            file=file,
            kind=self.kind.value,
            feedback_type=self.feedback_type,
            recipients=[
                RecipientRecord(
                    address=r.address,
                    status=r.status,
                    reply_code=r.reply_code,
                    reason=r.reason.value,
                    hard=r.hard,
                    diagnostic=r.diagnostic,
                    remote_mta=r.remote_mta,
                    rule=r.rule or None,
                )
                for r in self.recipients
            ],
        )


class RecipientRecord(msgspec.Struct, frozen=True):
    """One recipient in the Bounce JSON contract (field order is the contract's)."""

    address: str
    status: str | None
    reply_code: str | None
    reason: str
    hard: bool
    diagnostic: str | None
    remote_mta: str | None
    #: Additive to the contract (DESIGN §8): the rule that decided ``reason``, e.g.
    #: ``stage:data+status:5.1.1`` or ``phrase:mailboxfull/en/3`` (docs/bounces.md).
    rule: str | None = None


class BounceRecord(msgspec.Struct, frozen=True):
    """The Bounce JSON contract line: ``{"file","kind","feedback_type","recipients":[...]}``."""

    file: str
    kind: str
    feedback_type: str | None
    recipients: list[RecipientRecord]
