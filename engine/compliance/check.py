"""The sender compliance check: SPF, DKIM, DMARC and reverse DNS of one sender domain.

``check_domain`` runs the four checks against the injected resolver and returns a
:class:`ComplianceReport`; it stores nothing and enforces nothing (see
:mod:`engine.compliance.service`). Each check is ``pass`` | ``warn`` | ``fail`` | ``error``:
``error`` means DNS failed and says nothing about the sender, so it never counts as a failure
(enforcement keeps the previous verdict) — a resolver outage must not block every tenant.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Literal

import msgspec

from engine import psl
from engine.compliance import dmarc, spf
from engine.dkim.dnscheck import check_dns
from engine.errors import DkimDnsError, DnsLookupError
from engine.resolver import CachingResolver, Resolve, reverse_name

Status = Literal["pass", "warn", "fail", "error"]
CheckName = Literal["spf", "dkim", "dmarc", "ptr"]


class CheckResult(msgspec.Struct, frozen=True, kw_only=True):
    """One record's verdict, with a sentence an operator can act on."""

    check: CheckName
    status: Status
    detail: str
    data: dict[str, str] = {}


class DkimExpectation(msgspec.Struct, frozen=True, kw_only=True):
    """An active key of the domain: where its TXT record lives and what it must publish."""

    domain: str  # d= (the sender domain or a parent)
    selector: str
    public_txt: str


class ComplianceReport(msgspec.Struct, frozen=True, kw_only=True):
    """Every check of one domain; ``status`` is the worst of pass < warn < error < fail."""

    domain: str
    status: Status
    checks: list[CheckResult]
    checked_at: dt.datetime

    @property
    def reasons(self) -> list[str]:
        """The failures, one line each (what is shown on a paused or throttled sender)."""
        return [f"{c.check}: {c.detail}" for c in self.checks if c.status == "fail"]


_RANK: dict[Status, int] = {"pass": 0, "warn": 1, "error": 2, "fail": 3}


def worst(statuses: Sequence[Status]) -> Status:
    """The overall status: fail beats error beats warn beats pass."""
    return max(statuses, key=_RANK.__getitem__, default="pass")


async def check_spf(resolve: Resolve, domain: str, relay_ips: Sequence[str]) -> CheckResult:
    """Pass when the domain's SPF gives ``pass`` for every relay IP."""
    if not relay_ips:
        return CheckResult(
            check="spf", status="warn", detail="no [compliance] relay_ips configured; not checked"
        )
    outcomes = [await spf.check_ip(resolve, domain, ip) for ip in relay_ips]
    data: dict[str, str] = {o.ip: o.result for o in outcomes}
    bad = [o for o in outcomes if o.result != "pass"]
    if not bad:
        return CheckResult(
            check="spf", status="pass", detail="SPF authorises every relay IP", data=data
        )
    if all(o.result == "temperror" for o in bad):
        return CheckResult(check="spf", status="error", detail=bad[0].detail, data=data)
    lines = "; ".join(f"{o.ip} -> {o.result} ({o.detail})" for o in bad)
    return CheckResult(
        check="spf",
        status="fail",
        detail=f"SPF of {domain} does not authorise the relay IPs: {lines}",
        data=data,
    )


async def check_dkim(resolve: Resolve, domain: str, keys: Sequence[DkimExpectation]) -> CheckResult:
    """Pass when every active key's TXT record publishes that key (engine/dkim/dnscheck)."""
    if not keys:
        return CheckResult(
            check="dkim",
            status="fail",
            detail=f"no active DKIM key for {domain} (engine dkim keygen, publish, activate)",
        )

    async def lookup(name: str) -> list[bytes]:
        try:
            return [t.encode() for t in await resolve(name, "TXT")]
        except DnsLookupError as exc:
            raise DkimDnsError(exc.message) from None

    results = [await check_dns(k.domain, k.selector, k.public_txt, lookup=lookup) for k in keys]
    data: dict[str, str] = {r.name: r.status for r in results}
    bad = [r for r in results if not r.ok]
    if not bad:
        return CheckResult(check="dkim", status="pass", detail="DKIM record matches", data=data)
    status: Status = "error" if all(r.status == "error" for r in bad) else "fail"
    detail = "; ".join(f"{r.name}: {r.status} ({r.detail})" for r in bad)
    return CheckResult(check="dkim", status=status, detail=detail, data=data)


