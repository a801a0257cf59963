"""DKIM key lifecycle: generation, the stored-key record, and the in-memory :class:`KeyRing`.

The ring is what the hot path asks "which keys sign mail from this domain?". It is filled once
at start from ``[[dkim.keys]]`` files and (optionally) from the oltp tier via
:mod:`engine.dkim.store`, so no key file is read, no row fetched and no PEM parsed per message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Literal

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from engine.config import DkimConfig
from engine.dkim.crypto_box import KeyBox, key_aad
from engine.dkim.dnscheck import DnsCheck, TxtLookup, check_key
from engine.dkim.sign import (
    MAX_RSA_BITS,
    MIN_RSA_BITS,
    Algorithm,
    SigningKey,
    load_signing_key,
    public_txt_record,
)
from engine.errors import DkimKeyError, DkimKeyMissingError
from engine.psl import parent_domains

log = logging.getLogger(__name__)

KeyState = Literal["pending", "active", "retired"]

_ALIASES: dict[str, Algorithm] = {
    "rsa": "rsa-sha256",
    "rsa-sha256": "rsa-sha256",
    "ed25519": "ed25519-sha256",
    "ed25519-sha256": "ed25519-sha256",
}
# Signatures are emitted in this order on dual-signed mail: receivers without Ed25519 support
# (still many) see the RSA one first.
_ALGORITHM_ORDER: tuple[Algorithm, ...] = ("rsa-sha256", "ed25519-sha256")


def algorithm_name(text: str) -> Algorithm:
    """``rsa``/``ed25519`` (CLI spelling) or the full ``a=`` name, as the ``a=`` name."""
    try:
        return _ALIASES[text.strip().lower()]
    except KeyError:
        raise DkimKeyError(
            f"unknown DKIM key type {text!r}", hint="use rsa (rsa-sha256) or ed25519"
        ) from None


def generate_key(algorithm: str = "rsa-sha256", bits: int = 2048) -> tuple[bytes, str]:
    """A new private key as PKCS#8 PEM, and the DNS TXT record value publishing it.

    ``algorithm`` is ``rsa``/``rsa-sha256`` (``bits`` 1024–4096, default 2048) or
    ``ed25519``/``ed25519-sha256`` (``bits`` ignored).
    """
    algo = algorithm_name(algorithm)
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algo == "rsa-sha256":
        if not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
            raise DkimKeyError(
                f"RSA key size {bits} is not supported; use {MIN_RSA_BITS}–{MAX_RSA_BITS} bits",
                hint="2048 is the usual choice",
            )
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, public_txt_record(key)


class StoredKey(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``oltp.dkim_keys``; the private key stays encrypted until :meth:`load`."""

    tenant_id: str
    domain: str
    selector: str
    algorithm: Algorithm
    private_key_enc: bytes
    public_txt: str
    state: KeyState
    created_at: datetime | None = None
    activated_at: datetime | None = None
    retired_at: datetime | None = None

    def load(self, box: KeyBox) -> SigningKey:
        """Decrypt and parse the private key (DkimCryptoError / DkimKeyError on failure)."""
        pem = box.open(
            self.private_key_enc, aad=key_aad(self.tenant_id, self.domain, self.selector)
        )
        # Trusted: insert_key checked this PEM before sealing it, and the AEAD tag (with the
        # tenant, domain and selector as associated data) proves these are those bytes.
        key = load_signing_key(pem, domain=self.domain, selector=self.selector, trusted=True)
        if key.algorithm != self.algorithm:
            raise DkimKeyError(
                f"stored DKIM key {key.dns_name} (tenant {self.tenant_id}) is {key.algorithm} "
                f"but its row says {self.algorithm}"
            )
        return key


def _read_key_file(path: str) -> bytes:
    p = Path(path)
    try:
        mode = p.stat().st_mode
        data = p.read_bytes()
    except OSError as exc:
        raise DkimKeyError(
            f"DKIM private key file {path} cannot be read: {exc.strerror}",
            hint="check [[dkim.keys]] private_key_file and the file's owner/mode",
        ) from None
    if mode & 0o004:
        # Not fatal (a demo may create keys with a loose umask), but an operator must know.
        log.warning("dkim key file is world-readable", extra={"file": path, "fix": "chmod 600"})
    return data


def _activation_order(record: StoredKey) -> float:
    when = record.activated_at or record.created_at
    return when.timestamp() if when is not None else 0.0


_Index = dict[tuple[str | None, str], tuple[SigningKey, ...]]


#: A stored row's identity for reuse across refreshes: tenant, domain, selector, algorithm and
#: the sealed key (a changed row is a new key).
_StoredId = tuple[str, str, str, str, bytes]


