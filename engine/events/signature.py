"""Webhook signatures (sans-IO): HMAC-SHA256 over ``"<unix time>.<raw body>"``.

Header ``X-PenguinMails-Signature: t=<unix seconds>,v1=<hex digest>`` (the scheme Stripe uses):
the timestamp is signed with the body so a captured request cannot be replayed later, and the
receiver checks it against its own clock (:func:`verify`, ``tolerance_s``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

HEADER = "X-PenguinMails-Signature"
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh signing secret (256 bits, URL-safe)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return mac.hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The header value for ``body`` sent now (or at ``timestamp``)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={digest(secret, t, body)}"


def verify(
    secret: str, body: bytes, header: str, *, tolerance_s: float = 300.0, now: float | None = None
) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` and is at most ``tolerance_s`` old.

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
