"""Run a sender domain's compliance check, store the verdict and apply ``[compliance] on_fail``.

What the daemon calls (the CLI ``engine senders check`` calls the same functions):

* :func:`on_sender_first_use` for a caller that learns of one new address: applies the domain's
  stored verdict (a blocked domain's new address is paused at once) or checks it now;
* :func:`housekeep` every ``[compliance] poll_s``: checks never-checked domains (a new sender's
  first use; senders are created at enqueue), re-checks verdicts older than
  ``[compliance] check_interval_s`` (:func:`check_due`), pauses new addresses of blocked domains;
* :func:`check_and_apply` for one domain.

On ``fail``: ``warn`` records and logs; ``throttle`` records a per-domain rate ceiling
(``oltp.sender_compliance.rate_ceiling_per_s``) that shaping applies as the domain's
sender-domain rate (the lower of it and ``[shaping] sender_domain_rate_per_s``; at once on the
instance that checked, at the next quota refresh — within a minute — on the others);
``block`` pauses every sender address of the domain through :mod:`engine.senders.service`
(``oltp.senders.paused``, which the dispatcher holds on, the ``sender_paused`` event, and
shaping's Redis cache when a :class:`Shaper` is given) with the failed checks as the reason.
A later ``pass`` (or ``warn``) lifts a compliance block, never an operator's or an
auto-pause. ``error`` (DNS failed) keeps the previous action.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import asyncpg

from engine.compliance import store
from engine.compliance.check import ComplianceReport, DkimExpectation, check_domain
from engine.compliance.store import Action, StoredVerdict
from engine.config import Config
from engine.dkim import store as dkim_store
from engine.dkim.keys import KeyRing
from engine.errors import DkimError
from engine.resolver import Resolve, system_resolver
from engine.senders import service as senders
from engine.shaping.shaper import Shaper

log = logging.getLogger("engine.compliance")

#: Prefix of ``oltp.senders.paused_reason`` for a compliance block (so only those are lifted).
PAUSE_PREFIX = "compliance: "
_MAX_REASON = 500


def _parents(domain: str) -> list[str]:
    labels = domain.split(".")
    return [".".join(labels[i:]) for i in range(len(labels) - 1)]


async def dkim_expectations(
    pool: asyncpg.Pool, cfg: Config, tenant_id: str | None, domain: str
) -> list[DkimExpectation]:
    """The keys mail from ``domain`` is signed with: the tenant's active stored keys (own or a
    parent domain's), else ``[[dkim.keys]]`` from the config, as the KeyRing would pick them."""
    found: list[DkimExpectation] = []
    if tenant_id is not None:
        for candidate in _parents(domain):
            keys = await dkim_store.list_keys(pool, tenant_id=tenant_id, domain=candidate)
            found = [
                DkimExpectation(domain=k.domain, selector=k.selector, public_txt=k.public_txt)
                for k in keys
                if k.state == "active"
            ]
            if found:
                return found
    wanted = set(_parents(domain))
    if not any(k.domain.lower() in wanted for k in cfg.dkim.keys):
        return []
    try:
        ring = KeyRing.from_config(cfg.dkim)
        signing = ring.keys_for(domain)
    except DkimError as exc:
        log.warning("cannot load [[dkim.keys]] for the check", extra={"error": str(exc)})
        return []
    return [
        DkimExpectation(domain=k.domain, selector=k.selector, public_txt=k.public_txt)
        for k in signing
    ]


def _action(cfg: Config, report: ComplianceReport, previous: StoredVerdict | None) -> Action:
    if report.status == "error":
        return previous.action if previous is not None else "none"
    if report.status != "fail":
        return "none"
    return cfg.compliance.on_fail


def pause_reason(reasons: Sequence[str]) -> str:
    """The reason shown on a blocked sender (cut to fit a log line and the admin API)."""
    text = PAUSE_PREFIX + "; ".join(reasons)
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"


async def _block(
    pool: asyncpg.Pool,
    tenant_id: str,
    addresses: Sequence[str],
    reason: str,
    shaper: Shaper | None,
) -> None:
    for address in addresses:
        await senders.pause(pool, tenant_id, address, reason, actor=None, cache=shaper)


async def _unblock(
    pool: asyncpg.Pool, tenant_id: str, addresses: Sequence[str], shaper: Shaper | None
) -> list[str]:
    ours = await store.compliance_paused(pool, tenant_id, addresses, PAUSE_PREFIX)
    for address in ours:
        await senders.resume(pool, tenant_id, address, actor=None, cache=shaper, grace_s=10.0)
    return ours


