"""Organizational domains from the Public Suffix List (engine/psl.py) and the DMARC alignment
and shaping group names built on them: ICANN suffixes one and two levels deep, private-section
suffixes, IDNs in either form, and names that are suffixes themselves."""

from __future__ import annotations

import pytest

from engine.compliance import dmarc
from engine.compliance.check import DkimExpectation, check_domain
from engine.dkim.keys import generate_key
from engine.psl import normalize, organizational_domain
from engine.shaping.providers import registered_domain


@pytest.mark.parametrize(
    ("name", "org"),
    [
        ("news.sap.de", "sap.de"),  # a label-length guess made this its own org domain
        ("sap.de", "sap.de"),
        ("a.b.github.io", "b.github.io"),  # github.io is a private-section suffix
        ("b.github.io", "b.github.io"),
        ("x.y.blogspot.com", "y.blogspot.com"),
        ("mail.example.co.uk", "example.co.uk"),
        ("a.b.example.co.uk", "example.co.uk"),
        ("a.b.example.com.au", "example.com.au"),
        ("bounces.example.com", "example.com"),
        ("News.SAP.De.", "sap.de"),  # case and the root dot do not matter
        ("a.b.c.kawasaki.jp", "b.c.kawasaki.jp"),  # *.kawasaki.jp wildcard rule
        ("www.city.kawasaki.jp", "city.kawasaki.jp"),  # !city.kawasaki.jp exception rule
        ("mail.пример.рф", "xn--e1afmkfd.xn--p1ai"),  # IDN in U-labels → A-labels
        ("mail.xn--e1afmkfd.xn--p1ai", "xn--e1afmkfd.xn--p1ai"),
        ("co.uk", "co.uk"),  # a public suffix is its own organizational domain
        ("github.io", "github.io"),
        ("localhost", "localhost"),
        ("host.internal-tld-nobody-has", "host.internal-tld-nobody-has"),  # "*" default rule
    ],
)
def test_organizational_domain(name: str, org: str) -> None:
    assert organizational_domain(name) == org


def test_relaxed_alignment_follows_the_list() -> None:
    assert dmarc.aligned("r", "news.sap.de", "sap.de")
    assert dmarc.aligned("r", "mail.sap.de", "news.sap.de")
    assert not dmarc.aligned("r", "a.alice.github.io", "bob.github.io")  # two registrants
    assert dmarc.aligned("r", "a.alice.github.io", "alice.github.io")
    assert not dmarc.aligned("r", "example.co.uk", "other.co.uk")
    assert dmarc.aligned("r", "Mail.Пример.РФ", "xn--e1afmkfd.xn--p1ai")
    assert dmarc.aligned("s", "Пример.рф.", "xn--e1afmkfd.xn--p1ai")
    assert not dmarc.aligned("s", "news.sap.de", "sap.de")


def test_hostile_names_are_bounded_and_do_not_raise() -> None:
    long = "a." * 300 + "com"
    assert organizational_domain(long) == long  # not a host name: returned as is
    assert normalize("xn--zz.\u00e9\u0000.com") == "xn--zz.\u00e9\u0000.com"  # IDNA refuses it
    assert organizational_domain("") == ""
    assert organizational_domain("...") == ""


def test_shaping_groups_unknown_mx_by_the_same_rule() -> None:
    assert registered_domain("mx1.mail.example.co.uk") == "example.co.uk"
    assert registered_domain("mx.a.b.github.io") == "b.github.io"


async def test_dmarc_check_finds_the_org_record_of_news_sap_de() -> None:
    _, txt = generate_key("ed25519-sha256")
    zone = {
        ("_dmarc.sap.de", "TXT"): ["v=DMARC1; p=reject"],
        ("s1._domainkey.sap.de", "TXT"): [txt],
    }
    asked: list[str] = []

    async def resolve(name: str, rdtype: str) -> list[str]:
        asked.append(name)
        return list(zone.get((name, rdtype), []))

    report = await check_domain(
        "news.sap.de",
        resolve=resolve,
        relay_ips=[],
        dkim_keys=[DkimExpectation(domain="sap.de", selector="s1", public_txt=txt)],
    )
    dm = next(c for c in report.checks if c.check == "dmarc")
    assert dm.status == "pass" and dm.data["dkim_aligned"] == "true"
    assert "_dmarc.sap.de" in asked and "_dmarc.news.sap.de" in asked
