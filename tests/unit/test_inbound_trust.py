"""Inbound trust, sans-IO: what the parse worker gathers and what the event loop believes."""

from __future__ import annotations

import asyncio
import base64

import pytest

from engine.compose.verp import envid, envid_job
from engine.config import FblReporter
from engine.dkim.keys import KeyRing, generate_key
from engine.dkim.sign import load_signing_key, sign_message
from engine.inbound.effects import InboundItem, feedback_label
from engine.inbound.evidence import MAX_SIGNATURES, analyse
from engine.inbound.trust import InboundTrust, RingKeys, aligned

SECRET = "unit-trust-secret-0123456789abcdef"
VERP_DOMAIN = "bounces.acme.example"
MID = "<pm.2n.abcdefghijklm@acme.example>"


def _key(domain: str, selector: str, algo: str = "rsa-sha256"):  # type: ignore[no-untyped-def]
    pem, _ = generate_key(algo, 1024)
    return load_signing_key(pem, domain=domain, selector=selector)


OUR = _key("acme.example", "s1")
OUR_ED = _key("acme.example", "s2", "ed25519")
THEIRS = _key("acme.example", "s1")  # same d=/s=, a key we do not hold
REPORTER = _key("fbl.isp.example", "r1")


def original(key_list: list, mid: str = MID, to: str = "angry@example.com") -> bytes:  # type: ignore[type-arg]
    msg = (
        f"From: news@acme.example\r\nTo: {to}\r\nSubject: hi\r\nDate: Sun, 06 Dec 2026 10:00:00"
        f" +0000\r\nMessage-ID: {mid}\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain\r\n\r\nbody\r\n"
    ).encode()
    return sign_message(msg, key_list) if key_list else msg


def arf(orig: bytes, *, ftype: str = "abuse", encoding: str | None = None) -> bytes:
    head, _, _ = orig.partition(b"\r\n\r\n")
    part = orig
    cte = ""
    if encoding == "base64":
        part = base64.encodebytes(orig).replace(b"\n", b"\r\n")
        cte = "Content-Transfer-Encoding: base64\r\n"
    assert head
    return (
        (
            "From: fbl@fbl.isp.example\r\nTo: fbl@acme.example\r\nSubject: complaint\r\n"
            "MIME-Version: 1.0\r\n"
            'Content-Type: multipart/report; report-type=feedback-report; boundary="F"\r\n\r\n'
            "--F\r\nContent-Type: text/plain\r\n\r\nAn abuse report.\r\n"
            "--F\r\nContent-Type: message/feedback-report\r\n\r\n"
            f"Feedback-Type: {ftype}\r\nUser-Agent: isp/1.0\r\nVersion: 1\r\n"
            "Original-Rcpt-To: angry@example.com\r\n\r\n"
            f"--F\r\nContent-Type: message/rfc822\r\n{cte}\r\n"
        ).encode()
        + part
        + b"\r\n--F--\r\n"
    )


def trust(*keys, reporters=(), txt=None) -> InboundTrust:  # type: ignore[no-untyped-def]
    ring = KeyRing()
    for k in keys:
        ring.add(k)

    async def resolve(name: str, rdtype: str) -> list[str]:
        return list((txt or {}).get(name, []))

    return InboundTrust(
        verp_domain=VERP_DOMAIN,
        verp_secret=SECRET,
        keys=RingKeys(ring),
        reporters=reporters,
        resolve=resolve,
    )


def assess(t: InboundTrust, raw: bytes, peer: str = "", mail_from: str = ""):  # type: ignore[no-untyped-def]
    a = analyse(raw, "fbl@acme.example")
    item = InboundItem(1, a.report, None, True, peer, mail_from, a.evidence)
    return asyncio.run(t.assess(item))


def test_our_signature_in_the_original_is_proof_of_the_signed_message_id() -> None:
    for encoding in (None, "base64"):
        check = assess(trust(OUR), arf(original([OUR, OUR_ED]), encoding=encoding))
        assert [p.message_id for p in check.own] == [MID]
        assert check.own[0].tenant_id is None and check.own[0].domain == "acme.example"
    both = assess(trust(OUR, OUR_ED), arf(original([OUR, OUR_ED])))
    assert len(both.own) == 2  # RSA and Ed25519 each verify


def test_unsigned_foreign_or_tampered_originals_prove_nothing() -> None:
    t = trust(OUR)
    assert assess(t, arf(original([]))).own == ()
    assert assess(t, arf(original([THEIRS]))).own == ()  # our d=/s=, not our key
    signed = original([OUR])
    tampered = signed.replace(MID.encode(), b"<pm.2o.abcdefghijklm@acme.example>")
    assert assess(t, arf(tampered)).own == ()
    retargeted = signed.replace(b"To: angry@", b"To: other@")
    assert assess(t, arf(retargeted)).own == ()
    # A second, unsigned Message-ID above the signed one is not what the proof names.
    extra = signed.replace(b"From: news", b"Message-ID: <forged@x>\r\nFrom: news", 1)
    assert [p.message_id for p in assess(t, arf(extra)).own] == [MID]


