"""Which VERP secret signs, and which ones are still believed: secret rotation.

Every address and token the engine makes (``b-`` bounce return paths, ``u-`` unsubscribe
addresses, one-click tokens) is signed with the current ``[inbound] verp_secret``. Checking one
accepts the current secret, then each ``[[inbound.verp_previous]]`` secret whose ``until`` is
still in the future *at check time* (the clock is a parameter, so a window closes while the
daemon runs, without a restart). Mail sent before a rotation keeps bouncing and unsubscribing
correctly for as long as the operator said.

The secrets themselves are validated (length, example values) and read from their files when
the config is loaded (engine/config/load.py); this module only refuses an unset secret, at start.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from engine.compose import verp
from engine.config import VERP_SECRET_HINT, InboundConfig
from engine.errors import ConfigError

log = logging.getLogger("engine.inbound")  # the log name operators already filter on


def current(cfg: InboundConfig) -> str:
    """The secret new addresses are signed with; :class:`ConfigError` when it is not set."""
    if not cfg.verp_secret:
        raise ConfigError(
            "[inbound] verp_secret is not set: bounce and unsubscribe addresses would be forgeable",
            hint=VERP_SECRET_HINT,
        )
    return cfg.verp_secret


def accepted(cfg: InboundConfig, now: datetime | None = None) -> list[str]:
    """The secrets a received address may be signed with at ``now``: current first."""
    secrets = [current(cfg)]
    if cfg.verp_previous:
        at = now or datetime.now(UTC)
        secrets += [p.secret for p in cfg.verp_previous if at < p.until]
    return secrets


def encode(job_id: int, cfg: InboundConfig, *, local_prefix: str = "b") -> str:
    """The address for ``job_id`` signed with the current secret (see :func:`verp.encode`)."""
    return verp.encode(
        job_id, domain=cfg.verp_domain, secret=current(cfg), local_prefix=local_prefix
    )


def envid(job_id: int, cfg: InboundConfig) -> str:
    """The ENVID (RFC 3461) for ``job_id`` signed with the current secret (:func:`verp.envid`)."""
    return verp.envid(job_id, domain=cfg.verp_domain, secret=current(cfg))


def decode(
    address: str, cfg: InboundConfig, *, local_prefix: str = "b", now: datetime | None = None
) -> int | None:
    """The job id of an address signed with any secret accepted at ``now``, else None."""
    domain = cfg.verp_domain
    job_id = verp.decode(address, domain=domain, secret=current(cfg), local_prefix=local_prefix)
    if job_id is not None or not cfg.verp_previous:
        return job_id  # the common case: one HMAC, no clock read
    for secret in accepted(cfg, now)[1:]:
        job_id = verp.decode(address, domain=domain, secret=secret, local_prefix=local_prefix)
        if job_id is not None:
            return job_id
    return None


def announce(cfg: InboundConfig, now: datetime | None = None) -> None:
    """At start: refuse an unset secret, and log which previous secrets are still accepted."""
    current(cfg)
    at = now or datetime.now(UTC)
    for i, entry in enumerate(cfg.verp_previous, 1):
        until = entry.until.isoformat()
        if at < entry.until:
            log.info(
                "previous VERP secret accepted until its window ends",
                extra={"entry": i, "until": until},
            )
        else:
            log.warning(
                "previous VERP secret expired: ignored (remove it from [[inbound.verp_previous]])",
                extra={"entry": i, "until": until},
            )
