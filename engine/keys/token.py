"""The API key format, its stored digest, and what each scope may do (sans-IO).

A key reads ``pm_live_<prefix>_<secret>``: ``prefix`` is 12 random hex digits that identify the
key in listings, logs and the audit trail (never secret), ``secret`` 32 random bytes in base64url.
Only :func:`digest` of the whole key is stored. A fast keyed hash (HMAC-SHA256) is enough because
the secret is 256 random bits: a slow password hash (bcrypt, argon2) exists to make guessing a
low-entropy password expensive, and nothing can guess 2**256 values; it would only add
milliseconds of CPU to every request.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
import secrets

import msgspec

KEY_PREFIX = "pm_live_"
PREFIX_HEX = 12
SECRET_BYTES = 32
# The digest is keyed so a leaked hash of this table cannot be matched against hashes of other
# systems' tokens; the key is constant because the secret's entropy, not the key, is the defence.
_HASH_KEY = b"penguinmails-engine/api-key/v1"
_SHAPE = re.compile(r"^pm_live_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_PREFIX_SHAPE = re.compile(r"^(?:pm_live_)?([0-9a-f]{12})$")


class Scope(enum.StrEnum):
    """What a key may do; a key has exactly one."""

    SEND = "send"  # enqueue, cancel its tenant's messages
    READ = "read"  # every GET of its tenant's data
    MANAGE = "manage"  # webhooks, suppressions, senders pause/resume, keys; implies read


class Access(enum.StrEnum):
    """What a route asks of the caller (declared on every admin route)."""

    PUBLIC = "public"  # no credentials (health, one-click unsubscribe)
    AUTHENTICATED = "authenticated"  # the operator or any valid key (the OpenAPI document)
    SEND = "send"
    READ = "read"
    MANAGE = "manage"
    OPERATOR = "operator"  # the operator token only: drain, nodes, queues, metrics, inbound


GRANTS: dict[Scope, frozenset[Access]] = {
    Scope.SEND: frozenset({Access.AUTHENTICATED, Access.SEND}),
    Scope.READ: frozenset({Access.AUTHENTICATED, Access.READ}),
    Scope.MANAGE: frozenset({Access.AUTHENTICATED, Access.READ, Access.MANAGE}),
}


class Principal(msgspec.Struct, frozen=True):
    """Who made a request: the operator (``tenant_id`` None) or one tenant's key."""

    tenant_id: str | None = None
    scope: Scope | None = None
    prefix: str | None = None

    @property
    def is_operator(self) -> bool:
        return self.tenant_id is None

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return "admin-api" if self.prefix is None else f"key:{self.prefix}"

    def may(self, access: Access) -> bool:
        """True when this caller may use a route declaring ``access``."""
        if access is Access.PUBLIC or self.is_operator:
            return True
        return self.scope is not None and access in GRANTS[self.scope]


OPERATOR = Principal()


class NewKey(msgspec.Struct, frozen=True):
    """A freshly generated key: ``key`` is shown once, ``digest`` is what is stored."""

    key: str
    prefix: str
    digest: bytes


def generate() -> NewKey:
    """A new random key."""
    prefix = secrets.token_hex(PREFIX_HEX // 2)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).rstrip(b"=").decode()
    key = f"{KEY_PREFIX}{prefix}_{secret}"
    return NewKey(key=key, prefix=prefix, digest=digest(key))


def digest(key: str) -> bytes:
    """The stored form of a key (32 bytes)."""
    return hmac.new(_HASH_KEY, key.encode(), hashlib.sha256).digest()


def looks_like_key(value: str) -> bool:
    """True when ``value`` has the shape of an API key (not whether it is valid)."""
    return value.startswith(KEY_PREFIX)


def prefix_of(key: str) -> str | None:
    """The prefix of a well-formed key, else None."""
    m = _SHAPE.match(key)
    return m.group(1) if m else None


def parse_prefix(value: str) -> str | None:
    """A prefix as an operator types it (``abcdef012345`` or ``pm_live_abcdef012345``)."""
    m = _PREFIX_SHAPE.match(value.strip())
    return m.group(1) if m else None


def matches(key: str, stored: bytes) -> bool:
    """Constant-time comparison of a presented key with a stored digest."""
    return hmac.compare_digest(digest(key), stored)
