"""Message-IDs fixed per job (DESIGN §3: a retry carries the same Message-ID as the first try).

Format: ``<pm.{job id in base36}.{tenant tag}@{sender domain}>`` where the tenant tag is the first
65 bits of SHA-256(tenant_id) in lower-case base 32. The job id is unique within one engine
database; the tenant tag and the sender's own domain make a clash with another installation need
the same job id, tenant and sending domain at once. Nothing random is involved, so computing it
again on a retry (or on another engine instance) gives the same value.
"""

from __future__ import annotations

import base64
import functools
import hashlib

from engine.compose import _base36
from engine.compose.address import normalise_domain
from engine.errors import ComposeError, JobValidationError

_PREFIX = "pm"


@functools.lru_cache(maxsize=16384)  # a few thousand active tenants; SHA-256 once each
def tenant_tag(tenant_id: str) -> str:
    """13 lower-case base-32 characters derived from ``tenant_id`` (safe in any header)."""
    digest = hashlib.sha256(tenant_id.encode("utf-8")).digest()
    return base64.b32encode(digest[:9]).decode("ascii")[:13].lower()


def make(job_id: int, tenant_id: str, domain: str) -> str:
    """Return the Message-ID (with angle brackets) of job ``job_id`` sent from ``domain``."""
    if job_id < 0:
        raise ComposeError(f"job id must be non-negative, got {job_id}")
    try:
        ascii_domain = normalise_domain(domain)
    except JobValidationError as exc:
        raise ComposeError(f"cannot make a Message-ID: {exc.message}") from None
    return f"<{_PREFIX}.{_base36.encode(job_id)}.{tenant_tag(tenant_id)}@{ascii_domain}>"


def job_id_of(message_id: str, tenant_id: str | None = None) -> int | None:
    """The job id inside an engine Message-ID, or None when it is not one of ours.

    Inbound feedback reports (ARF) often carry only the original headers; this recovers the job.
    When ``tenant_id`` is given the tenant tag must match too. It is not authenticated (anyone can
    write such a Message-ID): confirm against the store before acting on it.
    """
    value = message_id.strip().removeprefix("<").removesuffix(">")
    local, _, domain = value.rpartition("@")
    parts = local.lower().split(".")
    if not domain or len(parts) != 3 or parts[0] != _PREFIX:
        return None
    if tenant_id is not None and parts[2] != tenant_tag(tenant_id):
        return None
    return _base36.decode(parts[1])
