"""The signer: every signature verifies with dkimpy, and we hash exactly what dkimpy hashes."""

from __future__ import annotations

import asyncio
import importlib
import re
import threading

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from dkim.canonicalization import Relaxed

from engine.dkim import canon
from engine.dkim.pool import SignerPool
from engine.dkim.sign import load_signing_key, sign, sign_message
from engine.dkim.verify import verify_message
from engine.errors import DkimKeyError, DkimMessageError
from tests.unit.dkim_support import dkimpy_verify_all, key, pem

MESSAGE = (
    b"From: News <news@example.com>\r\n"
    b"To: Reader <reader@example.org>\r\n"
    b"Subject: Hello\r\n   folded   subject\t\r\n"
    b"Date: Mon, 06 Jan 2025 10:00:00 +0000\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"List-Unsubscribe: <https://example.com/u/1>, <mailto:u@example.com>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    b"Feedback-ID: c1:t1:news:pm\r\n"
    b"X-Other: not signed\r\n"
    b"\r\n"
    b"Hello  reader,  \r\n\r\ncaf\xc3\xa9 \t body\r\n\r\n\r\n"
)

# A 512-bit RSA key (openssl genrsa 512): loads fine, far too weak to sign with.
RSA_512 = b"""-----BEGIN PRIVATE KEY-----
MIIBVAIBADANBgkqhkiG9w0BAQEFAASCAT4wggE6AgEAAkEAql4wbWyep5X3YawI
iordzQ5HWzjlSJctTvdSbXRqwrEQShGfLi1BELKyDa1vnnVnlIIOwwgQKHEIf+ab
swtm2QIDAQABAkEAp3grFoVdd9M89/AJ/VYALd/JWOyWxkKFMUiA6EM15uZW8EOe
x7A5hvYtSKNVLNjbiSPIBfhyDzhPlE9R0LoRuQIhAOKXxXgQOCalhdmIfDxmCko8
YGr2skL3NA1kuNoCx/XXAiEAwHpsdKP/Ye8xoRcr0f8p71Pj3dMWuKo/L+hTkh0x
ks8CIAMcmnWfo2XEeCYYnbwmmpWSZrCRWrlYs7pLW86Co0RZAiBBO3x0T3xm8Yzt
XpAAXK0WqmTIshi6PyCpGODx3SkG6wIgN+hdC3gWYcYI15JcnUpOICmyD/U3vxyi
jnkqkznVBVo=
-----END PRIVATE KEY-----
"""
EC_P256 = b"""-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg0a/kAi9BR4p3AXvs
RLRZeeDO2GbKPvnXy8Eas6Q6T8ehRANCAARHZ7NnF9b5SkDpzAygbVDoMkYCYbfA
7e+J8i0OpzGRpLXa339WSCsQllv7iwCeYR31MvPTdWwyNGmPyjWXTiMH
-----END PRIVATE KEY-----
"""


def _h_tag(signed: bytes) -> list[bytes]:
    field = signed.split(b"\r\n\r\n")[0]
    m = re.search(rb"h=([^;]*);", field)
    assert m is not None
    return [x.strip() for x in m.group(1).split(b":")]


@pytest.mark.parametrize("bits", [1024, 2048, 4096])
def test_rsa_signature_verifies_with_dkimpy(bits: int) -> None:
    k = key("rsa", bits)
    signed = sign_message(MESSAGE, [k])
    assert signed.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;")
    assert dkimpy_verify_all(signed, k) == [True]
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: k.public_txt.encode())


def test_ed25519_signature_verifies_with_dkimpy_and_engine_verifier() -> None:
    k = key("ed25519")
    signed = sign_message(MESSAGE, [k])
    assert b"a=ed25519-sha256" in signed
    assert dkimpy_verify_all(signed, k) == [True]
    assert [r.ok for r in verify_message(signed, lambda n: k.public_txt.encode())] == [True]


