"""Is a DKIM key published? Fetch ``selector._domainkey.domain`` TXT and compare with the key.

Run before a key is activated (rotation) and by ``engine dkim check-dns``; never per message.
The TXT lookup is injectable (``lookup=``) so tests run without DNS.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

import dkim.util
import msgspec

from engine.dkim.sign import SigningKey
from engine.dkim.verify import rsa_public_key
from engine.errors import DnsLookupError
from engine.resolver import txt_bytes

TxtLookup = Callable[[str], Awaitable[Sequence[bytes]]]
"""``lookup(name)`` → the TXT records at ``name`` (each record's strings joined); ``[]`` when
the name or the record does not exist; raises :class:`~engine.errors.DnsLookupError` when DNS
itself failed."""

CheckStatus = Literal["ok", "missing", "mismatch", "error"]


class DnsCheck(msgspec.Struct, frozen=True, kw_only=True):
    """Outcome of one check: ``ok`` | ``missing`` | ``mismatch`` | ``error``, with the why."""

    status: CheckStatus
    name: str
    detail: str
    expected: str
    published: str | None = None

    @property
    def ok(self) -> bool:
        """True only when the record publishes exactly this key."""
        return self.status == "ok"


async def resolve_txt(name: str, *, timeout: float = 3.0) -> list[bytes]:
    """TXT records at ``name`` via the system resolver (:func:`engine.resolver.txt_bytes`)."""
    return await txt_bytes(name, timeout=timeout)


def _tags(txt: str | bytes) -> dict[bytes, bytes]:
    raw = txt.encode("ascii", "replace") if isinstance(txt, str) else txt
    tags: dict[bytes, bytes] = dkim.util.parse_tag_value(raw)
    return tags


def _same_key(kind: bytes, expected_p: bytes, published_p: bytes) -> bool:
    if kind == b"ed25519":
        try:
            return base64.b64decode(published_p, validate=True) == base64.b64decode(expected_p)
        except (binascii.Error, ValueError):
            return False
    want, got = rsa_public_key(expected_p), rsa_public_key(published_p)
    return want is not None and got is not None and want.public_numbers() == got.public_numbers()


def compare_record(expected_txt: str, published: bytes) -> tuple[CheckStatus, str]:
    """Does one published TXT record publish the key of ``expected_txt``? (status, detail)."""
    try:
        pub = _tags(published)
    except dkim.util.InvalidTagValueList as exc:
        return "mismatch", f"record is not a DKIM tag list ({exc})"
    want = _tags(expected_txt)
    problems: list[str] = []
    if pub.get(b"v", b"DKIM1") != b"DKIM1":
        problems.append(f"v={pub[b'v'].decode(errors='replace')} (must be DKIM1)")
    kind = want.get(b"k", b"rsa")
    if pub.get(b"k", b"rsa") != kind:
        problems.append(
            f"k={pub.get(b'k', b'rsa').decode(errors='replace')}, key is {kind.decode()}"
        )
    if b"h" in pub and b"sha256" not in pub[b"h"].replace(b" ", b"").split(b":"):
        problems.append("h= does not allow sha256")
    if pub.get(b"s", b"*").replace(b" ", b"") not in (b"*", b"email"):
        problems.append("s= does not allow email")
    p = b"".join(pub.get(b"p", b"").split())
    if not p:
        problems.append("p= is empty: the key is revoked")
    elif not problems and not _same_key(kind, want[b"p"], p):
        problems.append("p= is a different public key")
    if problems:
        return "mismatch", "; ".join(problems)
    if b"y" in pub.get(b"t", b"").split(b":"):
        return "ok", "published (testing mode t=y: receivers treat failures as unsigned)"
    return "ok", "published and matches"


async def check_dns(
    domain: str,
    selector: str,
    expected_txt: str,
    *,
    lookup: TxtLookup | None = None,
    timeout: float = 3.0,
) -> DnsCheck:
    """Check that ``selector._domainkey.domain`` publishes the key of ``expected_txt``.

    ``expected_txt`` is the record value we would publish (``SigningKey.public_txt`` or the
    ``public_txt`` column). Never raises for DNS trouble: that is ``status="error"``.
    """
    name = f"{selector}._domainkey.{domain}".lower()

    def result(status: CheckStatus, detail: str, published: bytes | None = None) -> DnsCheck:
        text = None if published is None else published.decode("ascii", "replace")
        return DnsCheck(
            status=status, name=name, detail=detail, expected=expected_txt, published=text
        )

    try:
        if lookup is None:
            records = await resolve_txt(name, timeout=timeout)
        else:
            records = list(await lookup(name))
    except DnsLookupError as exc:
        return result("error", exc.message)
    # A DKIM record carries p=; other TXT records at the name (rare) are not ours to judge.
    dkim_records = [r for r in records if b"p=" in r]
    if not dkim_records:
        return result("missing", f"no DKIM TXT record at {name}")
    if len(dkim_records) > 1:
        return result(
            "error",
            f"{len(dkim_records)} DKIM TXT records at {name}; receivers pick one at random",
            dkim_records[0],
        )
    status, detail = compare_record(expected_txt, dkim_records[0])
    return result(status, detail, dkim_records[0])


async def check_key(
    key: SigningKey, *, lookup: TxtLookup | None = None, timeout: float = 3.0
) -> DnsCheck:
    """:func:`check_dns` for a loaded key."""
    return await check_dns(key.domain, key.selector, key.public_txt, lookup=lookup, timeout=timeout)
