"""The tables behind bounce classification (:mod:`engine.inbound.classify`): what each RFC 3463
status code says, which codes no text overrides, which reasons a text may substitute, and which
reasons can be true at each SMTP stage."""

from __future__ import annotations

from engine.inbound.report import Reason
from engine.inbound.smtpstage import SmtpCommand

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
FIRM_CODE_REASONS = frozenset(
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
FIRM_STATUSES = frozenset({"4.4.7", "5.4.7", "5.7.27"})
#: Text that shows a user-unknown code was really about something else (sisimai's pre-matches).
USERUNKNOWN_OVERRIDES = frozenset(
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
HOSTUNKNOWN_OVERRIDES = frozenset(
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
#: EHLO only reasons about the client or the session stand (``CONNECTION_REASONS``); a null MX
#: or "no SMTP service" answer there (RFC 7504's 521/554) is the recipient domain's and stays.
RECIPIENT_REASONS = frozenset(
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
CONNECTION_REASONS = frozenset(
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
BEFORE_CONTENT = frozenset({SmtpCommand.CONN, SmtpCommand.EHLO, SmtpCommand.MAIL, SmtpCommand.RCPT})
#: RFC 3464 Action values that mean the message did arrive.
SUCCESS_ACTIONS = frozenset({"delivered", "relayed", "expanded"})
DELAY_ACTIONS = frozenset({"delayed"})
#: RFC 3464 diagnostic types that name a local delivery agent (sisimai: mailererror).
LOCAL_DIAGNOSTIC_TYPES = frozenset({"X-UNIX", "X-POSTFIX"})
#: RFC 3463 subject classes (the second field) whose detail codes are not in the table: what
#: the class alone says (§3.3-§3.9). x.1.x and x.2.x are left out: "other address status" and
#: "other mailbox status" do not say which address or why.
SUBJECT_REASONS: dict[str, Reason] = {
    "3": Reason.SYSTEMERROR,  # mail system status
    "4": Reason.NETWORKERROR,  # network and routing status
    "5": Reason.SYNTAXERROR,  # mail delivery protocol status
    "6": Reason.CONTENTERROR,  # message content or media status
    "7": Reason.SECURITYERROR,  # security or policy status
}