def test_dual_signing_rsa_and_ed25519_both_verify() -> None:
    rsa_key = key("rsa", 2048, "example.com", "rsa1")
    ed_key = key("ed25519", 256, "example.com", "ed1")
    signed = sign_message(MESSAGE, [rsa_key, ed_key])
    assert signed.count(b"DKIM-Signature:") == 2
    assert signed.index(b"a=rsa-sha256") < signed.index(b"a=ed25519-sha256")
    assert dkimpy_verify_all(signed, rsa_key, ed_key) == [True, True]


def test_signed_header_set_and_from_oversigned() -> None:
    signed = sign_message(MESSAGE, [key()])
    assert _h_tag(signed) == [
        b"from",
        b"to",
        b"subject",
        b"date",
        b"message-id",
        b"mime-version",
        b"content-type",
        b"list-unsubscribe",
        b"list-unsubscribe-post",
        b"feedback-id",
        b"from",
    ]
    minimal = b"From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n"
    assert _h_tag(sign_message(minimal, [key()])) == [b"from", b"subject", b"from"]


def test_output_is_folded_crlf_terminated_and_short_lined() -> None:
    fields = sign(MESSAGE, [key("rsa", 4096)], timestamp=1_700_000_000)
    assert fields.endswith(b"\r\n") and b"\n" not in fields.replace(b"\r\n", b"")
    assert all(len(line) <= 78 for line in fields.split(b"\r\n"))
    assert b" t=1700000000;" in fields


def test_lf_and_crlf_input_give_the_same_signature() -> None:
    lf = MESSAGE.replace(b"\r\n", b"\n")
    k = key()
    crlf_sig = sign(MESSAGE, [k], timestamp=1)
    assert sign(lf, [k], timestamp=1) == crlf_sig  # RSA PKCS#1 v1.5 is deterministic
    signed_lf = sign_message(lf, [k])
    assert b"\r" not in signed_lf.split(b"\n\n")[0]  # the new fields follow the message's EOL
    assert dkimpy_verify_all(signed_lf, k) == [True]


def test_precomputed_body_hash_gives_identical_signature() -> None:
    k = key()
    _, offset = canon.split_message(MESSAGE)
    bh = canon.body_hash(MESSAGE[offset:])
    assert bh == canon.message_body_hash(MESSAGE)
    assert sign(MESSAGE, [k], body_hash=bh, timestamp=5) == sign(MESSAGE, [k], timestamp=5)
    # The same hash serves another recipient of the same body.
    other = MESSAGE.replace(b"reader@example.org", b"other@example.net")
    assert dkimpy_verify_all(sign_message(other, [k], body_hash=bh), k) == [True]


def test_canonical_forms_equal_what_dkimpy_signer_hashes() -> None:
    """Our hashed header bytes and body hash are dkimpy's own, for the same h= list."""
    private, _ = pem("rsa", 2048)
    headers = canon.parse_headers(canon.split_message(MESSAGE)[0])
    names = canon.signed_header_names(headers)
    d = dkim.DKIM(MESSAGE)
    theirs = d.sign(
        b"s1",
        b"example.com",
        private,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=list(names),
    )
    their_headers = b"".join(n + b":" + v for n, v in d.signed_headers)
    assert canon.canonical_signed_headers(headers, names) == their_headers
    their_bh = re.search(rb"bh=([^;]+);", theirs)
    assert their_bh is not None
    assert canon.message_body_hash(MESSAGE) == their_bh.group(1)


def test_hashed_signature_field_equals_dkimpy_verifier_view() -> None:
    """What we sign for the DKIM-Signature field is what dkimpy's verifier rebuilds."""
    k = key()
    signed = sign_message(MESSAGE, [k], timestamp=7)
    headers, _ = dkim.rfc822_parse(signed)
    field = (headers[0][0], headers[0][1])
    sig = dkim.util.parse_tag_value(field[1])
    include = [x.lower() for x in re.split(rb"\s*:\s*", sig[b"h"])]

    class Recorder:
        def __init__(self) -> None:
            self.data = b""

        def update(self, chunk: bytes) -> None:
            self.data += chunk

    rec = Recorder()
    policy = dkim.CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    dkim.hash_headers(rec, policy, policy.canonicalize_headers(headers), include, field, sig)
    ours = canon.canonical_signed_headers(
        canon.parse_headers(canon.split_message(MESSAGE)[0]), include
    ) + canon.canonical_signature_header(field[0], field[1])
    assert rec.data == ours


