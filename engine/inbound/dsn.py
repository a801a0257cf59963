"""RFC 3464 delivery-status fields (and RFC 6533 message/global-delivery-status).

A delivery-status body is one per-message field block followed by one block per recipient,
separated by blank lines. The field text is parsed here without the MIME layer so the same code
serves message/delivery-status, message/global-delivery-status and the many MTAs that paste
DSN fields into a text/plain part.
"""

from __future__ import annotations

import itertools
import re

import msgspec

from engine.inbound.textscan import first_address

#: Field blocks beyond this many are ignored (a DSN for thousands of recipients is an attack).
MAX_RECIPIENT_BLOCKS = 500
#: Lines read at most (500 blocks of a dozen fields; decoded text can hold far more lines
#: than the MIME parser's line cap counts, each a Python step here).
MAX_FIELD_LINES = 20_000

_RECIPIENT_FIELDS = frozenset({"final-recipient", "original-recipient", "x-actual-recipient"})
_UNITEXT_ESCAPE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
_FIELD_LINE = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$")


class DsnRecipient(msgspec.Struct, frozen=True):
    """One per-recipient block of a delivery-status report, before classification."""

    address: str
    original_recipient: str | None
    action: str | None
    status: str | None
    diagnostic: str | None
    diagnostic_type: str | None
    remote_mta: str | None


class DeliveryStatus(msgspec.Struct, frozen=True):
    """The parsed report: per-message fields and recipients."""

    reporting_mta: str | None
    recipients: tuple[DsnRecipient, ...]


def parse_field_blocks(text: str) -> list[dict[str, str]]:
    """Split field text into blocks of ``{lower-case name: unfolded value}``.

    Continuation lines (leading whitespace) are joined to the field before them; lines that are
    not fields are skipped, so prose around pasted fields does no harm.
    """
    # Values are kept as lists of pieces and joined once per block: appending each
    # continuation line to the value would copy it every time (quadratic in a folded field).
    blocks: list[dict[str, str]] = []
    current: dict[str, list[str]] = {}
    last: list[str] | None = None
    for line in itertools.islice(text.splitlines(), MAX_FIELD_LINES):
        if not line.strip():
            if current:
                blocks.append(_joined(current))
                if len(blocks) > MAX_RECIPIENT_BLOCKS:
                    return blocks
                current = {}
            last = None
            continue
        if line[0] in " \t":
            if last is not None:
                last.append(line.strip())
            continue
        found = _FIELD_LINE.match(line)
        if found is None:
            last = None
            continue
        name = found.group(1).lower()
        # The first occurrence wins (a repeated field is a malformed report, not an update).
        if name in current:
            last = None
            continue
        last = current[name] = [found.group(2).strip()]
    if current:
        blocks.append(_joined(current))
    return blocks


def _joined(block: dict[str, list[str]]) -> dict[str, str]:
    return {name: " ".join(pieces) for name, pieces in block.items()}


def from_blocks(blocks: list[dict[str, str]]) -> DeliveryStatus:
    """Build the report from parsed blocks; blocks without a recipient field are per-message."""
    reporting_mta: str | None = None
    recipients: list[DsnRecipient] = []
    for block in blocks:
        if "reporting-mta" in block and reporting_mta is None:
            reporting_mta = _strip_type(block["reporting-mta"])
        if not _RECIPIENT_FIELDS.intersection(block):
            continue
        recipient = _recipient(block)
        if recipient is not None:
            recipients.append(recipient)
    return DeliveryStatus(reporting_mta, tuple(recipients))


def parse_delivery_status(text: str) -> DeliveryStatus:
    """Parse delivery-status field text (any of the three sources named in the module doc)."""
    return from_blocks(parse_field_blocks(text))


