"""AES-256-GCM encryption of DKIM private keys at rest (the oltp tier stores only ciphertext).

The master key is 32 random bytes, base64, from ``[dkim] master_key`` or ``master_key_file``
(or ``ENGINE_DKIM__MASTER_KEY``). It is never logged: :class:`KeyBox` hides it from ``repr`` and
no error message contains it. Each sealed blob is ``version(1) || nonce(12) || ciphertext+tag``;
the additional authenticated data binds it to its (tenant, domain, selector) row, so a
ciphertext copied onto another row fails to open instead of signing for the wrong domain.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engine.config import DkimConfig, read_secret
from engine.errors import DkimCryptoError

_VERSION = b"\x01"
_NONCE_BYTES = 12  # the GCM standard nonce; random per seal, collisions negligible at our volume
_KEY_BYTES = 32


def generate_master_key() -> str:
    """A fresh master key, base64, for ``[dkim] master_key_file``."""
    return base64.b64encode(os.urandom(_KEY_BYTES)).decode("ascii")


def key_aad(tenant_id: str, domain: str, selector: str) -> bytes:
    """Associated data naming the row a sealed private key belongs to."""
    return b"\0".join((b"dkim-key", tenant_id.encode(), domain.encode(), selector.encode()))


class KeyBox:
    """Seals and opens private keys with the master key; hides the key from repr and logs."""

    __slots__ = ("_aead",)

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != _KEY_BYTES:
            raise DkimCryptoError(
                f"DKIM master key must be {_KEY_BYTES} bytes, got {len(master_key)}",
                hint="generate one with: head -c 32 /dev/urandom | base64",
            )
        self._aead = AESGCM(master_key)

    @classmethod
    def from_base64(cls, text: str) -> KeyBox:
        """Build from the base64 text form used in the config."""
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise DkimCryptoError(
                "DKIM master key is not valid base64",
                hint="generate one with: head -c 32 /dev/urandom | base64",
            ) from None
        return cls(raw)

    @classmethod
    def from_config(cls, cfg: DkimConfig) -> KeyBox:
        """The box for ``[dkim] master_key`` / ``master_key_file``; DkimCryptoError if unset."""
        text = read_secret(cfg.master_key, cfg.master_key_file, "[dkim] master_key")
        if not text:
            raise DkimCryptoError(
                "no DKIM master key configured; keys in the database cannot be read or stored",
                hint="set [dkim] master_key_file (mode 0600) or ENGINE_DKIM__MASTER_KEY",
            )
        return cls.from_base64(text)

    def seal(self, plaintext: bytes, *, aad: bytes) -> bytes:
        """Encrypt ``plaintext``; ``aad`` (see :func:`key_aad`) must be given again to open."""
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, _VERSION + aad)

    def open(self, blob: bytes, *, aad: bytes) -> bytes:
        """Decrypt a blob from :meth:`seal`; DkimCryptoError if the key or the row is wrong."""
        if len(blob) < 1 + _NONCE_BYTES + 16 or blob[:1] != _VERSION:
            raise DkimCryptoError("stored DKIM private key is not in a known encrypted format")
        nonce = blob[1 : 1 + _NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, blob[1 + _NONCE_BYTES :], _VERSION + aad)
        except InvalidTag:
            raise DkimCryptoError(
                "stored DKIM private key does not decrypt",
                hint="the [dkim] master key differs from the one that stored it, "
                "or the row was altered",
            ) from None

    def __repr__(self) -> str:
        return "KeyBox(<master key hidden>)"