def test_tampering_breaks_the_signature() -> None:
    k = key()
    signed = sign_message(MESSAGE, [k])
    assert dkimpy_verify_all(signed.replace(b"Subject: Hello", b"Subject: Hellp"), k) == [False]
    assert dkimpy_verify_all(signed.replace(b"reader,", b"reader!"), k) == [False]
    # Over-signing: a second From added later (by a forwarder or a spoofer) fails verification.
    added = signed.replace(b"From: News", b"From: evil@attacker.example\r\nFrom: News", 1)
    assert dkimpy_verify_all(added, k) == [False]


@pytest.mark.parametrize(
    ("message", "why"),
    [
        (b"From: a@example.com\r\nSubject: hi\rBcc: victim@example.org\r\n\r\nx", "bare CR"),
        (b"From: a@example.com\r\nSubject: hi\x00there\r\n\r\nx", "NUL"),
        (b"From: a@example.com\r\nFrom: b@example.com\r\n\r\nx", "2 From"),
        (b"Subject: no sender\r\n\r\nx", "0 From"),
        (b" continued: first\r\nFrom: a@example.com\r\n\r\nx", "continuation"),
        (b"From: a@example.com\r\nbad header line\r\n\r\nx", "malformed"),
    ],
)
def test_unsafe_or_malformed_headers_are_refused(message: bytes, why: str) -> None:
    with pytest.raises(DkimMessageError):
        sign(message, [key()])


def test_injected_header_line_is_just_another_header() -> None:
    # CRLF injected into a Subject makes a separate header field: Bcc is not signed, Subject is
    # signed as it reads; composition rejects such values at enqueue (engine.compose).
    message = b"From: a@example.com\r\nSubject: hi\r\nBcc: victim@example.org\r\n\r\nbody\r\n"
    k = key()
    signed = sign_message(message, [k])
    assert b"bcc" not in b"".join(_h_tag(signed))
    assert dkimpy_verify_all(signed, k) == [True]


def test_sign_needs_a_key() -> None:
    with pytest.raises(DkimMessageError):
        sign(MESSAGE, [])


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"not a key at all", "not PEM"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "cannot be parsed"),
        (RSA_512, "512 bits"),
        (EC_P256, "only RSA and Ed25519"),
    ],
)
def test_bad_keys_raise_operator_readable_errors(data: bytes, match: str) -> None:
    with pytest.raises(DkimKeyError, match=match):
        load_signing_key(data, domain="example.com", selector="s1")


def test_encrypted_pem_is_refused() -> None:
    k = ed25519.Ed25519PrivateKey.generate()
    encrypted = k.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(DkimKeyError, match="passphrase"):
        load_signing_key(encrypted, domain="example.com", selector="s1")


def test_oversized_rsa_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    sign_mod = importlib.import_module("engine.dkim.sign")
    monkeypatch.setattr(sign_mod, "MAX_RSA_BITS", 2048)
    with pytest.raises(DkimKeyError, match="4096 bits"):
        load_signing_key(pem("rsa", 4096)[0], domain="example.com", selector="s1")


@pytest.mark.parametrize("name", ["s1; d=evil.example", "s 1", "s1\r\nBcc: x", "", "-s1", "a..b"])
def test_selector_and_domain_cannot_inject_tags(name: str) -> None:
    private, _ = pem("ed25519")
    with pytest.raises(DkimKeyError):
        load_signing_key(private, domain="example.com", selector=name)
    with pytest.raises(DkimKeyError):
        load_signing_key(private, domain=name or ";", selector="s1")


def test_names_are_normalised_and_idna_encoded() -> None:
    private, _ = pem("ed25519")
    k = load_signing_key(private, domain="Bücher.Example.", selector="S1")
    assert (k.domain, k.selector) == ("xn--bcher-kva.example", "s1")
    assert "PRIVATE" not in repr(k) and "s1._domainkey.xn--bcher-kva.example" in repr(k)


