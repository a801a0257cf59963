"""Human-readable bounces: Postfix, Sendmail, Exim, qmail, Exchange/Office 365, Gmail, Yahoo,
Outlook.com, AOL, iCloud, Courier, Domino/Notes, GroupWise and plain "could not be delivered"
notices in English, German, French, Spanish, Italian, Portuguese, Dutch and Polish.

Rather than one scraper per MTA (sisimai has sixty), the notification text is read the way these
formats are laid out: a recipient line (``<a@b>:``, ``  a@b``, ``a@b on <date>``,
``a@b (user not found)``) followed by its diagnostic lines; when a format gives the server's
answer elsewhere (Gmail's "The error that the other server returned was:", Sendmail's session
transcript, Office 365's "Remote Server returned"), those reply lines are attached to the
recipient. Only the text before the copy of the original message is read.
"""

from __future__ import annotations

import re

import msgspec

#: Lines of notification text examined at most.
MAX_LINES = 400
#: Diagnostic lines kept per recipient.
MAX_DIAGNOSTIC_LINES = 12
#: Recipients taken from one notification at most.
MAX_RECIPIENTS = 100
#: Characters of the notification that feed a fallback diagnostic.
MAX_FALLBACK_CHARS = 1200

_ADDRESS = r"[A-Za-z0-9._%+=&'/!#$*?^`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?"

# A line that starts with a recipient address (optionally quoted, in angle brackets or mailto).
_RECIPIENT_LINE = re.compile(
    rf"^\s*(?:[\"']?(?:mailto:)?<?({_ADDRESS})>?[\"']?)(?=$|[\s:,;.(\[]|\.\.\.)(.*)$"
)
# "Your message to a@b couldn't be delivered", "You sent mail to a@b", "delivered to: a@b" ...
_INLINE_RECIPIENT = re.compile(
    rf"(?:\bto|\bfor|\brecipient|\bempf[äa]nger|\bdestinataire|\bdestinatario|\ban|\baan|"
    rf"\bpara|\bdo|\bà|\ba)\b:?\s*(?:the\s+)?(?:address\s+)?[\"']?<?(?:mailto:)?({_ADDRESS})>?",
    re.IGNORECASE,
)
_ANY_ADDRESS = re.compile(_ADDRESS)

# Where the copy of the original message starts (everything below it is ours, not the server's).
_ORIGINAL_MARKERS = re.compile(
    r"""^(?:
        \s*-{2,}\s*(?:this\s+is\s+a\s+copy|below\s+this\s+line|original\s+message|
            the\s+original\s+message|returned\s+message|unsent\s+message|undelivered\s+message|
            message\s+header|headers?\s+of\s+(?:the\s+)?original|the\s+header\s+of|
            forwarded\s+message|begin\s+(?:original|returned|forwarded)|
            dies\s+ist\s+eine\s+kopie|ceci\s+est\s+une\s+copie|copia\s+del\s+mensaje|
            urspr[üu]ngliche\s+nachricht|message\s+d.origine|mensaje\s+original|
            messaggio\s+originale|mensagem\s+original|oorspronkelijk\s+bericht|
            message\s+truncated|rfc822\s+headers)
        |\s*original\s+message\s+follows
        |\s*the\s+original\s+message\s+(?:was|is)\s+(?:included|attached)
        |\s*------\s*$
        |(?:return-path|received|dkim-signature|message-id|x-pm-job-id):\s
    )""",
    re.IGNORECASE | re.VERBOSE,
)

# Lines carrying a remote server's reply, wherever they sit in the notification.
_REPLY_LINE = re.compile(
    r"^\s*(?:<<<\s*|#|remote\s+(?:host|server)\s+(?:said|returned)\W*|[\w.-]+\s+said:\s*)?"
    r"[245]\d\d[ -]",
    re.IGNORECASE,
)
_REPLY_INTRO = re.compile(
    r"(?:error that the other server returned was|the response (?:from the remote server )?was|"
    r"remote server returned|remote host said|said:|reason:|because:|weil:|raison\s?:|motivo:|"
    r"diagnostic-code:)",
    re.IGNORECASE,
)
_REMOTE_HOST = re.compile(
    r"(?:\bhost\s+|while talking to\s+|remote host\s+|server\s+)\[?"
    r"([a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+)\.?\]?"
    r"(?=\s*[\[(:]|\s+said|\.:|\s+\d{3}\s)",
    re.IGNORECASE,
)
# "A message sent by\n\n  <a@b>\n\ncould not be delivered": that address is the sender.
_SENDER_INTRO = re.compile(
    r"(?:sent\s+by|\bfrom|envoy[ée]\s+par|gesendet\s+von|enviado\s+por|inviato\s+da|"
    r"verzonden\s+door)\s*:?\s*$",
    re.IGNORECASE,
)
_HAS_REPLY_CODE = re.compile(r"(?:^|[\s(#:])[245]\d\d[\s-]")
_TRAILING_DATE = re.compile(r"^\s*on\s+\w{3},?\s+\d", re.IGNORECASE)

