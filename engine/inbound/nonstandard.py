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

import itertools
import re
from collections.abc import Callable

import msgspec

from engine.inbound.phrases import PhraseSet
from engine.inbound.textscan import same_length_lower

#: Lines of notification text examined at most.
MAX_LINES = 400
#: Diagnostic lines kept per recipient.
MAX_DIAGNOSTIC_LINES = 12
#: Recipients taken from one notification at most.
MAX_RECIPIENTS = 100
#: Characters of the notification that feed a fallback diagnostic.
MAX_FALLBACK_CHARS = 1200
#: Characters of notification text read at most (real notices are a few KB; every pattern
#: below then runs over a bounded text).
MAX_NOTE_CHARS = 32 * 1024

_LOCAL_CHARS = "A-Za-z0-9._%+=&'/!#$*?^`{|}~-"
_DOMAIN = r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?"
_ADDRESS = rf"[{_LOCAL_CHARS}]+@{_DOMAIN}"
# Where the pattern may start inside a run of local-part characters ("to-a-a-a-...@"), the local
# part is bounded (RFC 5321: 64 octets; the engine never sends to a longer one) and possessive:
# unbounded, each such start scanned to the end of the run (quadratic).
_BOUNDED_ADDRESS = rf"[{_LOCAL_CHARS}]{{1,64}}+@{_DOMAIN}"

# A line that starts with a recipient address (optionally quoted, in angle brackets or mailto).
# A list bullet may come first ("   * a@b", "  - a@b", "  1. <a@b>: ...").
_RECIPIENT_LINE = re.compile(
    rf"^[^\S\n]*(?:(?:[*\-•·]|\d{{1,3}}[.)])[^\S\n]+)?"
    rf"(?:[\"']?(?:mailto:)?<?({_ADDRESS})>?[\"']?)(?=$|[\s:,;.(\[<]|\.\.\.)(.*)$"
)
# "Your message to a@b couldn't be delivered", "You sent mail to a@b", "delivered to: a@b" ...
_INLINE_RECIPIENT = re.compile(
    rf"(?:\bto|\bfor|\brecipient|\buser|\bmailbox|\baddressee|\bempf[äa]nger|\bdestinataire|"
    rf"\bdestinatario|\ban|\baan|\bpara|\bdo|\bà|\ba)\b[:\s]*(?:the\s+)?"
    rf"(?:(?:e-?mail\s+)?address(?:e)?\s*:?\s*)?[\"']?<?(?:mailto:)?({_BOUNDED_ADDRESS})>?",
    re.IGNORECASE,
)
# Japanese, Chinese and Russian introductions ("宛先:", "收件人：", "получатель:"; CJK has no
# word gaps). A separate pattern, searched only in non-ASCII text: every alternative more in
# the one above is tried at every position of every notice.
_INLINE_RECIPIENT_INTL = re.compile(
    rf"(?:宛先|送信先|あて先|收件人|收信人|получател[ья]|адресат)[:\s：]*<?({_BOUNDED_ADDRESS})>?",
    re.IGNORECASE,
)
# A match starts only where a run of local-part characters starts (see message._BARE_ADDRESS).
_ANY_ADDRESS = re.compile(rf"(?<![{_LOCAL_CHARS}]){_ADDRESS}")

# Where the copy of the original message starts (everything below it is ours, not the server's).
# Leading blanks are matched within the line ([^\S\n]*): a \s* there would run over every
# following blank line from each line start (quadratic in a run of blank lines).
_ORIGINAL_MARKERS = re.compile(
    r"""^(?:
        [^\S\n]*-{2,}\s*(?:this\s+is\s+a\s+copy|below\s+this\s+line|original\s+message|
            the\s+original\s+message|returned\s+message|unsent\s+message|undelivered\s+message|
            message\s+header|headers?\s+of\s+(?:the\s+)?original|the\s+header\s+of|
            forwarded\s+message|begin\s+(?:original|returned|forwarded)|
            dies\s+ist\s+eine\s+kopie|ceci\s+est\s+une\s+copie|copia\s+del\s+mensaje|
            urspr[üu]ngliche\s+nachricht|message\s+d.origine|mensaje\s+original|
            messaggio\s+originale|mensagem\s+original|oorspronkelijk\s+bericht|
            message\s+truncated|rfc822\s+headers)
        |[^\S\n]*original\s+message\s+follows
        |[^\S\n]*original\s+message\s+headers?\s*:
        |[^\S\n]*original\s+mail\s+as\s+follows
        |[^\S\n]*included\s+is\s+a\s+copy\s+of\s+the\s+message
        |[^\S\n]*the\s+attachment\s+contains\s+the\s+original
        |[^\S\n]*(?:below\s+is\s+a\s+copy\s+of|here\s+is\s+a\s+copy\s+of)\s+the\s+original
        |[^\S\n]*the\s+original\s+message\s+(?:was|is)\s+(?:included|attached)
        |[^\S\n]*------\s*$
        |(?:return-path|received|dkim-signature|message-id|x-pm-job-id):\s
    )""",
    re.MULTILINE | re.VERBOSE,  # searched in lower-cased text: IGNORECASE is 10x slower
)

