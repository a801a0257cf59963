"""Webhook signatures (sans-IO): Standard Webhooks, plus the deprecated Stripe-like header.

Standard Webhooks (https://www.standardwebhooks.com): headers ``webhook-id``,
``webhook-timestamp`` (Unix seconds) and ``webhook-signature: v1,<base64 HMAC-SHA256>`` over
``"<id>.<timestamp>.<raw body>"``, keyed with the secret's base64 part decoded (the ``whsec_``
prefix stripped), so the reference libraries (``standardwebhooks`` on PyPI and npm) verify it.

Deprecated, sent for one more release: ``X-PenguinMails-Signature: t=<unix seconds>,v1=<hex>``,
HMAC-SHA256 over ``"<unix time>.<raw body>"`` keyed with the whole secret string as UTF-8.
Both sign the timestamp with the body so a captured request cannot be replayed later, and the
receiver checks it against its own clock (``tolerance_s``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time

HEADER = "X-PenguinMails-Signature"  # deprecated: Standard Webhooks' headers replace it
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` and 32 random bytes in standard base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of ``secret`` as the Standard Webhooks libraries derive it.

    The ``whsec_`` prefix is dropped and the rest base64-decoded leniently (padding added,
    characters outside the alphabet skipped), exactly as the Python reference library does, so a
    secret created before standard base64 was used (URL-safe, ``-`` and ``_``) still gives the
    key that library computes. The npm library refuses such a secret: rotate it (docs/events.md).
    """
    text = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(text + "==")
    except (binascii.Error, ValueError):
        key = b""
    return key or secret.encode()  # never an empty key: HMAC would accept any forger


def standard_signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64>``: the Standard Webhooks signature of ``body`` sent as ``msg_id``."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def standard_headers(
    secret: str, msg_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body`` sent now (or at ``timestamp``)."""
    t = int(time.time()) if timestamp is None else timestamp
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(t),
        SIGNATURE_HEADER: standard_signature(secret_key(secret), msg_id, t, body),
    }


def verify_standard(
    secret: str,
    body: bytes,
    headers: dict[str, str],
    *,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """True when Standard Webhooks ``headers`` sign ``body`` with ``secret`` within tolerance.

    Several space-separated signatures are accepted (any may match), as the standard allows
    while a secret is being rotated.
    """
    low = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp = low.get(ID_HEADER, ""), low.get(TIMESTAMP_HEADER, "").strip()
    if not msg_id or not (stamp.isascii() and stamp.isdigit()):
        return False
    t = int(stamp)
    current = time.time() if now is None else now
    if abs(current - t) > tolerance_s:
        return False
    expected = standard_signature(secret_key(secret), msg_id, t, body)
    given = low.get(SIGNATURE_HEADER, "").split(" ")
    return any(hmac.compare_digest(expected, s) for s in given if s)


def digest(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return mac.hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The deprecated ``X-PenguinMails-Signature`` value for ``body`` sent now (or at
    ``timestamp``)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={digest(secret, t, body)}"


def verify(
    secret: str, body: bytes, header: str, *, tolerance_s: float = 300.0, now: float | None = None
) -> bool:
    """True when the deprecated ``header`` signs ``body`` and is at most ``tolerance_s`` old.

    Several ``v1=`` entries are accepted (any may match), so a receiver can verify while the
    sender rotates secrets.
    """
    parts = [p.split("=", 1) for p in header.split(",") if "=" in p]
    stamps = [v for k, v in parts if k.strip() == "t"]
    sigs = [v.strip() for k, v in parts if k.strip() == "v1"]
    if (
        len(stamps) != 1
        or not (stamps[0].strip().isascii() and stamps[0].strip().isdigit())
        or not sigs
    ):
        return False
    t = int(stamps[0])
    current = time.time() if now is None else now
    if abs(current - t) > tolerance_s:
        return False
    expected = digest(secret, t, body)
    return any(hmac.compare_digest(expected, s) for s in sigs)
