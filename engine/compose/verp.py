"""VERP bounce addresses that carry the job id and prove the engine made them.

``encode(1234, domain="bounces.example.com", secret=s)`` gives
``b-ya-k3v5q2m7xd@bounces.example.com``: the prefix, the job id in lower-case base 36, and a tag:
the first 64 bits of HMAC-SHA256(secret, "<prefix>-<id>@<domain>") as 10 base-36 characters
(51.7 bits). Everything is lower-case letters and digits, so an
MTA that lower-cases the local part (many do) does not break it; :func:`decode` folds case too.

The HMAC is what makes bounce handling safe: without it anyone could mail ``b-<any id>@`` and mark
arbitrary jobs bounced (and suppress their recipients). 51 bits make guessing a valid tag for one
job take ~10^15 tries; the inbound listener also rate-limits.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re

from engine.compose import _base36
from engine.compose.address import normalise_domain
from engine.errors import ComposeError, JobValidationError

TAG_LENGTH = 10
_TAG_MODULUS = 36**TAG_LENGTH
_PREFIX_RE = re.compile(r"[a-z][a-z0-9]{0,15}")


def _key(secret: bytes | str) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    if not key:
        raise ComposeError("the VERP secret is empty; set [inbound] verp_secret")
    return key


@functools.lru_cache(maxsize=8)
def _keyed(key: bytes) -> hmac.HMAC:
    return hmac.new(key, digestmod=hashlib.sha256)


def _tag(key: bytes, prefix: str, job36: str, domain: str) -> str:
    # A copy of a keyed HMAC per message, not hmac.digest(): the one-shot call fetches the
    # algorithm from OpenSSL 3 every time, under a lock the DKIM signer threads also take, and
    # it holds the GIL while it waits; copying a keyed object skips that fetch.
    h = _keyed(key).copy()
    h.update(f"{prefix}-{job36}@{domain}".encode("ascii"))
    mac = h.digest()
    # 10 base-36 characters = 51.7 bits of the MAC; base 36 (not base32/64) because it is
    # case-insensitive and the stdlib's base32 is pure Python, slower than this.
    return _base36.encode(int.from_bytes(mac[:8], "big") % _TAG_MODULUS, TAG_LENGTH)


def _domain(domain: str) -> str:
    try:
        return normalise_domain(domain)
    except JobValidationError as exc:
        raise ComposeError(f"bad VERP domain: {exc.message}") from None


def encode(job_id: int, *, domain: str, secret: bytes | str, local_prefix: str = "b") -> str:
    """Return the VERP envelope sender for job ``job_id`` (used as ``MAIL FROM``)."""
    if not _PREFIX_RE.fullmatch(local_prefix):
        raise ComposeError(
            f"VERP local prefix {local_prefix!r} must be 1-16 lower-case letters/digits"
        )
    if job_id < 0 or job_id >= 2**63:
        raise ComposeError(f"job id {job_id} does not fit a bigint")
    ascii_domain = _domain(domain)
    job36 = _base36.encode(job_id)
    tag = _tag(_key(secret), local_prefix, job36, ascii_domain)
    return f"{local_prefix}-{job36}-{tag}@{ascii_domain}"


def decode(
    address: str, *, domain: str, secret: bytes | str, local_prefix: str = "b"
) -> int | None:
    """Return the job id of a VERP address made by :func:`encode`, or None.

    None when the domain is not ``domain``, the local part is not ``<prefix>-<id>-<tag>``, or the
    tag does not match (forged or corrupted). Case-insensitive; accepts surrounding angle brackets.
    """
    value = address.strip().removeprefix("<").removesuffix(">")
    local, at, addr_domain = value.rpartition("@")
    if not at:
        return None
    try:
        if normalise_domain(addr_domain) != _domain(domain):
            return None
    except JobValidationError:
        return None
    parts = local.lower().split("-")
    if len(parts) != 3 or parts[0] != local_prefix.lower() or len(parts[2]) != TAG_LENGTH:
        return None
    job_id = _base36.decode(parts[1])
    if job_id is None:
        return None
    expected = _tag(_key(secret), parts[0], parts[1], _domain(domain))
    # compare_digest: the time taken must not tell an attacker how many characters were right.
    return job_id if hmac.compare_digest(expected, parts[2]) else None


#: The local prefix of an ENVID (RFC 3461 §4.4): ``e-<job>-<tag>``, the VERP HMAC of its domain.
ENVID_PREFIX = "e"


def envid(job_id: int, *, domain: str, secret: bytes | str) -> str:
    """The ENVID for job ``job_id``: ``e-<job36>-<tag>`` — the local part of
    ``encode(job_id, domain=domain, secret=secret, local_prefix="e")``, so only the holder of
    the secret can make one and :func:`envid_job` proves it."""
    return encode(job_id, domain=domain, secret=secret, local_prefix=ENVID_PREFIX).partition("@")[0]


def envid_job(value: str, *, domain: str, secret: bytes | str) -> int | None:
    """The job of an ENVID made by :func:`envid`, or None (forged, corrupted, someone else's)."""
    if "@" in value or len(value) > 64:
        return None
    try:
        return decode(f"{value}@{domain}", domain=domain, secret=secret, local_prefix=ENVID_PREFIX)
    except ComposeError:
        return None
