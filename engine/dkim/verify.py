"""DKIM verification for operators (``engine dkim verify``) — dkimpy's parsing, OpenSSL's maths.

dkimpy's own ``dkim.verify`` needs PyNaCl for Ed25519, which the engine does not depend on, and
reports one bare boolean. This verifier reuses dkimpy's parser, tag parsing, field validation,
canonicalisation and header hashing (so it hashes exactly what ``dkim.verify`` hashes), checks
the public-key maths with ``cryptography``, and says per signature why it failed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable

import dkim
import dkim.util
import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils
from dkim.canonicalization import (
    CanonicalizationPolicy,
    InvalidCanonicalizationPolicyError,
    Relaxed,
)

from engine.dkim import canon
from engine.dkim.sign import MIN_RSA_BITS

KeyLookup = Callable[[str], bytes | None]
"""``lookup("sel._domainkey.example.com")`` → the TXT record value, or None if there is none."""

_WSP = re.compile(rb"\s+")


def rsa_public_key(p: bytes) -> rsa.RSAPublicKey | None:
    """The RSA key in a p= value (SubjectPublicKeyInfo, or bare PKCS#1 as dkimpy allows)."""
    try:
        der = base64.b64decode(b"".join(p.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    pkcs1_pem = (
        b"-----BEGIN RSA PUBLIC KEY-----\n"
        + base64.encodebytes(der)
        + b"-----END RSA PUBLIC KEY-----\n"
    )
    key: object
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, TypeError):
        try:
            key = serialization.load_pem_public_key(pkcs1_pem)
        except (ValueError, TypeError):
            return None
    return key if isinstance(key, rsa.RSAPublicKey) else None


class VerifyResult(msgspec.Struct, frozen=True, kw_only=True):
    """One DKIM-Signature field checked: which key, pass or fail, and why."""

    index: int  # 0 = topmost signature
    domain: str
    selector: str
    algorithm: str
    ok: bool
    detail: str


class SignatureFailure(Exception):
    """Why one DKIM-Signature does not verify (the message is operator-readable)."""


_Fail = SignatureFailure


def _b64(value: bytes, what: str) -> bytes:
    try:
        return base64.b64decode(_WSP.sub(b"", value), validate=True)
    except (binascii.Error, ValueError):
        raise _Fail(f"{what} is not valid base64") from None


def _check_body(sig: dict[bytes, bytes], policy: CanonicalizationPolicy, body: bytes) -> None:
    canonical: bytes
    if policy.body_algorithm is Relaxed:
        # The same bytes as dkimpy's (tests/unit/test_dkim_properties.py), several times faster:
        # attacker-sized bodies reach here from the inbound listener's evidence worker.
        canonical = canon.canonical_body(body)
    else:
        canonical = policy.canonicalize_body(body)
    if b"l" in sig:
        canonical = canonical[: int(sig[b"l"])]
    if hashlib.sha256(canonical).digest() != _b64(sig[b"bh"], "bh="):
        raise _Fail("body hash mismatch: the body changed after signing")


def _verify_maths(key_record: bytes, algorithm: bytes, signature: bytes, digest: bytes) -> None:
    try:
        pub = dkim.util.parse_tag_value(key_record)
    except dkim.util.InvalidTagValueList as exc:
        raise _Fail(f"key record is not a DKIM tag list: {exc}") from None
    kind = pub.get(b"k", b"rsa")
    p = pub.get(b"p", b"")
    if not p:
        raise _Fail("key record has an empty p=: the key is revoked")
    try:
        if algorithm == b"ed25519-sha256" and kind == b"ed25519":
            ed25519.Ed25519PublicKey.from_public_bytes(_b64(p, "p=")).verify(signature, digest)
        elif algorithm == b"rsa-sha256" and kind == b"rsa":
            key = rsa_public_key(p)
            if key is None:
                raise _Fail("key record p= is not an RSA public key")
            if key.key_size < MIN_RSA_BITS:
                raise _Fail(f"RSA key has {key.key_size} bits; below {MIN_RSA_BITS} (RFC 8301)")
            key.verify(signature, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        else:
            raise _Fail(f"a={algorithm.decode()} does not match key type k={kind.decode()}")
    except InvalidSignature:
        raise _Fail("signature does not verify: a signed header changed, or wrong key") from None
    except ValueError as exc:
        raise _Fail(f"public key unusable: {exc}") from None


class Prepared(msgspec.Struct, frozen=True, kw_only=True):
    """One DKIM-Signature with its headers hashed (:func:`prepare`): the key check is left."""

    domain: str
    selector: str
    algorithm: str
    digest: bytes  # what b= signs
    signature: bytes  # b=, decoded
    signed: tuple[tuple[bytes, bytes], ...]  # the header fields hashed, canonical, in h= order
    tags: dict[bytes, bytes]
    policy: CanonicalizationPolicy


def prepare(
    headers: list[tuple[bytes, bytes]],
    field: tuple[bytes, bytes],
    *,
    max_signed: int | None = None,
) -> Prepared:
    """Parse one DKIM-Signature ``field`` of ``headers`` and hash the header fields it signs.

    ``max_signed`` refuses an h= naming more fields than that: dkimpy's header selection scans
    the whole header once per h= entry naming a field that is absent, so an h= list written by
    an attacker costs (entries × fields).

    Raises :class:`SignatureFailure` (or dkimpy's validation errors, ``ValueError``,
    ``KeyError``) when the field is malformed or uses an algorithm we do not accept.
    """
    sig: dict[bytes, bytes] = dkim.util.parse_tag_value(field[1])
    dkim.validate_signature_fields(sig)  # v, a, b, bh, d, h, s present; t/x sane
    algorithm = sig[b"a"]
    if algorithm not in (b"rsa-sha256", b"ed25519-sha256"):
        raise _Fail(f"a={algorithm.decode()} is not accepted (RFC 8301/8463)")
    try:
        policy = CanonicalizationPolicy.from_c_value(sig.get(b"c", b"simple/simple"))
    except InvalidCanonicalizationPolicyError as exc:
        raise _Fail(f"invalid c= value {exc}") from None
    # split + strip, not dkimpy's re.split(rb"\s*:\s*"): the same list for a stripped tag value,
    # without the regex's quadratic backtracking over a long whitespace run.
    include = [x.strip().lower() for x in sig[b"h"].split(b":")]
    if max_signed is not None and len(include) > max_signed:
        raise _Fail(f"h= names {len(include)} fields; at most {max_signed} are checked")
    if b"from" in include:
        include.append(b"from")  # as dkimpy: an added From must break the signature
    hasher = hashlib.sha256()
    signed = dkim.hash_headers(
        hasher, policy, policy.canonicalize_headers(headers), include, field, sig
    )
    return Prepared(
        domain=_WSP.sub(b"", sig[b"d"]).decode("ascii", "replace").lower(),
        selector=_WSP.sub(b"", sig[b"s"]).decode("ascii", "replace").lower(),
        algorithm=algorithm.decode("ascii"),
        digest=hasher.digest(),
        signature=_b64(sig[b"b"], "b="),
        signed=tuple((bytes(n), bytes(v)) for n, v in signed),
        tags=sig,
        policy=policy,
    )


def check_body(prepared: Prepared, body: bytes) -> None:
    """Raise :class:`SignatureFailure` unless ``body`` hashes to the signature's bh=."""
    _check_body(prepared.tags, prepared.policy, body)


def check_key(key_record: bytes, algorithm: str, signature: bytes, digest: bytes) -> None:
    """Raise :class:`SignatureFailure` unless ``signature`` over ``digest`` verifies with the
    public key of the DKIM TXT record ``key_record`` (``v=DKIM1; k=...; p=...``)."""
    _verify_maths(key_record, algorithm.encode("ascii"), signature, digest)


def _verify_one(
    headers: list[tuple[bytes, bytes]], body: bytes, field: tuple[bytes, bytes], lookup: KeyLookup
) -> None:
    prepared = prepare(headers, field)
    check_body(prepared, body)
    sig = prepared.tags
    name = (sig[b"s"] + b"._domainkey." + sig[b"d"]).decode("ascii", "replace")
    record = lookup(name)
    if record is None:
        raise _Fail(f"no DKIM key record at {name}")
    _verify_maths(record, sig[b"a"], prepared.signature, prepared.digest)


def verify_message(message: bytes, lookup: KeyLookup) -> list[VerifyResult]:
    """Check every DKIM-Signature of ``message`` (LF or CRLF); one result per signature."""
    try:
        headers, body = dkim.rfc822_parse(message)
    except dkim.MessageFormatError as exc:
        return [
            VerifyResult(
                index=0,
                domain="",
                selector="",
                algorithm="",
                ok=False,
                detail=f"message is malformed: {exc}",
            )
        ]
    fields = [(bytes(n), bytes(v)) for n, v in headers if n.lower() == b"dkim-signature"]
    results: list[VerifyResult] = []
    for index, field in enumerate(fields):
        try:
            tags = dkim.util.parse_tag_value(field[1])
        except dkim.util.InvalidTagValueList:
            tags = {}

        def tag(name: bytes, tags: dict[bytes, bytes] = tags) -> str:
            return _WSP.sub(b"", tags.get(name, b"")).decode("ascii", "replace")

        try:
            _verify_one(headers, body, field, lookup)
            ok, detail = True, "pass"
        except _Fail as exc:
            ok, detail = False, str(exc)
        except (dkim.DKIMException, dkim.util.InvalidTagValueList, ValueError, KeyError) as exc:
            ok, detail = False, f"signature field is malformed: {exc}"
        results.append(
            VerifyResult(
                index=index,
                domain=tag(b"d"),
                selector=tag(b"s"),
                algorithm=tag(b"a"),
                ok=ok,
                detail=detail,
            )
        )
    return results