# Lines carrying a remote server's reply, wherever they sit in the notification.
_REPLY_LINE = re.compile(
    r"^\s*(?:<<<\s*|#|received\s*>>>\s*|diagnostic[- ]code:\s*(?:smtp;\s*)?|"
    r"remote\s+(?:host|server)\s+(?:said|returned)\W*|[\w.-]+\s+said:\s*)?"
    r"[245]\d\d[ -]",
)
_REPLY_INTRO = re.compile(
    r"(?:error that the other server returned was|the response (?:from the remote server )?was|"
    r"remote server returned|remote host said|said:|reason:|because:|weil:|raison\s?:|motivo:|"
    r"diagnostic-code:)",
)
_REMOTE_HOST = re.compile(
    r"(?:\bhost\s+|while talking to\s+|remote host\s+|server\s+)\[?"
    r"([a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+)\.?\]?"
    r"(?=\s*[\[(:]|\s+said|\.:|\s+\d{3}\s)",
)
# "A message sent by\n\n  <a@b>\n\ncould not be delivered": that address is the sender.
_SENDER_INTRO = re.compile(
    r"(?:sent\s+by|\bfrom|envoy[ée]\s+par|gesendet\s+von|enviado\s+por|inviato\s+da|"
    r"verzonden\s+door)\s*:?\s*$",
)
_HAS_REPLY_CODE = re.compile(r"(?:^|[\s(#:])[245]\d\d[\s-]")
_TRAILING_DATE = re.compile(r"^\s*on\s+\w{3},?\s+\d")

