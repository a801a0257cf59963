"""RFC 3834 automatic responses: vacation notices, out-of-office, auto-acknowledgements and
challenge-response screens. None of them is a bounce: the address is alive.

RFC 3834 asks responders to send ``Auto-Submitted: auto-replied``, but many do not (and Exim
puts that header on its bounces), so the subject line and the opening of the body are read too.
Callers check for delivery reports first.
"""

from __future__ import annotations

import re

from engine.inbound.message import Message, header

_AUTO_SUBMITTED_REPLY = "auto-replied"
_PRECEDENCE_AUTOREPLY = "auto_reply"
_FLAG_HEADERS = (
    "X-Autoreply",
    "X-Autorespond",
    "X-Autoresponder",
    "X-Vacation",
    "X-AutoReply-From",
)

_SUBJECT_MARKERS = re.compile(
    r"""(?:^\s*(?:auto|autoreply|auto-reply|automatic\s+reply|automatische\s+antwort|
        r[ée]ponse\s+automatique|respuesta\s+autom[áa]tica|risposta\s+automatica|
        resposta\s+autom[áa]tica|automatisch\s+antwoord|automatyczna\s+odpowied)\s*:
        |\bauto(?:matic)?[- ]?(?:reply|response|responder|antwort)\b|\bautoreply\b
        |out\s+of\s+(?:the\s+)?office|away\s+from\s+(?:my|the)\s+(?:office|desk|e-?mail)
        |\bon\s+(?:vacation|holiday|leave)\b|\bvacation\s+(?:reply|notice|message|response|auto)
        |abwesen(?:d|heit)|nicht\s+im\s+b[üu]ro|urlaub
        |\babsence\b|en\s+cong[ée]|hors\s+du\s+bureau
        |fuera\s+de\s+la\s+oficina|de\s+vacaciones|\bausente\b
        |fuori\s+(?:sede|ufficio)|in\s+ferie
        |fora\s+do\s+escrit[óo]rio|em\s+f[ée]rias
        |afwezig|buiten\s+kantoor|met\s+vakantie
        |automatyczna\s+odpowied|nieobecno
        |thank\s+you\s+for\s+(?:your|you)\s+(?:e-?mail|message|enquiry|inquiry)
        |we\s+(?:have\s+)?received\s+your\s+(?:e-?mail|message|request)
        |ticket\s+(?:received|created|\#))""",
    re.IGNORECASE | re.VERBOSE,
)
_BODY_MARKERS = re.compile(
    r"""(?:i\s+am\s+(?:currently\s+)?(?:out\s+of\s+(?:the\s+)?office|away|on\s+(?:vacation|
        holiday|leave)|travell?ing)|i\s+will\s+be\s+(?:out\s+of|away|back)|
        i\s+will\s+(?:endeavou?r\s+to\s+)?(?:reply|respond|get\s+back)|
        (?:reply|respond)\s+(?:to\s+you\s+)?as\s+soon\s+as\s+possible|
        limited\s+access\s+to\s+(?:my\s+)?e-?mail|
        ich\s+bin\s+(?:bis|vom|derzeit|zur\s+zeit)|bin\s+ich\s+(?:nicht|abwesend)|
        je\s+suis\s+(?:absent|en\s+cong)|estoy\s+(?:fuera|de\s+vacaciones|ausente)|
        sono\s+(?:fuori|assente|in\s+ferie)|estou\s+(?:fora|ausente|de\s+f[ée]rias)|
        ik\s+ben\s+(?:afwezig|met\s+vakantie|niet\s+aanwezig))""",
    re.IGNORECASE | re.VERBOSE,
)
_CHALLENGE_MARKERS = re.compile(
    r"""(?:boxbe|spam\s*arrest|bluebottle|mailmorph|sender\s+verification|
        challenge[- ]response|has\s+been\s+(?:waitlisted|held\s+for\s+verification)|
        this\s+account\s+is\s+protected\s+by|
        (?:please|kindly)\s+(?:click|verify|confirm)[^.]{0,60}(?:link|address|e-?mail|human|person)|
        verify\s+(?:that\s+)?you\s+are\s+(?:a\s+)?(?:real|human)|
        add\s+yourself\s+to\s+my\s+(?:\w+\s+)?(?:guest|allowed|approved|white)\s*list|
        awaiting\s+(?:your\s+)?(?:verification|confirmation))""",
    re.IGNORECASE | re.VERBOSE,
)


def has_autoreply_headers(msg: Message) -> bool:
    """RFC 3834 and common vendor headers that flag an automatic reply."""
    if header(msg, "Auto-Submitted").lower().startswith(_AUTO_SUBMITTED_REPLY):
        return True
    precedence = header(msg, "Precedence").lower() or header(msg, "X-Precedence").lower()
    if precedence == _PRECEDENCE_AUTOREPLY:
        return True
    return any(msg.get(name) is not None for name in _FLAG_HEADERS)


def is_challenge(subject: str, from_header: str, text: str) -> bool:
    """Challenge-response screens (Boxbe, SpamArrest, Bluebottle, "please verify")."""
    return bool(
        _CHALLENGE_MARKERS.search(from_header)
        or _CHALLENGE_MARKERS.search(subject)
        or _CHALLENGE_MARKERS.search(text[:3000])
    )


def is_autoreply(msg: Message, subject: str, text: str) -> bool:
    """True when ``msg`` is an automatic reply (call after bounce/complaint detection)."""
    if _SUBJECT_MARKERS.search(subject):
        return True
    if _BODY_MARKERS.search(text[:2000]):
        return True
    return has_autoreply_headers(msg) and bool(text.strip())
