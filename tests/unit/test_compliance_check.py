"""Sender compliance check against a fake resolver: each record passes and fails as receivers
would judge it (SPF include chains and RFC 7208 limits, DKIM, DMARC, reverse DNS), plus the
Gmail/Yahoo complaint-rate rule."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from engine.compliance import dmarc
from engine.compliance.check import ComplianceReport, DkimExpectation, check_domain
from engine.compliance.spf import check_ip
from engine.config import ShapingConfig
from engine.dkim.keys import generate_key
from engine.errors import ComplianceDnsError
from engine.resolver import reverse_name

RELAY = "203.0.113.5"
RELAY6 = "2001:db8::25"
_, DKIM_TXT = generate_key("ed25519-sha256")
_, OTHER_TXT = generate_key("ed25519-sha256")

Zone = Mapping[tuple[str, str], list[str]]


class FakeDns:
    """A resolver over a dict; names listed in ``broken`` fail like a SERVFAIL."""

    def __init__(self, zone: Zone, broken: frozenset[str] = frozenset()) -> None:
        self.zone = zone
        self.broken = broken
        self.asked: list[tuple[str, str]] = []

    async def __call__(self, name: str, rdtype: str) -> list[str]:
        self.asked.append((name, rdtype))
        if name in self.broken:
            raise ComplianceDnsError(f"DNS lookup of {name} {rdtype} failed: SERVFAIL")
        return list(self.zone.get((name, rdtype), []))


def good_zone() -> dict[tuple[str, str], list[str]]:
    """example.com with SPF via an include chain, DKIM, DMARC and FCrDNS for the relay."""
    return {
        ("example.com", "TXT"): ["google-site-verification=x", "v=spf1 include:_spf.esp.test -all"],
        ("_spf.esp.test", "TXT"): ["v=spf1 include:_netblocks.esp.test ~all"],
        ("_netblocks.esp.test", "TXT"): [f"v=spf1 ip4:203.0.113.0/24 ip6:{RELAY6}/128 -all"],
        ("s1._domainkey.example.com", "TXT"): [DKIM_TXT],
        ("_dmarc.example.com", "TXT"): ["v=DMARC1; p=quarantine; rua=mailto:d@example.com"],
        (reverse_name(RELAY), "PTR"): ["mta1.esp.test"],
        ("mta1.esp.test", "A"): [RELAY],
    }


KEYS = [DkimExpectation(domain="example.com", selector="s1", public_txt=DKIM_TXT)]


async def run(
    zone: Zone,
    *,
    ips: list[str] | None = None,
    keys: list[DkimExpectation] = KEYS,
    broken: frozenset[str] = frozenset(),
) -> ComplianceReport:
    return await check_domain(
        "Example.COM.",
        resolve=FakeDns(zone, broken),
        relay_ips=[RELAY] if ips is None else ips,
        dkim_keys=keys,
        envelope_domain="bounces.esp.test",
    )


def by_check(report: ComplianceReport) -> dict[str, str]:
    return {c.check: c.status for c in report.checks}


async def test_everything_published_passes() -> None:
    report = await run(good_zone())
    assert report.domain == "example.com"
    assert by_check(report) == {"spf": "pass", "dkim": "pass", "dmarc": "pass", "ptr": "pass"}
    assert report.status == "pass" and report.reasons == []


# -- SPF --------------------------------------------------------------------------------------


async def test_spf_include_chain_without_the_relay_ip_fails() -> None:
    zone = good_zone()
    zone[("_netblocks.esp.test", "TXT")] = ["v=spf1 ip4:198.51.100.0/24 -all"]
    report = await run(zone)
    assert by_check(report)["spf"] == "fail" and report.status == "fail"
    assert RELAY in report.reasons[0] and "fail" in report.reasons[0]


async def test_spf_softfail_all_is_not_a_pass() -> None:
    zone = good_zone()
    zone[("example.com", "TXT")] = ["v=spf1 ip4:198.51.100.7 ~all"]
    outcome = await check_ip(FakeDns(zone), "example.com", RELAY)
    assert outcome.result == "softfail"
    assert by_check(await run(zone))["spf"] == "fail"


async def test_spf_a_mx_redirect_and_ipv6() -> None:
    zone = good_zone()
    zone[("example.com", "TXT")] = ["v=spf1 a mx:mail.example.com/24 redirect=_spf.example.com"]
    zone[("example.com", "A")] = ["192.0.2.1"]
    zone[("mail.example.com", "MX")] = ["mx1.example.com"]
    zone[("mx1.example.com", "A")] = ["203.0.113.200"]  # same /24 as the relay
    zone[("_spf.example.com", "TXT")] = [f"v=spf1 ip6:{RELAY6} -all"]
    dns = FakeDns(zone)
    assert (await check_ip(dns, "example.com", RELAY)).result == "pass"  # via mx /24
    assert (await check_ip(dns, "example.com", RELAY6)).result == "pass"  # via redirect
    assert (await check_ip(dns, "example.com", "192.0.2.1")).result == "pass"  # via a
    assert (await check_ip(dns, "example.com", "192.0.2.2")).result == "fail"


async def test_spf_more_than_ten_lookups_is_permerror() -> None:
    zone = good_zone()
    chain = [f"inc{i}.test" for i in range(11)]
    zone[("example.com", "TXT")] = [f"v=spf1 include:{chain[0]} -all"]
    for i, name in enumerate(chain):
        nxt = f"include:{chain[i + 1]} " if i + 1 < len(chain) else f"ip4:{RELAY} "
        zone[(name, "TXT")] = [f"v=spf1 {nxt}-all"]
    outcome = await check_ip(FakeDns(zone), "example.com", RELAY)
    assert outcome.result == "permerror" and "more than 10" in outcome.detail
    # Ten lookups exactly is still fine.
    zone[(chain[9], "TXT")] = [f"v=spf1 ip4:{RELAY} -all"]
    assert (await check_ip(FakeDns(zone), "example.com", RELAY)).result == "pass"


async def test_spf_include_loop_stops_at_the_limit() -> None:
    zone = good_zone()
    zone[("example.com", "TXT")] = ["v=spf1 include:loop.test -all"]
    zone[("loop.test", "TXT")] = ["v=spf1 include:example.com -all"]
    outcome = await check_ip(FakeDns(zone), "example.com", RELAY)
    assert outcome.result == "permerror"


async def test_spf_void_lookups_and_missing_include_are_permerror() -> None:
    zone = good_zone()
    zone[("example.com", "TXT")] = ["v=spf1 a:n1.test a:n2.test a:n3.test ip4:203.0.113.5 -all"]
    assert (await check_ip(FakeDns(zone), "example.com", RELAY)).result == "permerror"
    zone[("example.com", "TXT")] = ["v=spf1 include:nothing.test -all"]
    assert (await check_ip(FakeDns(zone), "example.com", RELAY)).result == "permerror"


async def test_spf_two_records_or_none() -> None:
    zone = good_zone()
    zone[("example.com", "TXT")] = ["v=spf1 -all", "v=spf1 +all"]
    assert (await check_ip(FakeDns(zone), "example.com", RELAY)).result == "permerror"
    del zone[("example.com", "TXT")]
    report = await run(zone)
    assert by_check(report)["spf"] == "fail" and "none" in report.reasons[0]


async def test_spf_exists_with_macro() -> None:
    zone = good_zone()
    zone[("example.com", "TXT")] = ["v=spf1 exists:%{i}._spf.%{d} -all"]
    zone[(f"{RELAY}._spf.example.com", "A")] = ["127.0.0.2"]
    assert (await check_ip(FakeDns(zone), "example.com", RELAY)).result == "pass"
    assert (await check_ip(FakeDns(zone), "example.com", "203.0.113.6")).result == "fail"


async def test_spf_dns_failure_is_error_not_fail() -> None:
    report = await run(good_zone(), broken=frozenset({"_spf.esp.test"}))
    assert by_check(report)["spf"] == "error"
    assert report.status == "error"


# -- DKIM -------------------------------------------------------------------------------------


async def test_dkim_record_of_another_key_fails() -> None:
    zone = good_zone()
    zone[("s1._domainkey.example.com", "TXT")] = [OTHER_TXT]
    report = await run(zone)
    assert by_check(report)["dkim"] == "fail"
    assert "different public key" in " ".join(report.reasons)


async def test_dkim_missing_record_or_no_key_fails() -> None:
    zone = good_zone()
    del zone[("s1._domainkey.example.com", "TXT")]
    assert by_check(await run(zone))["dkim"] == "fail"
    report = await run(good_zone(), keys=[])
    assert by_check(report)["dkim"] == "fail" and "no active DKIM key" in report.reasons[0]


# -- DMARC ------------------------------------------------------------------------------------


async def test_missing_dmarc_fails() -> None:
    zone = good_zone()
    del zone[("_dmarc.example.com", "TXT")]
    report = await run(zone)
    assert by_check(report)["dmarc"] == "fail"
    assert "no DMARC record" in " ".join(report.reasons)


async def test_dmarc_of_the_organizational_domain_is_used() -> None:
    zone = good_zone()
    zone[("_dmarc.example.com", "TXT")] = ["v=DMARC1; p=reject"]
    report = await check_domain(
        "news.example.com",
        resolve=FakeDns(zone),
        relay_ips=[],
        dkim_keys=KEYS,  # d=example.com signs news.example.com: relaxed alignment
    )
    dm = next(c for c in report.checks if c.check == "dmarc")
    assert dm.status == "pass" and dm.data["dkim_aligned"] == "true"
    assert dm.data["spf_aligned"] == "false"


async def test_dmarc_strict_alignment_and_p_none() -> None:
    zone = good_zone()
    zone[("_dmarc.example.com", "TXT")] = ["v=DMARC1; p=none; adkim=s"]
    report = await check_domain(
        "news.example.com", resolve=FakeDns(zone), relay_ips=[], dkim_keys=KEYS
    )
    dm = next(c for c in report.checks if c.check == "dmarc")
    assert dm.status == "fail" and "neither DKIM" in dm.detail
    zone[("_dmarc.example.com", "TXT")] = ["v=DMARC1; p=none"]
    assert by_check(await run(zone))["dmarc"] == "warn"


def test_dmarc_parse_errors() -> None:
    for bad in ("v=DMARC1", "v=DMARC1; p=maybe", "p=reject", "v=DMARC1; p=reject; adkim=x"):
        with pytest.raises(dmarc.DmarcParseError):
            dmarc.parse_record(bad)
    rec = dmarc.parse_record("v=DMARC1; p=reject; sp=none; pct=50; aspf=s")
    assert (rec.policy, rec.subdomain_policy, rec.pct, rec.aspf) == ("reject", "none", 50, "s")
    assert dmarc.organizational_domain("a.b.example.co.uk") == "example.co.uk"


# -- reverse DNS ------------------------------------------------------------------------------


async def test_ptr_that_does_not_resolve_back_fails() -> None:
    zone = good_zone()
    zone[("mta1.esp.test", "A")] = ["198.51.100.9"]
    report = await run(zone)
    assert by_check(report)["ptr"] == "fail"
    assert "does not resolve back" in " ".join(report.reasons)


async def test_missing_ptr_fails_and_ipv6_ptr_passes() -> None:
    zone = good_zone()
    del zone[(reverse_name(RELAY), "PTR")]
    assert by_check(await run(zone))["ptr"] == "fail"
    zone[(reverse_name(RELAY6), "PTR")] = ["mta6.esp.test"]
    zone[("mta6.esp.test", "AAAA")] = [RELAY6]
    report = await run(zone, ips=[RELAY6])
    assert by_check(report)["ptr"] == "pass" and by_check(report)["spf"] == "pass"


async def test_no_relay_ips_configured_is_a_warning() -> None:
    report = await run(good_zone(), ips=[])
    assert by_check(report)["spf"] == "warn" and by_check(report)["ptr"] == "warn"
    assert report.status == "warn"


async def test_each_name_is_asked_once() -> None:
    dns = FakeDns(good_zone())
    await check_domain("example.com", resolve=dns, relay_ips=[RELAY, "203.0.113.6"], dkim_keys=KEYS)
    assert len(dns.asked) == len(set(dns.asked))


# -- bulk rules -------------------------------------------------------------------------------


def test_complaint_rate_rule_is_shapings_auto_pause() -> None:
    # Gmail/Yahoo: spam-complaint rate under 0.3%; shaping auto-pauses a sender above it.
    assert ShapingConfig().complaint_pause_rate == 0.003