async def apply_verdict(
    pool: asyncpg.Pool,
    cfg: Config,
    tenant_id: str,
    report: ComplianceReport,
    *,
    previous: StoredVerdict | None = None,
    shaper: Shaper | None = None,
) -> StoredVerdict:
    """Store ``report`` for the tenant and enforce ``[compliance] on_fail``."""
    action = _action(cfg, report, previous)
    ceiling = cfg.compliance.throttle_rate_per_s if action == "throttle" else None
    if action == "throttle" and previous is not None and report.status == "error":
        ceiling = previous.rate_ceiling_per_s
    verdict = await store.save(pool, tenant_id, report, action=action, rate_ceiling_per_s=ceiling)
    addresses = await store.sender_addresses(pool, tenant_id, report.domain)
    reasons = verdict.reasons or (previous.reasons if previous is not None else [])
    if shaper is not None:
        shaper.set_domain_ceiling(tenant_id, report.domain, verdict.rate_ceiling_per_s)
    if action == "block":
        await _block(pool, tenant_id, addresses, pause_reason(reasons), shaper)
    elif previous is not None and previous.action == "block":
        await _unblock(pool, tenant_id, addresses, shaper)
    if report.status == "fail":
        log.warning(
            "sender domain fails compliance",
            extra={"tenant": tenant_id, "domain": report.domain, "action": action,
                   "reasons": verdict.reasons},
        )  # fmt: skip
    return verdict


async def check_and_apply(
    pool: asyncpg.Pool,
    cfg: Config,
    tenant_id: str,
    domain: str,
    *,
    resolve: Resolve | None = None,
    shaper: Shaper | None = None,
) -> StoredVerdict:
    """Check one sender domain of a tenant now, store and enforce the verdict."""
    domain = domain.strip().lower().rstrip(".")
    report = await check_domain(
        domain,
        resolve=resolve or system_resolver(cfg.compliance.dns_timeout_s),
        relay_ips=cfg.compliance.relay_ips,
        dkim_keys=await dkim_expectations(pool, cfg, tenant_id, domain),
        envelope_domain=cfg.inbound.verp_domain,
    )
    previous = await store.load(pool, tenant_id, domain)
    return await apply_verdict(pool, cfg, tenant_id, report, previous=previous, shaper=shaper)


async def on_sender_first_use(
    pool: asyncpg.Pool,
    cfg: Config,
    tenant_id: str,
    address: str,
    *,
    resolve: Resolve | None = None,
    shaper: Shaper | None = None,
) -> StoredVerdict:
    """A new sender address: reuse its domain's fresh verdict (pausing it if the domain is
    blocked), or check the domain now. Call it off the hot path (a background task)."""
    domain = address.rpartition("@")[2].lower()
    previous = await store.load(pool, tenant_id, domain)
    if previous is None:
        return await check_and_apply(pool, cfg, tenant_id, domain, resolve=resolve, shaper=shaper)
    if previous.action == "block":
        await _block(pool, tenant_id, [address.lower()], pause_reason(previous.reasons), shaper)
    return previous


async def check_due(
    pool: asyncpg.Pool,
    cfg: Config,
    *,
    resolve: Resolve | None = None,
    shaper: Shaper | None = None,
    limit: int = 1000,
) -> list[StoredVerdict]:
    """The daily task: re-check every sender domain whose verdict is older than the interval."""
    resolve = resolve or system_resolver(cfg.compliance.dns_timeout_s)
    out = []
    for tenant_id, domain in await store.due(pool, cfg.compliance.check_interval_s, limit=limit):
        out.append(
            await check_and_apply(pool, cfg, tenant_id, domain, resolve=resolve, shaper=shaper)
        )
    return out


async def housekeep(
    pool: asyncpg.Pool,
    cfg: Config,
    *,
    resolve: Resolve | None = None,
    shaper: Shaper | None = None,
) -> list[StoredVerdict]:
    """The daemon's periodic compliance task (every ``poll_s``, with ``auto_check`` on).

    A sender is created at enqueue, so its never-checked domain is due at the next round: that
    is the check "when a sender is first used", off the send path. A new address in a domain that
    is already blocked is paused with the domain's reasons. Stale verdicts are re-checked.
    """
    done = await check_due(pool, cfg, resolve=resolve, shaper=shaper)
    for tenant_id, address, reasons in await store.new_in_blocked(pool):
        await _block(pool, tenant_id, [address], pause_reason(reasons), shaper)
    return done