class KeyRing:
    """Loaded signing keys by sender domain (and tenant); the lookup the hot path makes.

    Per (tenant, domain, algorithm) the most recently added key wins: for config files that is
    the last ``[[dkim.keys]]`` entry, for stored keys the latest ``activated_at``. A key bound
    to a tenant (stored keys; config keys with ``tenant``) signs that tenant's mail only, and
    takes precedence over an unbound config key (legacy: any tenant). A domain with no key of
    its own may be signed by a parent domain's key (``d=example.com`` aligns with mail from
    ``news.example.com`` under relaxed DMARC alignment) — the tenant's own or an unbound one,
    never another tenant's: enqueue has checked the tenant owns the From domain.
    """

    def __init__(self, *, required: bool = False, enabled: bool = True) -> None:
        self.required = required
        self.enabled = enabled
        # (tenant or None for config keys, domain) -> {algorithm: key}
        self._keys: dict[tuple[str | None, str], dict[Algorithm, SigningKey]] = {}
        self._cache: _Index = {}
        # Keys given with add() (config files), kept across refreshes of the stored ones.
        self._fixed: dict[tuple[str | None, str], dict[Algorithm, SigningKey]] = {}
        # The stored keys loaded at the last refresh, by row content.
        self._stored: dict[_StoredId, SigningKey] = {}

    @classmethod
    def from_config(
        cls, cfg: DkimConfig, *, read: Callable[[str], bytes] = _read_key_file
    ) -> KeyRing:
        """Load every ``[[dkim.keys]]`` file now, so a bad key stops the start, not a send."""
        ring = cls(required=cfg.required, enabled=cfg.enabled)
        for entry in cfg.keys:
            pem = read(entry.private_key_file)
            key = load_signing_key(pem, domain=entry.domain, selector=entry.selector)
            if key.algorithm != entry.algorithm:
                raise DkimKeyError(
                    f"[[dkim.keys]] {key.dns_name}: {entry.private_key_file} holds an "
                    f"{key.algorithm} key but algorithm = {entry.algorithm!r}",
                    hint=f'set algorithm = "{key.algorithm}"',
                )
            ring.add(key, tenant_id=entry.tenant)
        return ring

    def add(self, key: SigningKey, *, tenant_id: str | None = None) -> None:
        """Make ``key`` the active key for its domain and algorithm (for ``tenant_id``)."""
        self._keys.setdefault((tenant_id, key.domain), {})[key.algorithm] = key
        self._fixed.setdefault((tenant_id, key.domain), {})[key.algorithm] = key
        self._cache = {}

    def replace_stored(self, records: Iterable[StoredKey], box: KeyBox) -> None:
        """Swap in the stored keys (active rows only), replacing every earlier stored key.

        Only rows not seen at the last refresh are decrypted and parsed (this runs on the event
        loop every minute, with one row per tenant key); a row that fails raises before
        anything is swapped, so a bad row never leaves the ring half-updated.
        """
        active = sorted(
            (r for r in records if r.state == "active"),
            key=_activation_order,
        )
        seen: dict[_StoredId, SigningKey] = {}
        for r in active:
            rid = (r.tenant_id, r.domain, r.selector, r.algorithm, r.private_key_enc)
            seen[rid] = self._stored.get(rid) or r.load(box)
        keys = {k: dict(v) for k, v in self._fixed.items()}
        for (tenant_id, *_), key in seen.items():
            keys.setdefault((tenant_id, key.domain), {})[key.algorithm] = key
        self._keys = keys
        self._stored = seen
        self._cache = {}

    def _lookup(self, domain: str, tenant_id: str | None) -> tuple[SigningKey, ...]:
        owners: Sequence[str | None] = (tenant_id, None) if tenant_id is not None else (None,)
        for candidate in parent_domains(domain):
            for owner in owners:
                found = self._keys.get((owner, candidate))
                if found:
                    return tuple(found[a] for a in _ALGORITHM_ORDER if a in found)
        return ()

    def keys_for(self, domain: str, *, tenant_id: str | None = None) -> tuple[SigningKey, ...]:
        """Keys to sign mail from ``domain`` with: RSA and/or Ed25519, RSA first.

        Returns ``()`` when signing is disabled, or when no key exists and ``[dkim] required``
        is false (the caller sends unsigned and counts it). With ``required = true`` a domain
        without a key raises :class:`DkimKeyMissingError` — the sender is held, never sent
        unsigned silently.
        """
        if not self.enabled:
            return ()
        domain = domain.strip().rstrip(".").lower()
        cache_key = (tenant_id, domain)
        keys = self._cache.get(cache_key)
        if keys is None:
            keys = self._lookup(domain, tenant_id)
            self._cache[cache_key] = keys
        if not keys and self.required:
            whose = f" of tenant {tenant_id}" if tenant_id else ""
            raise DkimKeyMissingError(
                f"no active DKIM key for {domain}{whose}; its mail is held, not sent unsigned",
                hint=f"engine dkim keygen --domain {domain} --selector S, publish the TXT "
                "record, then add it to [[dkim.keys]] (or activate the stored key)",
            )
        return keys

    async def drop_unpublished(
        self, *, lookup: TxtLookup | None = None, timeout: float = 3.0
    ) -> list[DnsCheck]:
        """Check the DNS record of every config key; drop those missing or mismatched.

        For ``[dkim] check_dns = true`` at start. A DNS *error* (resolver down) keeps the key:
        blocking all mail because DNS hiccuped at start would be worse than the risk. Returns
        every check so the caller can log them.
        """
        checks: list[DnsCheck] = []
        for (tenant, domain), by_algo in list(self._keys.items()):
            if tenant is not None:
                continue  # stored keys were checked when promoted
            for algorithm, key in list(by_algo.items()):
                check = await check_key(key, lookup=lookup, timeout=timeout)
                checks.append(check)
                if check.status in ("missing", "mismatch"):
                    log.error(
                        "dkim key dropped: DNS record does not publish it",
                        extra={
                            "record": check.name,
                            "status": check.status,
                            "detail": check.detail,
                        },
                    )
                    del by_algo[algorithm]
                elif check.status == "error":
                    log.warning(
                        "dkim key kept: DNS check failed",
                        extra={"record": check.name, "detail": check.detail},
                    )
            if not by_algo:
                del self._keys[(tenant, domain)]
        self._cache = {}
        return checks

    def domains(self) -> Mapping[tuple[str | None, str], tuple[SigningKey, ...]]:
        """Every (tenant, domain) with its active keys, for status pages and start-up checks."""
        return {k: tuple(v[a] for a in _ALGORITHM_ORDER if a in v) for k, v in self._keys.items()}
