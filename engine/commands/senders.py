"""`engine senders check DOMAIN`: SPF, DKIM, DMARC and reverse DNS of a sender domain."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from engine import audit
from engine.commands.core import load_config, run_async
from engine.compliance.check import ComplianceReport, check_domain
from engine.compliance.service import check_and_apply, dkim_expectations
from engine.compliance.store import StoredVerdict, tenants_with_domain
from engine.config import Config
from engine.errors import UsageError
from engine.resolver import system_resolver


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the `senders` subcommands."""
    p = sub.add_parser("senders", parents=[common], help="sender domains: compliance checks")
    ssub = p.add_subparsers(dest="senders_command", metavar="ACTION", required=True)
    c = ssub.add_parser(
        "check",
        parents=[common],
        help="check SPF, DKIM, DMARC and reverse DNS of a domain; store and apply the verdict",
    )
    c.add_argument("domain", metavar="DOMAIN")
    c.add_argument(
        "--tenant", metavar="ID", help="only this tenant (default: every tenant using it)"
    )
    c.add_argument("--dry-run", action="store_true", help="check only: store and enforce nothing")
    c.add_argument("--json", action="store_true", help="one JSON object per tenant checked")
    c.set_defaults(func=cmd_check)


def _render(report: ComplianceReport, tenant: str | None, action: str | None) -> str:
    head = f"{report.domain}" + (f" (tenant {tenant})" if tenant else "")
    head += f": {report.status.upper()}" + (f", action {action}" if action else "")
    lines = [head]
    lines += [f"  {c.check:<6}{c.status:<6}{c.detail}" for c in report.checks]
    return "\n".join(lines)


async def _run(
    cfg: Config, args: argparse.Namespace
) -> list[tuple[str | None, StoredVerdict | ComplianceReport]]:
    from engine.store import pool as pool_mod

    domain = args.domain.strip().lower().rstrip(".")
    if "." not in domain or "@" in domain:
        raise UsageError(f"{args.domain!r} is not a domain name")
    pool = await pool_mod.connect(cfg.database, min_size=1)
    try:
        tenants = [args.tenant] if args.tenant else await tenants_with_domain(pool, domain)
        resolve = system_resolver(cfg.compliance.dns_timeout_s)
        out: list[tuple[str | None, StoredVerdict | ComplianceReport]] = []
        if args.dry_run or not tenants:
            for tenant in tenants or [None]:
                report = await check_domain(
                    domain,
                    resolve=resolve,
                    relay_ips=cfg.compliance.relay_ips,
                    dkim_keys=await dkim_expectations(pool, cfg, tenant, domain),
                    envelope_domain=cfg.inbound.verp_domain,
                )
                out.append((tenant, report))
            return out
        for tenant in tenants:
            verdict = await check_and_apply(pool, cfg, tenant, domain, resolve=resolve)
            await audit.record(
                pool,
                audit.cli_actor(),
                "sender.check",
                domain,
                {"status": verdict.status, "action": verdict.action, "reasons": verdict.reasons},
                tenant_id=tenant,
            )
            out.append((tenant, verdict))
        return out
    finally:
        await pool.close()


def cmd_check(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    results = run_async(lambda: _run(cfg, args))
    failed = False
    for tenant, item in results:
        report = item.report if isinstance(item, StoredVerdict) else item
        action = item.action if isinstance(item, StoredVerdict) else None
        failed |= report.status in ("fail", "error")
        if args.json:
            doc = {"tenant_id": tenant, "action": action, "reasons": report.reasons,
                   **msgspec.to_builtins(report)}  # fmt: skip
            sys.stdout.write(msgspec.json.encode(doc).decode() + "\n")
        else:
            sys.stdout.write(_render(report, tenant, action) + "\n")
    return 1 if failed else 0