# "Your message could not be delivered" in the languages we read; subject or first lines.
BOUNCE_MARKERS = re.compile(
    r"""(?:undeliver|undelivered|not\s+(?:been\s+)?delivered|(?:could\s+not|cannot)\s+be\s+delivered|
        couldn.t\s+be\s+delivered|delivery\s+(?:status\s+notification|failure|failed|has\s+failed|
        problem|to\s+the\s+following)|failure\s+notice|returned\s+mail|returned\s+to\s+sender|
        mail\s+delivery\s+(?:failed|system|subsystem)|non[- ]?delivery|nondeliverable|
        permanent\s+(?:error|failure|fatal)|failed\s+permanently|wasn.t\s+delivered|
        was\s+not\s+delivered|unable\s+to\s+deliver|message\s+not\s+delivered|
        unzustellbar|nicht\s+zugestellt|nicht\s+zustellbar|zustellung\s+fehlgeschlagen|
        konnte\s+nicht\s+zugestellt|unzustellbare|
        non\s+remis|non\s+distribuable|n.a\s+pas\s+pu\s+[êe]tre|[ée]chec\s+de\s+(?:la\s+)?
            (?:remise|livraison|distribution)|impossible\s+de\s+remettre|non\s+d[ée]livr|
        no\s+se\s+(?:pudo|puede|ha\s+podido)\s+entregar|no\s+entregad|error\s+de\s+entrega|
            imposible\s+entregar|mensaje\s+devuelto|
        non\s+recapitabile|impossibile\s+recapitare|mancato\s+recapito|non\s+[èe]\s+stato\s+
            possibile\s+(?:recapitare|consegnare)|errore\s+di\s+consegna|non\s+consegnat|
        n[ãa]o\s+(?:p[ôo]de|foi\s+poss[íi]vel)\s+(?:ser\s+)?entreg|n[ãa]o\s+entregue|
            falha\s+na\s+entrega|imposs[íi]vel\s+entregar|n[ãa]o\s+[ée]\s+poss[íi]vel\s+entregar|
        onbestelbaar|kon\s+niet\s+(?:worden\s+)?(?:bezorgd|afgeleverd)|niet\s+(?:bezorgd|
            afgeleverd)|bezorging\s+mislukt|
        nie\s+mo[żz]na\s+dostarczy|niedostarcz)""",
    re.IGNORECASE | re.VERBOSE,
)
_DELAY_MARKERS = re.compile(
    r"""(?:\(delay\)|delayed\s+mail|has\s+not\s+yet\s+been\s+delivered|not\s+yet\s+been\s+
        delivered|will\s+(?:continue\s+to\s+)?(?:try|retry)|delivery\s+attempts\s+will\s+continue|
        still\s+(?:trying|being\s+retried)|delivery\s+(?:is\s+|has\s+been\s+)?delayed|
        this\s+is\s+a\s+warning|warning:\s+could\s+not\s+send|do\s+not\s+need\s+to\s+resend|
        verz[öo]gert|retard|retrasad|ritardat|atrasad|vertraagd)""",
    re.IGNORECASE | re.VERBOSE,
)
_DAEMON_LOCALPARTS = frozenset(
    {"mailer-daemon", "postmaster", "mail-daemon", "maildaemon", "mdaemon", "bounce", "bounces"}
)
_DAEMON_NAMES = re.compile(
    r"mail\s+delivery\s+(?:system|subsystem|service)|mailer-daemon|postmaster|"
    r"mail\s+administrator|microsoft\s+outlook|system\s+administrator",
    re.IGNORECASE,
)


class ScrapedRecipient(msgspec.Struct, frozen=True):
    """A recipient found in notification text, with the lines that explain it."""

    address: str
    diagnostic: str | None
    remote_mta: str | None


def notification_body(text: str) -> str:
    """The notification part of ``text``: the lines before the copy of the original message."""
    lines = text.splitlines()[:MAX_LINES]
    for index, line in enumerate(lines):
        # Never cut in the first lines: some notices start with an explanatory header block.
        if index > 1 and _ORIGINAL_MARKERS.match(line):
            return "\n".join(lines[:index])
    return "\n".join(lines)


