"""Organizational (registrable) domains from the Public Suffix List.

DMARC alignment (RFC 7489 §3.2) and the naming of unknown shaping groups both need the
registrable part of a host name: ``news.sap.de`` → ``sap.de``, ``a.b.github.io`` →
``b.github.io`` (``github.io`` is a private-section suffix). The list ships with the
``publicsuffixlist`` package, so a package update keeps it current; it is read once per process.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import idna
from publicsuffixlist import PublicSuffixList

#: Longer names are not host names (RFC 1035); they are returned unchanged, unparsed.
_MAX_NAME = 253


@functools.cache
def _list() -> PublicSuffixList:
    return PublicSuffixList()


def normalize(domain: str) -> str:
    """Lower-case A-label form without the trailing dot (``Пример.РФ.`` →
    ``xn--e1afmkfd.xn--p1ai``); a name IDNA refuses stays lower-cased as it was."""
    name = domain.strip().rstrip(".").lower()
    if name.isascii() or len(name) > _MAX_NAME:
        return name
    try:
        return idna.encode(name, uts46=True).decode("ascii")
    except idna.IDNAError:
        return name


def organizational_domain(domain: str) -> str:
    """The registrable domain of ``domain`` (public suffix plus one label), in normalized form.

    A name that is itself a public suffix (``co.uk``, ``github.io``) or has a single label is its
    own organizational domain; a TLD missing from the list counts as a public suffix, as the
    list's own algorithm says (``*`` rule)."""
    name = normalize(domain)
    if len(name) > _MAX_NAME:
        return name
    return _list().privatesuffix(name) or name


def parent_domains(domain: str) -> Iterator[str]:
    """``a.b.example.com`` → itself, ``b.example.com``, ``example.com`` (never a bare TLD).

    The names a sending domain or a DKIM key may be registered under, most specific first.
    """
    labels = domain.split(".")
    for i in range(max(len(labels) - 1, 1)):
        yield ".".join(labels[i:])