def _recipient(block: dict[str, str]) -> DsnRecipient | None:
    final = decode_address(block.get("final-recipient", ""))
    original = decode_address(block.get("original-recipient", ""))
    actual = decode_address(block.get("x-actual-recipient", ""))
    address = _best_address(final, actual, original) or _local_name(block)
    if not address:
        return None
    diagnostic_raw = block.get("diagnostic-code", "")
    diagnostic_type: str | None = None
    diagnostic: str | None = None
    if diagnostic_raw:
        kind, sep, rest = diagnostic_raw.partition(";")
        if sep and " " not in kind.strip():
            diagnostic_type = kind.strip().upper()
            diagnostic = " ".join(rest.split()) or None
        else:
            diagnostic = " ".join(diagnostic_raw.split()) or None
    remote = block.get("remote-mta")
    return DsnRecipient(
        address=address,
        original_recipient=original,
        action=(block.get("action") or "").split()[0].lower() if block.get("action") else None,
        status=block.get("status") or None,
        diagnostic=diagnostic,
        diagnostic_type=diagnostic_type,
        remote_mta=_strip_type(remote) if remote else None,
    )


def _local_name(block: dict[str, str]) -> str | None:
    """A Final-Recipient with no domain at all (``LOCAL;jdoe``): kept as an internal name so
    the caller can put the original message's To in its place with this block's diagnostics."""
    _, _, value = block.get("final-recipient", "").rpartition(";")
    token = value.strip().strip("<>\"'")
    if not token or len(token) > 64 or any(c.isspace() for c in token):
        return None
    return token


def _best_address(final: str | None, actual: str | None, original: str | None) -> str | None:
    """The address the sender wrote, when the Final-Recipient is only the reporting host's
    internal form of it (an alias expansion, a mailbox store route, a domain without a dot).

    RFC 3464 Final-Recipient is the address the reporting MTA tried last; after alias or
    virtual-domain expansion that is a local name (``user@mailcluster.local``,
    ``@store1.example:user@ims_daemon``) the sender never used. Original-Recipient (or
    X-Actual-Recipient) is then the one to suppress.
    """
    if final and not is_internal_address(final):
        return final
    for candidate in (original, actual):
        if candidate and not is_internal_address(candidate):
            return candidate
    return final or actual or original


#: Top-level labels of names that are not on the public Internet (RFC 6761/6762 and habit).
_INTERNAL_TLDS = frozenset(
    {
        "local",
        "localdomain",
        "localhost",
        "lan",
        "intern",
        "internal",
        "intranet",
        "corp",
        "home",
        "private",
    }
)


def is_internal_address(address: str) -> bool:
    """True for an address only the reporting site can route: a source route
    (``@host:user@dom``), a domain without a dot or with a non-public top-level label."""
    if address.startswith("@") or ":" in address:
        return True
    local, _, domain = address.rpartition("@")
    domain = domain.strip("[]").rstrip(".")
    if not local or "." not in domain or "_" in domain:
        return True
    return domain.rsplit(".", 1)[-1].lower() in _INTERNAL_TLDS


def decode_address(value: str) -> str | None:
    """``rfc822; <a@b>`` / ``utf-8; a\\x{E9}@b`` / bare ``a@b`` -> the address, or None."""
    if not value:
        return None
    kind, sep, rest = value.partition(";")
    text = rest if sep else kind
    if sep and kind.strip().lower() in ("utf-8", "unknown"):
        text = _UNITEXT_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
    address = first_address(text)
    if address is None:
        # Malformed but still meaningful ("user@#domain"): keep the token with an @ in it.
        tokens = [t.strip("<>\"'") for t in text.split() if "@" in t]
        if not tokens or not tokens[0]:
            return None
        address = tokens[0]
    return address.strip(".,;:'\"")


def _strip_type(value: str) -> str | None:
    """``dns; mx.example.com`` -> ``mx.example.com`` (drops an IP literal after it too)."""
    _, sep, rest = value.partition(";")
    host = (rest if sep else value).strip()
    host = host.split()[0] if host else ""
    host = host.strip("[]<>").rstrip(".")
    return host or None
