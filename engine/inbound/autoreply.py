"""RFC 3834 automatic responses: vacation notices, out-of-office, auto-acknowledgements and
challenge-response screens. None of them is a bounce: the address is alive.

RFC 3834 asks responders to send ``Auto-Submitted: auto-replied``, but many do not (and Exim
puts that header on its bounces), so the subject line and the opening of the body are read too.
Callers check for delivery reports first.
"""

from __future__ import annotations

from engine.inbound.message import Headers
from engine.inbound.phrases import PhraseSet

_AUTO_SUBMITTED_REPLY = "auto-replied"
_PRECEDENCE_AUTOREPLY = "auto_reply"
_FLAG_HEADERS = (
    "X-Autoreply",
    "X-Autorespond",
    "X-Autoresponder",
    "X-Vacation",
    "X-AutoReply-From",
)

# Phrases are written against lower-cased, whitespace-collapsed text.
_SUBJECT_MARKERS = PhraseSet(
    [
        "^(?:auto|autoreply|auto-reply|automatic reply|automatische antwort|r[ée]ponse automatique|"
        "respuesta autom[áa]tica|risposta automatica|resposta autom[áa]tica|automatisch antwoord|"
        "automatyczna odpowied) ?:",
        "auto(?:matic)?[- ]?(?:reply|response|responder|antwort)",
        "autoreply",
        "out of (?:the )?office",
        "away from (?:my|the) (?:office|desk|e-?mail)",
        "on (?:vacation|holiday|leave)\\b",
        "vacation (?:reply|notice|message|response|auto)",
        "abwesen(?:d|heit)",
        "nicht im b[üu]ro",
        "urlaub",
        "\\babsence\\b",
        "en cong[ée]",
        "hors du bureau",
        "fuera de la oficina",
        "de vacaciones",
        "\\bausente\\b",
        "fuori (?:sede|ufficio)",
        "in ferie",
        "fora do escrit[óo]rio",
        "em f[ée]rias",
        "afwezig",
        "buiten kantoor",
        "met vakantie",
        "automatyczna odpowied",
        "nieobecno",
        "不在(?:通知|のお知らせ|連絡)",
        "自動(?:返信|応答)",
        "自动(?:回复|答复)",
        "自動回覆",
        "автоответ",
        "автоматический ответ",
        "вне офиса",
        "thank you for (?:your|you) (?:e-?mail|message|enquiry|inquiry)",
        "we (?:have )?received your (?:e-?mail|message|request)",
        "ticket (?:received|created|#)",
    ]
)
_BODY_MARKERS = PhraseSet(
    [
        "i am (?:currently )?(?:out of (?:the )?office|away|on (?:vacation|holiday|leave)|"
        "travell?ing)",
        "i will be (?:out of|away|back)",
        "i will (?:endeavou?r to )?(?:reply|respond|get back)",
        "(?:reply|respond) (?:to you )?as soon as possible",
        "limited access to (?:my )?e-?mail",
        "ich bin (?:bis|vom|derzeit|zur zeit)",
        "bin ich (?:nicht|abwesend)",
        "je suis (?:absent|en cong)",
        "estoy (?:fuera|de vacaciones|ausente)",
        "sono (?:fuori|assente|in ferie)",
        "estou (?:fora|ausente|de f[ée]rias)",
        "ik ben (?:afwezig|met vakantie|niet aanwezig)",
    ]
)
_CHALLENGE_MARKERS = PhraseSet(
    [
        "boxbe",
        "spam ?arrest",
        "bluebottle",
        "mailmorph",
        "sender verification",
        "challenge[- ]response",
        "has been (?:waitlisted|held for verification)",
        "this account is protected by",
        "(?:please|kindly) (?:click|verify|confirm)[^.]{0,60}(?:link|address|e-?mail|human|person)",
        "verify (?:that )?you are (?:a )?(?:real|human)",
        "add yourself to my (?:\\w+ )?(?:guest|allowed|approved|white) ?list",
        "awaiting (?:your )?(?:verification|confirmation)",
    ]
)


def has_autoreply_headers(headers: Headers) -> bool:
    """RFC 3834 and common vendor headers that flag an automatic reply."""
    if headers.get("Auto-Submitted").lower().startswith(_AUTO_SUBMITTED_REPLY):
        return True
    precedence = headers.get("Precedence").lower() or headers.get("X-Precedence").lower()
    if precedence == _PRECEDENCE_AUTOREPLY:
        return True
    return any(headers.has(name) for name in _FLAG_HEADERS)


def is_challenge(text: str) -> bool:
    """Challenge-response screens (Boxbe, SpamArrest, Bluebottle, "please verify").

    ``text`` is the From, Subject and head of the body, normalised (patterns.normalise).
    """
    return _CHALLENGE_MARKERS.search(text)


def is_autoreply(headers: Headers, subject: str, text: str) -> bool:
    """True when the message is an automatic reply (call after bounce/complaint detection).

    ``subject`` and ``text`` (the head of the body) are normalised (patterns.normalise).
    """
    if _SUBJECT_MARKERS.search(subject):
        return True
    if _BODY_MARKERS.search(text):
        return True
    return has_autoreply_headers(headers) and bool(text.strip())