def test_pkcs1_rsa_pem_loads() -> None:
    private = serialization.load_pem_private_key(pem("rsa", 2048)[0], None)
    pkcs1 = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert b"BEGIN RSA PRIVATE KEY" in pkcs1
    k = load_signing_key(pkcs1, domain="example.com", selector="s1")
    assert k.bits == 2048 and k.public_txt == key().public_txt


def test_sign_is_safe_from_many_threads_at_once() -> None:
    k = key()
    messages = [MESSAGE.replace(b"<1@", f"<{i}@".encode()) for i in range(40)]
    results: dict[int, bytes] = {}

    def work(start: int) -> None:
        for i in range(start, len(messages), 4):
            results[i] = sign_message(messages[i], [k])

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(40))
    assert all(dkimpy_verify_all(results[i], k) == [True] for i in results)


async def test_signer_pool_signs_off_the_event_loop() -> None:
    k = key()
    with SignerPool(2) as pool:
        signed = await pool.sign_message(MESSAGE, [k])
        batch = pool.sign_many([MESSAGE] * 5, [k], timestamp=3)
    assert dkimpy_verify_all(signed, k) == [True]
    assert len(set(batch)) == 1 and dkimpy_verify_all(batch[0], k) == [True]


async def test_signer_pool_batches_a_turn_and_keeps_each_result_and_error_apart() -> None:
    """Requests of one loop turn go out as slices; each caller gets its own message back, a
    message that cannot be signed fails alone, and a cancelled caller does not break the rest."""
    k = key()
    messages = [MESSAGE.replace(b"<1@", f"<{i}@".encode()) for i in range(50)]
    with SignerPool(2) as pool:
        tasks = [asyncio.create_task(pool.sign_message(m, [k])) for m in messages]
        bad = asyncio.create_task(pool.sign_message(b"no header separator", [k]))
        cancelled = asyncio.create_task(pool.sign_message(MESSAGE, [k]))
        await asyncio.sleep(0)  # every request is queued in this turn; the slices go out next
        cancelled.cancel()
        signed = await asyncio.gather(*tasks)
        with pytest.raises(DkimMessageError):
            await bad
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert await pool.sign_message(MESSAGE, [k])  # the pool still works afterwards
    for i, out in enumerate(signed):
        assert out.endswith(messages[i].split(b"\r\n\r\n", 1)[1])
        assert f"<{i}@".encode() in out and dkimpy_verify_all(out, k) == [True]


def test_canonical_body_edge_cases_match_dkimpy() -> None:
    for body in (b"", b"\r\n", b"\n\n\n", b"x", b"x \t \r\n\r\n", b"a\r\rb\n", b"\t\ta  b\n"):
        crlf = b"\r\n".join(re.split(b"\r?\n", body))
        assert canon.canonical_body(body) == Relaxed.canonicalize_body(crlf), body


def test_a_raw_digest_as_body_hash_is_refused() -> None:
    import base64

    raw = base64.b64decode(canon.message_body_hash(MESSAGE))
    with pytest.raises(DkimMessageError, match="base64 value"):
        sign(MESSAGE, [key()], body_hash=raw)


def test_rsa_signing_releases_the_gil() -> None:
    """The thread pool only helps if OpenSSL runs without the GIL; guard that premise.

    With a long switch interval, a thread that holds the GIL stalls the main thread for the
    whole interval; one that releases it around the RSA operation barely stalls it at all.
    """
    import sys
    import time

    k = key()
    stop = threading.Event()

    def sign_forever() -> None:
        while not stop.is_set():
            sign(MESSAGE, [k], body_hash=canon.message_body_hash(MESSAGE))

    old = sys.getswitchinterval()
    sys.setswitchinterval(1.0)
    worker = threading.Thread(target=sign_forever)
    try:
        worker.start()
        time.sleep(0.01)
        last = time.perf_counter()
        end = last + 0.8
        stall = 0.0
        while last < end:
            now = time.perf_counter()
            stall, last = max(stall, now - last), now
    finally:
        stop.set()
        worker.join()
        sys.setswitchinterval(old)
    assert stall < 0.5, f"main thread stalled {stall:.3f}s: RSA signing holds the GIL"