async def check_dmarc(
    resolve: Resolve, domain: str, keys: Sequence[DkimExpectation], envelope_domain: str | None
) -> CheckResult:
    """Pass when a DMARC record with a policy exists (own or organizational) and DKIM aligns."""
    names = [f"_dmarc.{domain}"]
    org = dmarc.organizational_domain(domain)
    if org != psl.normalize(domain):
        names.append(f"_dmarc.{org}")
    try:
        for name in names:
            records = [t for t in await resolve(name, "TXT") if t.startswith("v=DMARC1")]
            if records:
                break
        else:
            return CheckResult(
                check="dmarc",
                status="fail",
                detail=f"no DMARC record at _dmarc.{domain} (publish at least v=DMARC1; p=none)",
            )
    except DnsLookupError as exc:
        return CheckResult(check="dmarc", status="error", detail=exc.message)
    if len(records) > 1:
        return CheckResult(
            check="dmarc", status="fail", detail=f"{len(records)} DMARC records at {name}"
        )
    try:
        record = dmarc.parse_record(records[0])
    except dmarc.DmarcParseError as exc:
        return CheckResult(check="dmarc", status="fail", detail=f"{name}: {exc}")
    dkim_aligned = any(dmarc.aligned(record.adkim, domain, k.domain) for k in keys)
    spf_aligned = envelope_domain is not None and dmarc.aligned(
        record.aspf, domain, envelope_domain
    )
    data = {
        "record": name,
        "policy": record.policy,
        "adkim": record.adkim,
        "aspf": record.aspf,
        "dkim_aligned": str(dkim_aligned).lower(),
        "spf_aligned": str(spf_aligned).lower(),
    }
    if not (dkim_aligned or spf_aligned):
        return CheckResult(
            check="dmarc",
            status="fail",
            detail=f"p={record.policy} but neither DKIM d= nor the envelope domain aligns with "
            f"{domain} (adkim={record.adkim}, aspf={record.aspf})",
            data=data,
        )
    if record.policy == "none":
        return CheckResult(
            check="dmarc",
            status="warn",
            detail="p=none: accepted by Gmail/Yahoo, but monitoring only",
            data=data,
        )
    return CheckResult(check="dmarc", status="pass", detail=f"p={record.policy}", data=data)


async def check_ptr(resolve: Resolve, relay_ips: Sequence[str]) -> CheckResult:
    """Pass when every relay IP has a PTR name that resolves back to it (FCrDNS)."""
    if not relay_ips:
        return CheckResult(
            check="ptr", status="warn", detail="no [compliance] relay_ips configured; not checked"
        )
    problems: list[str] = []
    errors = 0
    data: dict[str, str] = {}
    for ip in relay_ips:
        rdtype = "AAAA" if ":" in ip else "A"
        try:
            names = await resolve(reverse_name(ip), "PTR")
            confirmed = [n for n in names if ip in await resolve(n, rdtype)]
        except DnsLookupError as exc:
            errors += 1
            problems.append(f"{ip}: {exc.message}")
            continue
        data[ip] = ",".join(names) or "-"
        if not names:
            problems.append(f"{ip} has no PTR record")
        elif not confirmed:
            problems.append(f"{ip} PTR {', '.join(names)} does not resolve back to {ip}")
    if not problems:
        return CheckResult(
            check="ptr", status="pass", detail="reverse DNS forward-confirms", data=data
        )
    status: Status = "error" if errors == len(problems) else "fail"
    return CheckResult(check="ptr", status=status, detail="; ".join(problems), data=data)


async def check_domain(
    domain: str,
    *,
    resolve: Resolve,
    relay_ips: Sequence[str],
    dkim_keys: Sequence[DkimExpectation],
    envelope_domain: str | None = None,
    now: dt.datetime | None = None,
) -> ComplianceReport:
    """Run the four checks for ``domain``; DNS answers are shared between them."""
    domain = domain.strip().lower().rstrip(".")
    cached = CachingResolver(resolve)
    checks = [
        await check_spf(cached, domain, relay_ips),
        await check_dkim(cached, domain, dkim_keys),
        await check_dmarc(cached, domain, dkim_keys, envelope_domain),
        await check_ptr(cached, relay_ips),
    ]
    return ComplianceReport(
        domain=domain,
        status=worst([c.status for c in checks]),
        checks=checks,
        checked_at=now or dt.datetime.now(dt.UTC),
    )
