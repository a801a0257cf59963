"""The DNS check, with the TXT lookup injected (no real DNS), and the operator verifier."""

from __future__ import annotations

import base64
from collections.abc import Sequence

import dns.asyncresolver
import dns.exception
import dns.resolver
import pytest
from cryptography.hazmat.primitives import serialization

from engine.dkim import dnscheck
from engine.dkim.dnscheck import check_key, compare_record
from engine.dkim.sign import sign_message
from engine.dkim.verify import verify_message
from engine.errors import DkimDnsError, DnsLookupError
from tests.unit.dkim_support import key

MESSAGE = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nbody\r\n"


def _lookup(*records: bytes, expect: str = "s1._domainkey.example.com") -> dnscheck.TxtLookup:
    async def lookup(name: str) -> Sequence[bytes]:
        assert name == expect
        return list(records)

    return lookup


async def test_published_key_is_ok() -> None:
    k = key()
    check = await check_key(k, lookup=_lookup(k.public_txt.encode()))
    assert check.ok and check.status == "ok" and check.name == k.dns_name
    assert check.published == k.public_txt


async def test_record_split_across_strings_and_spaced_p_is_ok() -> None:
    k = key()
    txt = k.public_txt.replace("; p=", ";p=").encode()
    spaced = txt[:60] + b" " + txt[60:]  # some DNS consoles show/insert spaces in p=
    assert (await check_key(k, lookup=_lookup(spaced))).ok


async def test_pkcs1_public_key_in_p_is_accepted() -> None:
    k = key()
    pkcs1 = k.private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(pkcs1)
    assert (await check_key(k, lookup=_lookup(record))).ok


async def test_missing_record() -> None:
    check = await check_key(key(), lookup=_lookup())
    assert check.status == "missing" and "no DKIM TXT record" in check.detail
    spf_only = await check_key(key(), lookup=_lookup(b"v=spf1 -all"))
    assert spf_only.status == "missing"


async def test_other_key_published_is_a_mismatch() -> None:
    k = key()
    other = key("rsa", 1024)
    check = await check_key(k, lookup=_lookup(other.public_txt.encode()))
    assert check.status == "mismatch" and "different public key" in check.detail
    assert check.expected == k.public_txt and check.published == other.public_txt


@pytest.mark.parametrize(
    ("record", "why"),
    [
        (b"v=DKIM1; k=ed25519; p=AAAA", "k=ed25519, key is rsa"),
        (b"v=DKIM1; k=rsa; p=", "revoked"),
        (b"v=DKIM2; k=rsa; p=MIIB", "v=DKIM2"),
        (b"v=DKIM1; h=sha1; k=rsa; p=MIIB", "sha256"),
        (b"v=DKIM1; s=tlsrpt; k=rsa; p=MIIB", "s= does not allow email"),
        (b"v=DKIM1; k=rsa; p=!!notbase64!!", "different public key"),
        (b"p=x; p=y", "not a DKIM tag list"),
    ],
)
def test_bad_records_say_why(record: bytes, why: str) -> None:
    status, detail = compare_record(key().public_txt, record)
    assert status == "mismatch" and why in detail


def test_testing_flag_is_ok_but_mentioned() -> None:
    k = key("ed25519")
    status, detail = compare_record(k.public_txt, (k.public_txt + "; t=y").encode())
    assert status == "ok" and "t=y" in detail


async def test_two_dkim_records_is_an_error() -> None:
    k = key()
    check = await check_key(k, lookup=_lookup(k.public_txt.encode(), k.public_txt.encode()))
    assert check.status == "error" and "2 DKIM TXT records" in check.detail


async def test_dns_failure_is_an_error_result_not_an_exception() -> None:
    async def broken(name: str) -> Sequence[bytes]:
        raise DkimDnsError(f"DNS lookup of {name} TXT timed out after 3s")

    check = await check_key(key(), lookup=broken)
    assert check.status == "error" and "timed out" in check.detail and not check.ok


async def test_resolve_txt_maps_dnspython_outcomes(monkeypatch: pytest.MonkeyPatch) -> None:
    class Rdata:
        strings = (b"v=DKIM1; k=rsa; ", b"p=AAAA")

    outcomes: list[object] = [
        [Rdata()],
        dns.resolver.NXDOMAIN(),
        dns.resolver.NoAnswer(),
        dns.exception.Timeout(),
        dns.resolver.NoNameservers(),
    ]

    async def fake_resolve(name: str, rdtype: str, lifetime: float) -> object:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(dns.asyncresolver, "resolve", fake_resolve)
    assert await dnscheck.resolve_txt("x") == [b"v=DKIM1; k=rsa; p=AAAA"]
    assert await dnscheck.resolve_txt("x") == []
    assert await dnscheck.resolve_txt("x") == []
    with pytest.raises(DnsLookupError, match="timed out"):
        await dnscheck.resolve_txt("x")
    with pytest.raises(DnsLookupError, match="failed"):
        await dnscheck.resolve_txt("x")


# --- engine.dkim.verify (the `engine dkim verify` back end) --------------------------------


def test_verifier_explains_failures() -> None:
    k = key()
    signed = sign_message(MESSAGE, [k])

    def txt(name: str) -> bytes | None:
        return k.public_txt.encode() if name == k.dns_name else None

    assert [r.ok for r in verify_message(signed, txt)] == [True]
    (body,) = verify_message(signed.replace(b"body", b"bodY"), txt)
    assert not body.ok and "body hash mismatch" in body.detail
    (head,) = verify_message(signed.replace(b"Subject: hi", b"Subject: ho"), txt)
    assert not head.ok and "does not verify" in head.detail
    (nokey,) = verify_message(signed, lambda name: None)
    assert not nokey.ok and "no DKIM key record" in nokey.detail
    (revoked,) = verify_message(signed, lambda name: b"v=DKIM1; k=rsa; p=")
    assert "revoked" in revoked.detail
    (wrong,) = verify_message(signed, lambda name: key("ed25519").public_txt.encode())
    assert "does not match key type" in wrong.detail
    assert (head.domain, head.selector, head.algorithm) == ("example.com", "s1", "rsa-sha256")
    assert verify_message(MESSAGE, txt) == []