def is_daemon_sender(from_header: str) -> bool:
    """True when the From header looks like an MTA (MAILER-DAEMON, postmaster, empty)."""
    stripped = from_header.strip()
    if stripped in ("", "<>"):
        return True
    if _DAEMON_NAMES.search(stripped):
        return True
    found = _ANY_ADDRESS.search(stripped)
    return bool(found and found.group(0).split("@")[0].lower() in _DAEMON_LOCALPARTS)


def has_bounce_markers(text: str) -> bool:
    """True when ``text`` (a subject or the head of a notification) says delivery failed."""
    return bool(BOUNCE_MARKERS.search(text))


def is_delay_notice(subject: str, text: str) -> bool:
    """True for "still trying" warnings (a delay, not a failure: the recipient stays soft)."""
    return bool(_DELAY_MARKERS.search(subject) or _DELAY_MARKERS.search(text[:4000]))


def scrape(text: str, exclude: frozenset[str]) -> list[ScrapedRecipient]:
    """Recipients and their diagnostics from notification text (already cut by
    :func:`notification_body`); addresses in ``exclude`` (lower-case: the sender, the VERP
    address, postmaster) are never recipients."""
    lines = text.splitlines()
    found = _recipient_lines(lines, exclude)
    if not found:
        found = _inline_recipients(text, exclude)
    if not found:
        return []
    replies = _reply_lines(lines)
    result: list[ScrapedRecipient] = []
    for address, block in found.values():
        diagnostic = " ".join(" ".join(block).split())
        if (
            replies
            and not _HAS_REPLY_CODE.search(diagnostic)
            and (len(found) == 1 or not diagnostic)
        ):
            # The reply is elsewhere in the text (transcript, "The error ... was:").
            extra = [r for r in replies if r not in diagnostic]
            diagnostic = " ".join([diagnostic, *extra]).strip()
        if not diagnostic:
            diagnostic = " ".join(text[:MAX_FALLBACK_CHARS].split())
        result.append(ScrapedRecipient(address, diagnostic or None, remote_host(diagnostic)))
    return result


def remote_host(diagnostic: str | None) -> str | None:
    """The remote MTA named in a diagnostic ("host mx.b[1.2.3.4] said:"), or None."""
    if not diagnostic:
        return None
    found = _REMOTE_HOST.search(diagnostic)
    return found.group(1).lower().rstrip(".") if found else None


_Found = dict[str, tuple[str, list[str]]]  # lower-case address -> (address as written, lines)


def _recipient_lines(lines: list[str], exclude: frozenset[str]) -> _Found:
    found: _Found = {}
    index = 0
    previous = ""
    while index < len(lines) and len(found) < MAX_RECIPIENTS:
        line = lines[index]
        match = _RECIPIENT_LINE.match(line)
        index += 1
        if match is None:
            if line.strip():
                previous = line
            continue
        address = match.group(1).strip(".")
        if address.lower() in exclude or _SENDER_INTRO.search(previous):
            previous = line
            continue
        rest = match.group(2).strip().lstrip(":.").strip()
        if _TRAILING_DATE.match(rest):
            rest = ""
        block = [rest] if rest else []
        index = _collect_block(lines, index, block)
        found.setdefault(address.lower(), (address, []))[1].extend(block)
        previous = line
    return found


def _collect_block(lines: list[str], index: int, block: list[str]) -> int:
    """Append the diagnostic lines following a recipient line; returns the next line index."""
    blanks = 0
    while index < len(lines) and len(block) < MAX_DIAGNOSTIC_LINES:
        line = lines[index]
        if not line.strip():
            # Skip the blank lines between a recipient and a "because:" style block, but end the
            # block once something has been said.
            if block and not block[-1].rstrip().endswith(":"):
                break
            blanks += 1
            if blanks > 3:
                break
            index += 1
            continue
        if _RECIPIENT_LINE.match(line):
            break
        block.append(line.strip())
        index += 1
    return index


def _inline_recipients(text: str, exclude: frozenset[str]) -> _Found:
    found: _Found = {}
    for match in _INLINE_RECIPIENT.finditer(text):
        address = match.group(1).strip(".")
        key = address.lower()
        if key in exclude or key in found:
            continue
        found[key] = (address, [])
        if len(found) >= MAX_RECIPIENTS:
            break
    return found


def _reply_lines(lines: list[str]) -> list[str]:
    """Server replies quoted anywhere in the text (and the line after a "was:" intro)."""
    replies: list[str] = []
    take_next = False
    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        if take_next or _REPLY_LINE.match(stripped):
            cleaned = " ".join(stripped.lstrip("<#").split())
            if cleaned not in replies:
                replies.append(cleaned)
            take_next = False
            continue
        lowered = stripped.lower()
        if _REPLY_INTRO.search(lowered) and lowered.endswith(":"):
            take_next = True
    return replies[:MAX_DIAGNOSTIC_LINES]
