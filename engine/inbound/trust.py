"""Which inbound reports are believed: the event-loop half of DESIGN §7 "Trust".

The parse worker hashed everything (:mod:`engine.inbound.evidence`); what is left here is cheap:
a key lookup and one public-key check per signature, and for configured feedback-loop reporters
a cached DNS lookup (their DKIM key, or SPF for the connecting IP). :meth:`InboundTrust.assess`
says what a report proves; :mod:`engine.inbound.effects` decides from that what it may change:

- ``own``: the quoted original carries a signature made with a key of our KeyRing that still
  verifies, and that signs the Message-ID: the job named by that Message-ID is proven.
- ``reporter``: a configured ``[[inbound.fbl_reporters]]`` entry authenticated the report.
- ``envid_job``: a DSN echoed an ENVID only we can make (:func:`engine.compose.verp.envid`).
- ``return_path_job``: the quoted original's Return-Path is one of our VERP addresses (HMAC
  checked) — used to find the job of a redacted original, under ``reporter`` only.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

import msgspec

from engine import metrics
from engine.compliance.spf import check_ip
from engine.compose import verp, verp_keys
from engine.compose.verp import envid_job
from engine.config import Config, FblReporter, InboundConfig
from engine.dkim import verify
from engine.dkim.keys import KeyRing
from engine.errors import ComplianceDnsError, ComposeError, DnsLookupError
from engine.inbound.evidence import DkimEvidence, Evidence
from engine.inbound.report import BounceKind
from engine.resolver import Resolve, TtlCache, system_resolver, with_txt_overrides

log = logging.getLogger("engine.inbound")

#: Signatures checked per report at most (the worker gathers no more than this anyway).
MAX_CHECKS = 8
#: DNS lookups one report may cause (all reporters together): a reporter's report carries one
#: or two signatures of its own; the names in d= and s= are the sender's choice, and each new
#: one is a query no cache answers.
MAX_DNS_LOOKUPS = 2
_DNS_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_-]{1,63})*$")


class OwnKey(msgspec.Struct, frozen=True):
    """A public key we sign with: its owner (None: a config key, any tenant) and TXT record."""

    tenant_id: str | None
    algorithm: str
    record: bytes  # the DKIM TXT record value publishing it


class KeyView(Protocol):
    """Our signing keys by (d=, s=): what the own-signature check asks."""

    def own_keys(self, domain: str, selector: str) -> Sequence[OwnKey]: ...


class RingKeys:
    """A :class:`KeyView` of the daemon's :class:`KeyRing` (config keys and stored keys).

    The index is rebuilt when the ring's set of (tenant, domain) keys changed (the signer
    refreshes stored keys every minute), checked at most every ``refresh_s``.
    """

    def __init__(self, ring: KeyRing, refresh_s: float = 30.0) -> None:
        self.ring = ring
        self.refresh_s = refresh_s
        self._index: dict[tuple[str, str], list[OwnKey]] = {}
        self._built = -float("inf")

    def own_keys(self, domain: str, selector: str) -> Sequence[OwnKey]:
        now = time.monotonic()
        if now - self._built > self.refresh_s:
            self._index = _index(self.ring)
            self._built = now
        return self._index.get((domain, selector), ())


def _index(ring: KeyRing) -> dict[tuple[str, str], list[OwnKey]]:
    index: dict[tuple[str, str], list[OwnKey]] = {}
    for (tenant, _), keys in ring.domains().items():
        for key in keys:
            own = OwnKey(tenant, key.algorithm, key.public_txt.encode("ascii"))
            index.setdefault((key.domain, key.selector), []).append(own)
    return index


class StaticKeys:
    """A :class:`KeyView` over a fixed mapping (tests, tools)."""

    def __init__(self, keys: Mapping[tuple[str, str], Sequence[OwnKey]]) -> None:
        self._keys = dict(keys)

    def own_keys(self, domain: str, selector: str) -> Sequence[OwnKey]:
        return self._keys.get((domain, selector), ())


class OwnProof(msgspec.Struct, frozen=True):
    """Our signature verified in a quoted original: the signed Message-ID and the key's owner."""

    message_id: str
    tenant_id: str | None  # None: a config key (valid for any tenant whose domain aligns)
    domain: str  # d=
    to: tuple[str, ...] = ()  # the signed To's addresses (lower-case)


class Assessment(msgspec.Struct, frozen=True):
    """What one inbound report proved (empty: nothing)."""

    own: tuple[OwnProof, ...] = ()
    reporter: str | None = None
    envid_job: int | None = None
    return_path_job: int | None = None


