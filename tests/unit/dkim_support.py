"""Helpers for the DKIM tests: keys made once per session, dkimpy verification without DNS.

dkimpy verifies Ed25519 through PyNaCl, which the engine does not depend on. ``install_nacl_shim``
gives dkimpy a minimal ``nacl`` (``signing.VerifyKey``, ``encoding.Base64Encoder``,
``exceptions``) backed by ``cryptography``'s Ed25519, so ``dkim.verify`` itself — its parser,
canonicalisation and header hashing — checks our Ed25519 signatures too.
"""

from __future__ import annotations

import base64
import functools
import sys
import types
from typing import Any

import dkim
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from engine.dkim.keys import generate_key
from engine.dkim.sign import SigningKey, load_signing_key


class _BadSignatureError(Exception):
    pass


class _Base64Encoder:
    @staticmethod
    def decode(data: bytes) -> bytes:
        return base64.b64decode(data)


class _VerifyKey:
    def __init__(self, key: bytes, encoder: Any = None) -> None:
        raw = encoder.decode(key) if encoder is not None else key
        try:
            self._key = ed25519.Ed25519PublicKey.from_public_bytes(raw)
        except ValueError as exc:
            raise _nacl_exceptions.ValueError(str(exc)) from None

    def verify(self, message: bytes, signature: bytes) -> bytes:
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            raise _BadSignatureError("signature was forged or corrupt") from None
        return message


_nacl = types.ModuleType("nacl")
_nacl_signing = types.ModuleType("nacl.signing")
_nacl_encoding = types.ModuleType("nacl.encoding")
_nacl_exceptions = types.ModuleType("nacl.exceptions")
_nacl_signing.VerifyKey = _VerifyKey  # type: ignore[attr-defined]
_nacl_encoding.Base64Encoder = _Base64Encoder  # type: ignore[attr-defined]
_nacl_exceptions.BadSignatureError = _BadSignatureError  # type: ignore[attr-defined]
_nacl_exceptions.ValueError = type("ValueError", (ValueError,), {})  # type: ignore[attr-defined]
_nacl.signing = _nacl_signing  # type: ignore[attr-defined]
_nacl.encoding = _nacl_encoding  # type: ignore[attr-defined]
_nacl.exceptions = _nacl_exceptions  # type: ignore[attr-defined]


def install_nacl_shim() -> None:
    """Let dkimpy verify Ed25519 (idempotent; a real PyNaCl, if installed, is left alone)."""
    if not hasattr(dkim, "nacl"):
        dkim.nacl = _nacl
        sys.modules.setdefault("nacl", _nacl)


@functools.cache
def pem(algorithm: str, bits: int = 2048) -> tuple[bytes, str]:
    """A private key PEM and its TXT value, generated once per test session."""
    return generate_key(algorithm, bits)


@functools.cache
def key(
    algorithm: str = "rsa", bits: int = 2048, domain: str = "example.com", selector: str = "s1"
) -> SigningKey:
    """A loaded signing key, cached per session."""
    private, _ = pem(algorithm, bits)
    return load_signing_key(private, domain=domain, selector=selector)


def dnsfunc_for(*keys: SigningKey) -> Any:
    """A ``dnsfunc=`` for dkimpy answering the TXT records of ``keys`` (and nothing else)."""
    records = {f"{k.selector}._domainkey.{k.domain}.".encode(): k.public_txt.encode() for k in keys}

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    return dnsfunc


def dkimpy_verify_all(signed: bytes, *keys: SigningKey) -> list[bool]:
    """dkimpy's verdict on every DKIM-Signature of ``signed``, topmost first."""
    install_nacl_shim()
    d = dkim.DKIM(signed)
    count = sum(1 for name, _ in d.headers if name.lower() == b"dkim-signature")
    return [_verify_one(d, i, dnsfunc_for(*keys)) for i in range(count)]


def _verify_one(d: Any, idx: int, dnsfunc: Any) -> bool:
    # As dkim.verify() does for the first signature: a DKIMException is a failed verification.
    try:
        return bool(d.verify(idx=idx, dnsfunc=dnsfunc))
    except dkim.DKIMException:
        return False
