"""Which SMTP command a remote server refused, read from a diagnostic or a session transcript.

Where in the dialogue a refusal came says what it was about (RFC 5321 §3.3): at the greeting or
EHLO the client host, at MAIL FROM the sender, at RCPT TO the recipient's address, after the
end of DATA the content. MTAs say it in a few fixed forms:

- Postfix: ``(in reply to RCPT TO command)``, ``(in reply to end of DATA command)``;
- Exim: ``SMTP error from remote mail server after RCPT TO:<a@b>:``, ``after end of data:``,
  ``after initial connection:``, ``after pipelined MAIL FROM:<>:``;
- Sendmail, Courier and others quote the session: ``>>> RCPT To:<a@b>`` then ``<<< 550 ...``;
  the refused command is the last one sent before the first 4xx/5xx answer;
- qmail: ``Connected to 192.0.2.1 but sender was rejected.``, ``... but my name was rejected``,
  ``... but greeting failed``, ``192.0.2.1 does not like recipient.``, ``192.0.2.1 failed after
  I sent the message.``; Postfix: ``host mx.example[192.0.2.1] refused to talk to me:``;
- Yahoo, Mimecast and some appliances tag it: ``[RCPT_TO]``, ``[DATA]``.

Callers pass normalised text (lower case, whitespace collapsed) of bounded length; every
pattern here is linear in it.
"""

from __future__ import annotations

import enum
import re

import msgspec


class SmtpCommand(enum.StrEnum):
    """The SMTP stage a rejection answered (RFC 5321 §4.1.1); CONN is the greeting."""

    CONN = "CONN"
    EHLO = "EHLO"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"


#: The command names MTAs write, normalised, and the stage each one means. "end of data",
#: "." and "data" all name the content stage: a refusal to the DATA command itself comes
#: before the content but after every RCPT was accepted, so it is not about an address either.
_COMMAND_NAMES: dict[str, SmtpCommand] = {
    "rcpt to": SmtpCommand.RCPT,
    "rcpt_to": SmtpCommand.RCPT,
    "rcpt": SmtpCommand.RCPT,
    "mail from": SmtpCommand.MAIL,
    "mail_from": SmtpCommand.MAIL,
    "end of data": SmtpCommand.DATA,
    "data": SmtpCommand.DATA,
    "sending data block": SmtpCommand.DATA,
    "initial connection": SmtpCommand.CONN,
    "connect": SmtpCommand.CONN,
    "greeting": SmtpCommand.CONN,
    "ehlo": SmtpCommand.EHLO,
    "helo": SmtpCommand.EHLO,
    "starttls": SmtpCommand.EHLO,
    "auth": SmtpCommand.EHLO,
}
_NAMES = "|".join(sorted((re.escape(n) for n in _COMMAND_NAMES), key=len, reverse=True))

# Phrase forms, most explicit first, each with literals one of which every match contains (a
# C-speed "in" check spares the regex on most diagnostics; a tag needs its "[", one check
# instead of one per command name). "after" alone is too common in prose, so Exim's form
# needs the "...mail server after" or "after pipelined" lead or a following ":"/"<".
_PHRASES: tuple[tuple[str, tuple[str, ...], re.Pattern[str]], ...] = (
    ("reply", ("in reply to",), re.compile(rf"in reply to (?:the )?({_NAMES}) command\b")),
    ("exim", ("after",), re.compile(rf"(?:server|host) after (?:pipelined )?({_NAMES})\b")),
    ("exim", ("after",), re.compile(rf"\bafter (?:pipelined )?({_NAMES}) ?[:<]")),
    ("tag", ("[",), re.compile(rf"\[({_NAMES})\]")),
    (
        "exim",
        ("after",),
        re.compile(r"\bafter (end of data|initial connection|sending data block)\b"),
    ),
    (
        "stage",
        (" stage", " phase", " command"),
        re.compile(rf"\b(?:at|during) (?:the )?({_NAMES}) (?:stage|phase|command)\b"),
    ),
)
# qmail-remote's and Postfix's own sentences about a session.
_SENTENCES: tuple[tuple[str, SmtpCommand, str], ...] = (
    ("but sender was rejected", SmtpCommand.MAIL, "qmail"),
    ("but my name was rejected", SmtpCommand.EHLO, "qmail"),
    ("but greeting failed", SmtpCommand.CONN, "qmail"),
    ("does not like recipient", SmtpCommand.RCPT, "qmail"),
    ("failed after i sent the message", SmtpCommand.DATA, "qmail"),
    ("refused to talk to me", SmtpCommand.CONN, "postfix"),
)
# One step of a quoted session: a command we sent (">>> RCPT To:<a@b>", ">>> .") or the class
# digit of a reply we got ("<<< 550 ...").
_TRANSCRIPT = re.compile(rf">>> ?({_NAMES}|\.)|<<< ?([2-5])\d\d\b")


class Stage(msgspec.Struct, frozen=True):
    """The refused command and the form that said so (for the ``rule`` of a classification)."""

    command: SmtpCommand
    form: str


def find_stage(text: str) -> Stage | None:
    """The SMTP command a normalised diagnostic or transcript says was refused, or None."""
    if "<<<" in text and (">>>" in text or "while talking to" in text):
        found = _transcript_stage(text)
        if found is not None:
            return Stage(found, "transcript")
    best: tuple[int, str, SmtpCommand] | None = None
    for form, literals, pattern in _PHRASES:
        for literal in literals:
            if literal in text:
                break
        else:
            continue
        match = pattern.search(text)
        if match is not None and (best is None or match.start() < best[0]):
            best = (match.start(), form, _COMMAND_NAMES[match.group(1)])
    if best is not None:
        return Stage(best[2], best[1])
    for sentence, command, form in _SENTENCES:
        if sentence in text:
            return Stage(command, form)
    return None


def _transcript_stage(text: str) -> SmtpCommand | None:
    """The refused command of a quoted SMTP session, or None if no reply was negative.

    Each "while talking to HOST" starts a session with a new host; the last host that answered
    4xx/5xx is the one whose refusal ended the delivery. Within a session the first 5xx (else
    the first 4xx) answer counts, and it answers the last command sent before it, except that a
    pipelining client (Sendmail) quotes only the last command of a pipelined group: a refusal
    after ">>> DATA" that is followed by another reply before any command answered an earlier
    RCPT TO.
    """
    found: SmtpCommand | None = None
    for session in text.split("while talking to"):
        stage = _session_stage(session)
        if stage is not None:
            found = stage
    return found


def _session_stage(session: str) -> SmtpCommand | None:
    last = SmtpCommand.CONN
    sent_data = False  # the DATA command itself, not the end of the content (">>> .")
    replies_since_command = 0
    transient: SmtpCommand | None = None
    pending: SmtpCommand | None = None  # a refusal after DATA, until we know if pipelined
    for match in _TRANSCRIPT.finditer(session):
        sent, reply = match.group(1), match.group(2)
        if sent is not None:
            if pending is not None:
                return pending
            last = SmtpCommand.DATA if sent == "." else _COMMAND_NAMES[sent]
            sent_data = sent == "data"
            replies_since_command = 0
            continue
        replies_since_command += 1
        if pending is not None:
            return SmtpCommand.RCPT  # a second reply to one DATA: the group was pipelined
        if reply == "5":
            if sent_data and replies_since_command == 1:
                pending = last
                continue
            return last
        if reply == "4" and transient is None:
            transient = last
    return pending or transient