def test_body_of_the_original_does_not_matter_but_is_dropped() -> None:
    signed = original([OUR]).replace(b"body\r\n", b"redacted by the reporter\r\n")
    assert [p.message_id for p in assess(trust(OUR), arf(signed)).own] == [MID]


def test_reporter_dkim_authenticates_the_report_only_when_it_verifies() -> None:
    record = REPORTER.public_txt
    txt = {"r1._domainkey.fbl.isp.example": [record]}
    rep = [FblReporter(domain="isp.example", require="dkim")]
    raw = sign_message(arf(original([])), [REPORTER])
    assert assess(trust(reporters=rep, txt=txt), raw).reporter == "isp.example"
    # body changed after signing: bh= fails
    assert assess(trust(reporters=rep, txt=txt), raw.replace(b"An abuse", b"A")).reporter is None
    # no key in DNS, or another reporter domain
    assert assess(trust(reporters=rep), raw).reporter is None
    other = [FblReporter(domain="other.example", require="dkim")]
    assert assess(trust(reporters=other, txt=txt), raw).reporter is None
    # SPF required: a DKIM pass does not do
    spf_only = [FblReporter(domain="isp.example", require="spf")]
    assert assess(trust(reporters=spf_only, txt=txt), raw).reporter is None


def test_reporter_spf() -> None:
    txt = {"fbl.isp.example": ["v=spf1 ip4:192.0.2.7 -all"]}
    rep = [FblReporter(domain="isp.example", require="dkim_or_spf")]
    raw = arf(original([]))
    t = trust(reporters=rep, txt=txt)
    assert assess(t, raw, "192.0.2.7", "fbl@fbl.isp.example").reporter == "isp.example"
    assert assess(t, raw, "192.0.2.8", "fbl@fbl.isp.example").reporter is None
    assert assess(t, raw, "192.0.2.7", "x@evil.example").reporter is None  # not aligned


def test_envid_is_ours_only_with_the_right_tag() -> None:
    value = envid(12345, domain=VERP_DOMAIN, secret=SECRET)
    assert envid_job(value, domain=VERP_DOMAIN, secret=SECRET) == 12345
    flipped = value[:-1] + ("1" if value[-1] == "0" else "0")
    assert envid_job(flipped, domain=VERP_DOMAIN, secret=SECRET) is None
    assert envid_job("e-9ix-0000000000", domain=VERP_DOMAIN, secret=SECRET) is None
    assert envid_job(value, domain=VERP_DOMAIN, secret="another-secret-0123456789") is None


def test_signature_count_is_bounded() -> None:
    many = original([OUR] * (MAX_SIGNATURES + 5))
    a = analyse(arf(many), "fbl@acme.example")
    assert len(a.evidence.original) == MAX_SIGNATURES


def test_feedback_type_label_is_from_a_fixed_set() -> None:
    assert feedback_label("abuse") == "abuse"
    assert feedback_label("NOT-SPAM") == "not-spam"
    assert feedback_label("xq7zv9") == "other"
    assert feedback_label(None) == "abuse"


@pytest.mark.parametrize(
    ("domain", "parent", "ok"),
    [("a.isp.example", "isp.example", True), ("isp.example", "isp.example", True),
     ("evilisp.example", "isp.example", False), ("isp.example", "", False)],
)  # fmt: skip
def test_alignment(domain: str, parent: str, ok: bool) -> None:
    assert aligned(domain, parent) is ok


@pytest.mark.parametrize(
    "field",
    [
        b"v=1; a=rsa-sha256; d=acme.example; s=s1; h=from; bh=AAAA; b=A" + b"\r\n " * 20000 + b"!",
        b"v=1; a=rsa-sha256; d=acme.example; s=s1; bh=AAAA; b=AAAA" + b" " * 30000 + b"!; h=from",
        b"v=1; a=rsa-sha256; d=acme.example; s=s1; bh=AAAA; b=AAAA; h=a" + b" " * 60000 + b"b",
        b"v=1; a=rsa-sha256; d=acme.example; s=s1; bh=AAAA; b=AAAA; h=" + b"x:" * 30000 + b"from",
    ],
)
def test_hostile_signature_fields_cost_little(field: bytes) -> None:
    import time

    head = b"DKIM-Signature: " + field + b"\r\n" + original([]).partition(b"\r\n\r\n")[0]
    raw = arf(head + b"\r\n\r\nbody\r\n")
    started = time.process_time()
    a = analyse(raw, "fbl@acme.example")
    assert time.process_time() - started < 0.25
    assert a.evidence.original == ()
