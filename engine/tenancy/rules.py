"""Sans-IO rules of sending-domain ownership: names, the TXT proof, and the enqueue verdict.

A verified domain covers its subdomains; the verified domain with the longest match decides
who may send as a name, so ``news.acme.example`` verified by one tenant and ``acme.example`` by
another cannot both be true (verification refuses a domain when another tenant verified one
above or below it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from engine.compose.address import normalise_domain
from engine.compose.headers import field_name, split_header_block, to_crlf
from engine.errors import DomainError, JobValidationError
from engine.model import Job
from engine.psl import parent_domains

RECORD_PREFIX = "_penguinmails"
TOKEN_PREFIX = "pm-verify="


def normalise(domain: str) -> str:
    """``domain`` as lower-case ASCII; :class:`DomainError` when it is not a usable name."""
    text = domain.strip()
    try:
        name = normalise_domain(text)
    except JobValidationError:
        raise DomainError(f"{domain!r} is not a valid domain name") from None
    if "." not in name or "@" in name:
        raise DomainError(f"{domain!r} is not a domain one can send from (no dot)")
    return name


_ADDR_DOMAIN = re.compile(r"[^<>\s,;:\"]+@([^<>\s,;:\"]+)")


def _domains_in(value: str) -> list[str]:
    out = []
    for found in _ADDR_DOMAIN.findall(value):
        try:
            out.append(normalise_domain(found.rstrip(">.")))
        except JobValidationError:
            out.append(found.lower())
    return out


def claimed_domains(job: Job) -> list[tuple[str, str]]:
    """``(what, domain)`` of every identity a job claims: its From, a raw message's From and
    Sender, a structured job's Sender header. Validation has checked their syntax already."""
    out: list[tuple[str, str]] = []
    if job.from_:
        out.extend(("from", d) for d in _domains_in(job.from_)[-1:])
    if job.raw is not None:
        fields, _ = split_header_block(to_crlf(job.raw))
        for f in fields:
            name = field_name(f)
            if name in ("from", "sender"):
                value = f[f.find(b":") + 1 :].decode("utf-8", "replace")
                out.extend((f"raw {name.title()}", d) for d in _domains_in(value))
    for key, value in job.headers.items():
        if key.lower() == "sender":
            out.extend(("header Sender", d) for d in _domains_in(value))
    return out


def record_name(domain: str) -> str:
    """Where the verification TXT record lives."""
    return f"{RECORD_PREFIX}.{domain}"


def record_value(token: str) -> str:
    return f"{TOKEN_PREFIX}{token}"


def dkim_public_key(txt: str) -> str | None:
    """The ``p=`` value of a DKIM key record, whitespace removed (None when it has none)."""
    for tag in txt.split(";"):
        name, _, value = tag.partition("=")
        if name.strip() == "p":
            key = "".join(value.split())
            return key or None
    return None


def sender_error(
    tenant_id: str,
    domain: str,
    owners: Mapping[str, str],
    has_domains: bool,
    *,
    enforce: bool,
    what: str = "from",
) -> str | None:
    """Why ``tenant_id`` may not send as ``domain`` (None: it may).

    ``owners`` maps verified domains (at least ``domain``'s
    :func:`~engine.psl.parent_domains`) to their tenant; ``has_domains`` says whether the tenant
    registered any domain at all.
    """
    for candidate in parent_domains(domain):
        owner = owners.get(candidate)
        if owner == tenant_id:
            return None
        if owner is not None:
            return (
                f"{what}: domain {domain} belongs to another tenant;"
                f" tenant {tenant_id} may not send as it"
            )
    if not enforce and not has_domains:
        return None
    return (
        f"{what}: {domain} is not a verified sending domain of tenant {tenant_id}"
        f" (register it: engine domains add --tenant {tenant_id} {domain})"
    )