# "Your message could not be delivered" in the languages we read; subject or first lines.
# "Your message could not be delivered" in the languages we read (subject or first lines),
# written against lower-cased, whitespace-collapsed text.
BOUNCE_MARKERS = PhraseSet(
    [
        "undeliver",
        "not (?:been )?delivered",
        "(?:could not|cannot|couldn.t) be delivered",
        "delivery (?:status notification|failure|failed|has failed|problem|to the following)",
        "delivery (?:report|notification)",
        "failure notice",
        "returned mail",
        "returned to sender",
        "mail delivery (?:failed|system|subsystem|status)",
        "non-?delivery",
        "nondeliverable",
        "permanent (?:error|failure|fatal)",
        "failed permanently",
        "wasn.t delivered",
        "unable to deliver",
        "error sending your mail",
        "mail system error",
        "\\[bounce\\]",
        "fail(?:ure|ed) delivery",
        "delayed mail",
        "rejected your message",
        "could ?not deliver",
        "delivery (?:error|unsuccessful|incomplete)",
        "message (?:was |has been )?(?:rejected|refused|blocked|bounced)",
        "not deliverable",
        # German
        "unzustellbar",
        "nicht zugestellt",
        "nicht zustellbar",
        "fehlgeschlagen",
        "konnte nicht zugestellt",
        # French
        "non remis",
        "non_remis",
        "non distribuable",
        "n.a pas pu [êe]tre",
        "[ée]chec de (?:la )?(?:remise|livraison|distribution)",
        "impossible de remettre",
        "non d[ée]livr",
        "a [ée]chou[ée]",
        # Spanish
        "no se (?:pudo|puede|ha podido) entregar",
        "no entregad",
        "error de entrega",
        "imposible entregar",
        "mensaje devuelto",
        # Italian
        "non recapitabile",
        "impossibile recapitare",
        "mancato recapito",
        "non [èe] stato possibile (?:recapitare|consegnare)",
        "errore di consegna",
        "non consegnat",
        "non riuscit",
        # Portuguese
        "n[ãa]o (?:p[ôo]de|foi poss[íi]vel) (?:ser )?entreg",
        "n[ãa]o entregue",
        "falha na entrega",
        "imposs[íi]vel entregar",
        "n[ãa]o [ée] poss[íi]vel entregar",
        # Dutch, Polish
        "onbestelbaar",
        "kon niet (?:worden )?(?:bezorgd|afgeleverd)",
        "niet (?:bezorgd|afgeleverd)",
        "bezorging mislukt",
        "is mislukt",
        "nie mo[żz]na dostarczy",
        "niedostarcz",
        # Russian, Chinese, Japanese
        "не (?:может быть |был[оа]? |удалось )?доставлен",
        "недоставленн",
        "退信",
        "无法投递",
        "未能(?:成功)?投递",
        "(?:送信|配信)(?:でき|され)ませんでした",
        "届きませんでした",
        "(?:送信|配信)エラー",
    ]
)
_DELAY_MARKERS = PhraseSet(
    [
        "\\(delay\\)",
        "delayed mail",
        "not yet been delivered",
        "will (?:continue to )?(?:try|retry)",
        "delivery attempts will continue",
        "still (?:trying|being retried)",
        "delivery (?:is |has been )?delayed",
        "this is a warning",
        "warning: could not send",
        "do not need to resend",
        "verz[öo]gert",
        "retard",
        "retrasad",
        "ritardat",
        "atrasad",
        "vertraagd",
    ]
)
#: A mailing list (Mailman, Google Groups, fml, Sympa, LISTSERV) refusing a post: its robot
#: answers instead of a mail system, and the address refused is the list's post address.
_LIST_REFUSAL_MARKERS = PhraseSet(
    [
        "not (?:have )?(?:the )?permission to post",
        "(?:are|is) not (?:allowed|authori[sz]ed|permitted) to (?:post|send)",
        "not a member of (?:this|the) (?:mailing )?(?:list|group)",
        "only (?:members|subscribers) (?:can|may) (?:post|send)",
        "posting (?:to this (?:list|group) )?is restricted",
        "non-?member (?:submission|post)",
        "your (?:message|post|mail) (?:to [^.]{1,80} )?was rejected",
    ]
)
#: Headers only list managers put on their own notices.
_LIST_HEADERS = ("X-MLServer", "X-ML-Name", "X-List-Administrivia", "X-BeenThere", "List-Id")
#: Local-part suffixes of a list's robot addresses: never the refused recipient.
_ROBOT_SUFFIXES = ("-bounces", "-request", "-owner", "-admin", "-ctl", "-errors")
#: Addresses notices name for contact ("please write to postmaster@..."), not recipients.
_ROLE_LOCALPARTS = frozenset({"postmaster", "mailer-daemon", "mail-daemon", "hostmaster", "abuse"})
_DAEMON_LOCALPARTS = frozenset(
    {
        "mailer-daemon",
        "mailer_daemon",
        "mailerdaemon",
        "postmaster",
        "mail-daemon",
        "maildaemon",
        "mdaemon",
        "bounce",
        "bounces",
    }
)
_DAEMON_NAMES = re.compile(
    r"mail\s+deliver(?:y|)\s+(?:system|subsystem|service)|mailer[- ]?daemon|postmaster|"
    r"mail\s+administrator|microsoft\s+outlook|microsoft\s+exchange|system\s+administrator|"
    r"content-filter\s+at|interscan|courier\s+mail\s+server|mail\s+delivery\s+failure|"
    r"\bmaildelivery\b|e-?mail\s+delivery\s+system|internet\s+mail\s+delivery|mailer\s+daemon",
    re.IGNORECASE,
)


class ScrapedRecipient(msgspec.Struct, frozen=True):
    """A recipient found in notification text, with the lines that explain it."""

    address: str
    diagnostic: str | None
    remote_mta: str | None


def notification_body(text: str) -> str:
    """The notification part of ``text``: the lines before the copy of the original message."""
    lines = text[: MAX_NOTE_CHARS + 1].splitlines()[:MAX_LINES]
    head = "\n".join(lines)[:MAX_NOTE_CHARS]
    lowered = same_length_lower(head)
    # Never cut in the first two lines: some notices start with an explanatory header block.
    start = len(lines[0]) + 1 if lines else 0
    if len(lines) > 1:
        start += len(lines[1]) + 1
    found = _ORIGINAL_MARKERS.search(lowered, start)
    return head[: found.start()].rstrip("\n") if found else head


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
    """True when ``text`` (a subject or the head of a notification, normalised) says delivery
    failed."""
    return BOUNCE_MARKERS.search(text)


