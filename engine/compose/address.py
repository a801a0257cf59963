"""Mailbox parsing: one address, strict enough for both the SMTP envelope and the header.

A job's ``to`` and ``from`` are a single mailbox: a bare addr-spec (``bob@example.com``) or
``Display Name <bob@example.com>``. The addr-spec follows RFC 5321 §4.1.2 (what can go in
``RCPT TO``), extended by RFC 6531 (UTF-8 local parts, sent with SMTPUTF8). Domains are IDNA
2008 / UTS #46 encoded (``bücher.example`` -> ``xn--bcher-kva.example``) and lower-cased, so a
recipient domain compares equal however the platform spelled it.

Refused on purpose: address literals (``user@[192.0.2.1]`` — shaping needs a domain to find the
MX), dotless or numeric-TLD domains, comments, group syntax, several addresses, and display names
that contain an address (``"ceo@bank.example" <x@evil.example>`` is a phishing trick).
"""

from __future__ import annotations

import functools
import re

import idna
import msgspec

from engine.errors import JobValidationError

# RFC 5322 §3.2.3 atext; RFC 6531 adds any non-ASCII UTF-8 (checked separately for controls).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]+"
_DOT_ATOM_LOCAL = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_ASCII_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
# A bare ASCII addr-spec: the fast path of parse_address (the domain is still fully checked).
_PLAIN = re.compile(rf"({_ASCII_ATEXT}(?:\.{_ASCII_ATEXT})*)@([A-Za-z0-9.-]{{1,253}})")
# RFC 5321 §4.1.2 Quoted-string: qtextSMTP (%d32-33 / %d35-91 / %d93-126) or a quoted-pair.
_QUOTED_LOCAL = re.compile(r'"(?:[ !#-\[\]-~\u0080-\U0010ffff]|\\[ -~])*"')
# An LDH label (RFC 1035 / 5890): letters, digits, hyphen, not at either end, 1..63 chars.
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# Characters that make a display name unsafe or ambiguous: controls, and what separates or
# delimits addresses. "@" is refused because a display name that looks like an address is the
# classic way to make a message appear to come from someone else.
_BAD_DISPLAY = re.compile(r"[\x00-\x1f\x7f<>@]")
_BAD_DISPLAY_UNQUOTED = re.compile(r"[\x00-\x1f\x7f<>@,;]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0080-\u009f\u2028\u2029]")

MAX_LOCAL_OCTETS = 64  # RFC 5321 §4.5.3.1.1
MAX_DOMAIN_OCTETS = 253  # RFC 1035 (255 on the wire minus the length bytes)
MAX_ADDRESS_OCTETS = 254  # RFC 5321 path limit (256) minus the angle brackets


class Address(msgspec.Struct, frozen=True):
    """One parsed mailbox. ``domain`` is always ASCII (IDNA A-labels) and lower-case."""

    local: str
    domain: str
    display_name: str = ""

    @property
    def addr_spec(self) -> str:
        """``local@domain``, as it goes into ``RCPT TO`` / ``MAIL FROM`` and angle brackets."""
        return f"{self.local}@{self.domain}"

    @property
    def smtputf8(self) -> bool:
        """True when the local part is non-ASCII, so the message needs SMTPUTF8 (RFC 6531)."""
        return not self.local.isascii()


def parse_address(value: str) -> Address:
    """Parse one mailbox (``a@b`` or ``Name <a@b>``) into an :class:`Address`.

    Raises :class:`JobValidationError` whose message says what is wrong with ``value``.
    """
    fast = _PLAIN.fullmatch(value)
    if fast is not None and len(fast[1]) <= MAX_LOCAL_OCTETS and len(value) <= MAX_ADDRESS_OCTETS:
        # The common case (shaping calls this for every message): ASCII dot-atom@domain.
        return Address(local=fast[1], domain=normalise_domain(fast[2], value))
    if not isinstance(value, str) or not value.strip():
        raise JobValidationError("address is empty")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise JobValidationError(f"address {value!r} is not valid UTF-8") from None
    if _CONTROL.search(value):
        raise JobValidationError(
            f"address {value!r} contains a control character (CR/LF/NUL are header injection)"
        )
    display, addr = _split_display(value.strip())
    at = addr.rfind("@")
    if at < 0:
        raise JobValidationError(f"address {value!r} has no '@'")
    local, domain = addr[:at], addr[at + 1 :]
    _check_local(local, value)
    ascii_domain = normalise_domain(domain, value)
    if len(local.encode()) + 1 + len(ascii_domain) > MAX_ADDRESS_OCTETS:
        raise JobValidationError(f"address {value!r} is longer than {MAX_ADDRESS_OCTETS} octets")
    return Address(local=local, domain=ascii_domain, display_name=display)


