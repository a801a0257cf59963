"""`engine domains add|verify|list|remove`: the sending domains a tenant may send as.

``add`` prints the TXT record to publish on the first line of stdout (or ``verified`` when
``--verified``: the operator vouches, no DNS check); ``verify`` looks the record up through the
engine's DNS seam and exits 1 while it is missing.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from engine.commands.core import load_config, run_with_pool
from engine.errors import UsageError
from engine.resolver import system_resolver, with_txt_overrides
from engine.tenancy import domains


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the `domains` subcommands."""
    p = sub.add_parser("domains", parents=[common], help="tenants' sending domains")
    dsub = p.add_subparsers(dest="domains_command", metavar="ACTION", required=True)
    a = dsub.add_parser("add", parents=[common], help="register a sending domain of a tenant")
    a.add_argument("--tenant", required=True, metavar="T")
    a.add_argument("domain", metavar="DOMAIN")
    a.add_argument(
        "--verified", action="store_true", help="the operator vouches for it: no DNS check"
    )
    a.set_defaults(func=cmd_add)
    v = dsub.add_parser("verify", parents=[common], help="check a domain's TXT record now")
    v.add_argument("--tenant", required=True, metavar="T")
    v.add_argument("domain", metavar="DOMAIN")
    v.set_defaults(func=cmd_verify)
    ls = dsub.add_parser("list", parents=[common], help="sending domains and their state")
    ls.add_argument("--tenant", metavar="T")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
    r = dsub.add_parser("remove", parents=[common], help="unregister a sending domain")
    r.add_argument("--tenant", required=True, metavar="T")
    r.add_argument("domain", metavar="DOMAIN")
    r.set_defaults(func=cmd_remove)


def _proof(d: domains.Domain) -> str:
    return f'{d.record_name} TXT "{d.record_value}"'


def cmd_add(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    d = run_with_pool(
        cfg, lambda pool: domains.add(pool, args.tenant, args.domain, verified=args.verified)
    )
    if d.verified:
        sys.stdout.write(f"verified {d.domain} for {d.tenant_id}\n")
    else:
        sys.stdout.write(_proof(d) + "\n")
        sys.stdout.write(
            f"publish this record, then: engine domains verify --tenant {d.tenant_id} {d.domain}\n"
        )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    resolve = with_txt_overrides(system_resolver(cfg.dns.timeout_s), cfg.dns.txt_overrides)
    d = run_with_pool(cfg, lambda pool: domains.verify(pool, args.tenant, args.domain, resolve))
    sys.stdout.write(f"verified {d.domain} for {d.tenant_id} ({d.verified_by})\n")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    found = run_with_pool(cfg, lambda pool: domains.list_domains(pool, args.tenant))
    if args.json:
        sys.stdout.write(msgspec.json.encode({"domains": found}).decode() + "\n")
        return 0
    for d in found:
        state = f"verified ({d.verified_by})" if d.verified else f"pending: {_proof(d)}"
        sys.stdout.write(f"{d.tenant_id}\t{d.domain}\t{state}\n")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    if not run_with_pool(cfg, lambda pool: domains.remove(pool, args.tenant, args.domain)):
        raise UsageError(f"{args.domain} is not registered for tenant {args.tenant}")
    sys.stdout.write(f"removed {args.domain} from {args.tenant}\n")
    return 0