def is_list_refusal(text: str) -> bool:
    """True when ``text`` (normalised subject and head of the body) says a mailing list refused
    the post."""
    return _LIST_REFUSAL_MARKERS.search(text)


def list_headers_present(has: Callable[[str], bool]) -> bool:
    """Whether any list-manager header is present (``has`` answers per header name)."""
    return any(has(name) for name in _LIST_HEADERS)


def is_robot_address(address: str) -> bool:
    """A list robot (``announce-bounces@``, ``-request@``, ``-owner@`` ...) or a role account."""
    local = address.lower().split("@", 1)[0]
    return local in _ROLE_LOCALPARTS or local.split("+", 1)[0].endswith(_ROBOT_SUFFIXES)


def is_delay_notice(subject: str, text: str) -> bool:
    """True for "still trying" warnings (a delay, not a failure: the recipient stays soft).
    Both arguments are normalised."""
    return _DELAY_MARKERS.search(subject) or _DELAY_MARKERS.search(text)


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
    head: list[tuple[str, frozenset[str]]] | None = None
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
            if head is None:
                head = _fallback_lines(text)
            diagnostic = _fallback_text(head, address, found)
        result.append(ScrapedRecipient(address, diagnostic or None, remote_host(diagnostic)))
    return result


def _fallback_lines(text: str) -> list[tuple[str, frozenset[str]]]:
    """The head of the notice, line by line, with the (lower-case) addresses each names."""
    return [
        (line, frozenset(a.lower() for a in _ANY_ADDRESS.findall(line)))
        for line in text[:MAX_FALLBACK_CHARS].splitlines()
    ]


def _fallback_text(head: list[tuple[str, frozenset[str]]], address: str, found: _Found) -> str:
    """The head of the notice as the diagnostic of a recipient whose own lines say nothing,
    less the lines that name the other recipients (their reasons are not this one's)."""
    own = address.lower()
    kept = [line for line, named in head if not any(a != own and a in found for a in named)]
    return " ".join(" ".join(kept).split())


def remote_host(diagnostic: str | None) -> str | None:
    """The remote MTA named in a diagnostic ("host mx.b[1.2.3.4] said:"), or None."""
    if not diagnostic:
        return None
    found = _REMOTE_HOST.search(diagnostic.lower())
    return found.group(1).lower().rstrip(".") if found else None


_Found = dict[str, tuple[str, list[str]]]  # lower-case address -> (address as written, lines)


def _recipient_lines(lines: list[str], exclude: frozenset[str]) -> _Found:
    found: _Found = {}
    index = 0
    previous = ""
    while index < len(lines) and len(found) < MAX_RECIPIENTS:
        line = lines[index]
        match = _RECIPIENT_LINE.match(line) if "@" in line else None
        index += 1
        if match is None:
            if line.strip():
                previous = line
            continue
        address = match.group(1).strip(".")
        if not_a_recipient(address, exclude) or _SENDER_INTRO.search(previous.lower()):
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
        if "@" in line and _RECIPIENT_LINE.match(line):
            break
        block.append(line.strip())
        index += 1
    return index


def not_a_recipient(address: str, exclude: frozenset[str]) -> bool:
    """Ours (``exclude``), a role account a notice names for contact or a list robot, never
    the failed one."""
    return address.lower() in exclude or is_robot_address(address)


def _inline_recipients(text: str, exclude: frozenset[str]) -> _Found:
    found: _Found = {}
    matches = _INLINE_RECIPIENT.finditer(text)
    if not text.isascii():
        matches = itertools.chain(matches, _INLINE_RECIPIENT_INTL.finditer(text))
    for match in matches:
        address = match.group(1).strip(".")
        key = address.lower()
        if not_a_recipient(address, exclude) or key in found:
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
        lowered = stripped.lower()
        if take_next or _REPLY_LINE.match(lowered):
            cleaned = " ".join(stripped.lstrip("<#").split())
            if cleaned not in replies:
                replies.append(cleaned)
            take_next = False
            continue
        if lowered.endswith(":") and _REPLY_INTRO.search(lowered):
            take_next = True
    return replies[:MAX_DIAGNOSTIC_LINES]