def _split_display(value: str) -> tuple[str, str]:
    """Split ``Name <addr>`` into (name, addr); a bare addr-spec gives ("", addr)."""
    if not value.endswith(">"):
        if "<" in value or ">" in value:
            raise JobValidationError(f"address {value!r} has unbalanced angle brackets")
        return "", value
    lt = value.find("<")
    if lt < 0 or value.count("<") != 1 or value.count(">") != 1:
        raise JobValidationError(
            f"address {value!r} must be one mailbox: 'addr@domain' or 'Name <addr@domain>'"
        )
    display, addr = value[:lt].strip(), value[lt + 1 : -1].strip()
    quoted = len(display) >= 2 and display[0] == '"' and display[-1] == '"'
    if quoted:
        inner = display[1:-1]
        if re.search(r'(?<!\\)"', inner):
            raise JobValidationError(f"address {value!r} has a badly quoted display name")
        display = re.sub(r"\\(.)", r"\1", inner)
    elif '"' in display:
        raise JobValidationError(f"address {value!r} has a badly quoted display name")
    # Inside quotes "," and ";" are just text ("Doe, John"); unquoted they separate addresses.
    if (_BAD_DISPLAY if quoted else _BAD_DISPLAY_UNQUOTED).search(display):
        raise JobValidationError(
            f"address {value!r}: the display name may not contain '@', '<' or '>' (nor, "
            "unquoted, ',' or ';'): it would look like, or smuggle in, another address"
        )
    return display, addr


def _check_local(local: str, original: str) -> None:
    if not local:
        raise JobValidationError(f"address {original!r} has an empty local part")
    if len(local.encode()) > MAX_LOCAL_OCTETS:
        raise JobValidationError(
            f"address {original!r}: local part is longer than {MAX_LOCAL_OCTETS} octets"
        )
    if local.startswith('"'):
        if not _QUOTED_LOCAL.fullmatch(local):
            raise JobValidationError(f"address {original!r} has a malformed quoted local part")
    elif not _DOT_ATOM_LOCAL.fullmatch(local):
        raise JobValidationError(
            f"address {original!r} has an invalid local part (spaces, commas, brackets, "
            "leading/trailing/double dots need quoting; several addresses are not allowed)"
        )


def normalise_domain(domain: str, original: str | None = None) -> str:
    """Return ``domain`` as lower-case ASCII (IDNA A-labels), or raise JobValidationError."""
    shown = original if original is not None else domain
    if domain.startswith("["):
        raise JobValidationError(
            f"address {shown!r}: address literals are not accepted, use a domain name"
        )
    try:
        return _normalise_domain(domain)
    except ValueError as exc:
        raise JobValidationError(f"address {shown!r} has an invalid domain: {exc}") from None


@functools.lru_cache(maxsize=8192)
def _normalise_domain(domain: str) -> str:
    # Cached: shaping calls parse_address for every message, and recipients cluster on a few
    # thousand domains; the IDNA path is slow, the ASCII path a regex per label.
    if domain.endswith("."):
        domain = domain[:-1]  # a root dot is legal in DNS but not in a mail address
    if not domain:
        raise ValueError("it is empty")
    if domain.isascii():
        ascii_domain = domain.lower()
    else:
        try:
            ascii_domain = idna.encode(domain, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise ValueError(f"not a valid internationalised domain ({exc})") from None
    if len(ascii_domain) > MAX_DOMAIN_OCTETS:
        raise ValueError(f"longer than {MAX_DOMAIN_OCTETS} characters")
    labels = ascii_domain.split(".")
    if len(labels) < 2:
        raise ValueError("a mail domain needs at least one dot")
    for label in labels:
        if not _LDH_LABEL.fullmatch(label):
            raise ValueError(f"label {label!r} is not letters, digits and inner hyphens (1-63)")
    if labels[-1].isdigit():
        raise ValueError("the top-level label is numeric (an IP address needs brackets)")
    return ascii_domain