def aligned(domain: str, parent: str) -> bool:
    """``domain`` is ``parent`` or under it (relaxed alignment, as DMARC's)."""
    domain, parent = domain.lower().rstrip("."), parent.lower().rstrip(".")
    return bool(parent) and (domain == parent or domain.endswith("." + parent))


class InboundTrust:
    """Assesses inbound reports (see the module doc); one per daemon, shared by batches."""

    def __init__(
        self,
        *,
        verp_domain: str,
        verp_secret: bytes | str,
        keys: KeyView | None = None,
        reporters: Iterable[FblReporter] = (),
        resolve: Resolve | None = None,
        dns_timeout_s: float = 3.0,
        accepted: Callable[[], Sequence[bytes | str]] | None = None,
    ) -> None:
        self.verp_domain = verp_domain
        self.verp_secret = verp_secret
        # The secrets a received VERP address or ENVID may be signed with now (the current one
        # first, then those being rotated out, until their window ends: engine/compose/verp_keys).
        self.accepted = accepted or (lambda: (verp_secret,))
        self.keys = keys
        self.reporters = tuple(
            FblReporter(
                domain=r.domain.lower().rstrip("."),
                require=r.require,
                addresses=[a.lower() for a in r.addresses],
            )
            for r in reporters
        )
        self.resolve = resolve or system_resolver(dns_timeout_s)
        self.dns_timeout_s = dns_timeout_s

    @classmethod
    def from_config(cls, cfg: Config, ring: KeyRing | None = None) -> InboundTrust:
        """The daemon's: our keys from ``ring``, reporters from config, DNS with a TTL cache."""
        resolve = with_txt_overrides(system_resolver(cfg.dns.timeout_s), cfg.dns.txt_overrides)
        return cls.for_inbound(
            cfg.inbound,
            keys=RingKeys(ring) if ring is not None else None,
            resolve=TtlCache(resolve, cfg.dns.cache_ttl_s, cfg.dns.negative_ttl_s),
            dns_timeout_s=cfg.dns.timeout_s,
        )

    @classmethod
    def for_inbound(
        cls,
        cfg: InboundConfig,
        *,
        keys: KeyView | None = None,
        resolve: Resolve | None = None,
        dns_timeout_s: float = 3.0,
    ) -> InboundTrust:
        """From the ``[inbound]`` section alone (no keys: only reporters, VERP and ENVID)."""
        return cls(
            verp_domain=cfg.verp_domain,
            verp_secret=cfg.verp_secret,
            keys=keys,
            reporters=cfg.fbl_reporters,
            resolve=resolve,
            dns_timeout_s=dns_timeout_s,
            accepted=lambda: verp_keys.accepted(cfg),
        )

    async def assess_all(self, items: Sequence[_Item]) -> list[Assessment]:
        """:meth:`assess` for each item, concurrently (DNS waits overlap)."""
        return list(await asyncio.gather(*(self._assess_safely(i) for i in items)))

    async def _assess_safely(self, item: _Item) -> Assessment:
        try:
            return await self.assess(item)
        except Exception as exc:  # a bug here must not stall the batch: the report proves nothing
            log.error("inbound trust assessment failed", extra={"error": repr(exc)[:300]})
            return Assessment()

    async def assess(self, item: _Item) -> Assessment:
        """What ``item`` proves. DNS failures count as not proven (and are logged)."""
        ev = item.evidence
        kind = item.report.kind
        own = self.own_proofs(ev.original)
        job = None
        if ev.envid and kind in (BounceKind.DSN, BounceKind.NONSTANDARD):
            value, domain = ev.envid, self.verp_domain
            job = self._signed_job(lambda secret: envid_job(value, domain=domain, secret=secret))
        reporter = None
        if kind is BounceKind.ARF and self.reporters:
            reporter = await self._reporter(item, _Lookups(MAX_DNS_LOOKUPS))
        rp_job = None
        if reporter is not None and ev.return_path:
            rp_job = self._verp_job(ev.return_path)
        return Assessment(own=own, reporter=reporter, envid_job=job, return_path_job=rp_job)

    def own_proofs(self, signatures: Sequence[DkimEvidence]) -> tuple[OwnProof, ...]:
        """Signatures of a quoted original made with our keys, verified, signing a Message-ID."""
        if self.keys is None:
            return ()
        proofs: list[OwnProof] = []
        for ev in signatures[:MAX_CHECKS]:
            if ev.message_id is None or "message-id" not in ev.signed:
                continue
            for key in self.keys.own_keys(ev.domain, ev.selector):
                if key.algorithm != ev.algorithm:
                    continue
                try:
                    verify.check_key(key.record, ev.algorithm, ev.signature, ev.digest)
                except verify.SignatureFailure:
                    continue
                proofs.append(OwnProof(ev.message_id, key.tenant_id, ev.domain, ev.to))
                break
        return tuple(proofs)

    def _verp_job(self, address: str) -> int | None:
        start, end = address.find("<"), address.find(">")
        value = address[start + 1 : end] if 0 <= start < end else address
        try:
            return self._signed_job(
                lambda secret: verp.decode(value, domain=self.verp_domain, secret=secret)
            )
        except ComposeError:
            return None

    def _signed_job(self, decode: Callable[[bytes | str], int | None]) -> int | None:
        """The first job ``decode`` finds under a secret accepted now (the current one first)."""
        for secret in self.accepted():
            job = decode(secret)
            if job is not None:
                return job
        return None

    async def _reporter(self, item: _Item, lookups: _Lookups) -> str | None:
        """The domain of the configured reporter this report authenticates as, if any."""
        for rep in self.reporters:
            try:
                async with asyncio.timeout(self.dns_timeout_s * 2):
                    ev = item.evidence
                    if rep.require != "spf" and await self._dkim_passes(ev, rep, lookups):
                        return rep.domain
                    if rep.require != "dkim" and await self._spf_passes(item, rep, lookups):
                        return rep.domain
            except (DnsLookupError, TimeoutError) as exc:
                # Temporary: the report stays stored; it counts as unverified (an operator can
                # requeue it once DNS answers).
                metrics.INBOUND_TRUST_DNS_ERRORS.inc()
                log.warning(
                    "fbl reporter not authenticated: DNS failed",
                    extra={"reporter": rep.domain, "error": str(exc) or type(exc).__name__},
                )
        return None

    async def _dkim_passes(self, ev: Evidence, rep: FblReporter, lookups: _Lookups) -> bool:
        for sig in ev.outer[:MAX_CHECKS]:
            if not (sig.body_ok and "from" in sig.signed and aligned(sig.domain, rep.domain)):
                continue
            if rep.addresses and not set(sig.from_addresses) & set(rep.addresses):
                continue  # signed by the reporter's domain, but sent by one of its users
            if not (_DNS_NAME.match(sig.domain) and _DNS_NAME.match(sig.selector)):
                continue
            name = f"{sig.selector}._domainkey.{sig.domain}"
            if not lookups.take(name):
                return False
            for record in await self.resolve(name, "TXT"):
                try:
                    verify.check_key(record.encode(), sig.algorithm, sig.signature, sig.digest)
                except (verify.SignatureFailure, UnicodeError):
                    continue
                return True
        return False

    async def _spf_passes(self, item: _Item, rep: FblReporter, lookups: _Lookups) -> bool:
        sender = item.mail_from.strip().strip("<>")
        mail_domain = sender.rpartition("@")[2].lower().rstrip(".")
        if not (mail_domain and item.peer and aligned(mail_domain, rep.domain)):
            return False
        if rep.addresses and sender.lower() not in rep.addresses:
            return False
        if not (_DNS_NAME.match(mail_domain) and lookups.take(f"spf:{mail_domain}")):
            return False
        try:
            outcome = await check_ip(self.resolve, mail_domain, item.peer)
        except ValueError:  # not an IP address (a unix socket peer, "?")
            return False
        if outcome.result == "temperror":
            raise ComplianceDnsError(f"SPF of {mail_domain}: {outcome.detail}")
        return outcome.result == "pass"


class _Lookups:
    """The DNS lookups one report may still cause (:data:`MAX_DNS_LOOKUPS`); a name asked for
    again (by a second reporter) is free."""

    def __init__(self, limit: int) -> None:
        self.left = limit
        self.names: set[str] = set()

    def take(self, name: str) -> bool:
        """True when ``name`` may be looked up (and counts it)."""
        if name in self.names:
            return True
        if self.left <= 0:
            return False
        self.left -= 1
        self.names.add(name)
        return True


class _Item(Protocol):
    """The part of :class:`engine.inbound.matching.InboundItem` the assessment reads."""

    @property
    def report(self) -> _Report: ...
    @property
    def evidence(self) -> Evidence: ...
    @property
    def peer(self) -> str: ...
    @property
    def mail_from(self) -> str: ...


class _Report(Protocol):
    @property
    def kind(self) -> BounceKind: ...
