"""``engine dkim keygen|sign|verify|check-dns|activate`` (DESIGN §8 CLI contract).

Thin wrappers over :mod:`engine.dkim`; errors are :class:`~engine.errors.EngineError` subclasses
that ``engine.cli`` turns into a one-line message and exit code 1 (runtime) or 2 (usage).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Any

from engine.errors import DkimError, DkimKeyError, UsageError

_ZONE_CHUNK = 250  # a TXT character-string holds at most 255 bytes (RFC 1035 §3.3)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``dkim`` subcommands."""
    p = sub.add_parser("dkim", parents=[common], help="DKIM keys, signing and checks")
    dsub = p.add_subparsers(dest="dkim_command", metavar="ACTION", required=True)

    k = dsub.add_parser("keygen", parents=[common], help="generate a key, print its DNS record")
    _name_args(k)
    k.add_argument("--type", choices=("rsa", "ed25519"), default="rsa")
    k.add_argument("--bits", type=int, default=2048, help="RSA key size (1024-4096)")
    k.add_argument("--out", metavar="FILE", help="private key file (default D.S.pem; mode 0600)")
    k.add_argument("--tenant", help="also store the key, encrypted, in the oltp tier (pending)")
    k.set_defaults(func=cmd_keygen)

    s = dsub.add_parser("sign", parents=[common], help="sign a message, print it to stdout")
    _name_args(s)
    s.add_argument("--key", required=True, metavar="FILE", help="PEM private key")
    s.add_argument("message", metavar="MESSAGE_FILE", help="RFC 5322 message, - for stdin")
    s.set_defaults(func=cmd_sign)

    v = dsub.add_parser("verify", parents=[common], help="verify every DKIM-Signature of FILE")
    v.add_argument("message", metavar="FILE", help="RFC 5322 message, - for stdin")
    v.add_argument(
        "--txt-record", metavar="FILE", help="the key's TXT record value (offline; else DNS)"
    )
    v.set_defaults(func=cmd_verify)

    c = dsub.add_parser("check-dns", parents=[common], help="does DNS publish this key?")
    _name_args(c)
    c.add_argument("--key", required=True, metavar="FILE", help="PEM private key")
    c.add_argument("--timeout", type=float, default=5.0, help="DNS timeout in seconds")
    c.set_defaults(func=cmd_check_dns)

    a = dsub.add_parser(
        "activate", parents=[common], help="activate a stored pending key once DNS publishes it"
    )
    _name_args(a)
    a.add_argument("--tenant", required=True)
    a.add_argument("--timeout", type=float, default=5.0, help="DNS timeout in seconds")
    a.set_defaults(func=cmd_activate)


def _name_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--domain", required=True, metavar="D")
    p.add_argument("--selector", required=True, metavar="S")


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _read(path: str, what: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise DkimError(f"cannot read {what} {path}: {exc.strerror}") from None


def _write_private(path: Path, pem: bytes) -> None:
    """Create ``path`` with mode 0600 from the start (no window where it is world-readable)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise DkimKeyError(
            f"{path} already exists; refusing to overwrite a private key",
            hint="choose another --out, or delete the old file first",
        ) from None
    except OSError as exc:
        raise DkimKeyError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def zone_line(name: str, value: str) -> str:
    """A zone-file line for the record, split into <=250-byte strings as DNS requires."""
    chunks = [value[i : i + _ZONE_CHUNK] for i in range(0, len(value), _ZONE_CHUNK)]
    return f"{name}. 3600 IN TXT ( {' '.join(f'{chr(34)}{c}{chr(34)}' for c in chunks)} )"


def cmd_keygen(args: argparse.Namespace) -> int:
    from engine.dkim.keys import generate_key
    from engine.dkim.sign import load_signing_key

    pem, txt = generate_key(args.type, args.bits)
    # Validates and normalises the names (IDNA, lower case) before anything is written.
    key = load_signing_key(pem, domain=args.domain, selector=args.selector)
    if args.tenant:
        asyncio.run(_store_pending(args, pem))
        _out(f"stored: tenant {args.tenant}, {key.dns_name}, state pending")
    if args.out or not args.tenant:
        out = Path(args.out or f"{key.domain}.{key.selector}.pem")
        _write_private(out, pem)
        _out(f"private key: {out} (mode 0600)")
    _out(f"DNS TXT name:  {key.dns_name}")
    _out(f"DNS TXT value: {txt}")
    _out(f"zone file:     {zone_line(key.dns_name, txt)}")
    return 0


async def _store_pending(args: argparse.Namespace, pem: bytes) -> None:
    from engine import config as config_mod
    from engine.dkim import store
    from engine.dkim.crypto_box import KeyBox
    from engine.store.pool import connect_one

    cfg = config_mod.load(args.config)
    box = KeyBox.from_config(cfg.dkim)
    conn = await connect_one(cfg.database.dsn)
    try:
        await store.insert_key(
            conn,
            box,
            tenant_id=args.tenant,
            domain=args.domain,
            selector=args.selector,
            private_pem=pem,
        )
    finally:
        await conn.close()


def cmd_sign(args: argparse.Namespace) -> int:
    from engine.dkim.sign import load_signing_key, sign_message

    key = load_signing_key(_read(args.key, "key file"), domain=args.domain, selector=args.selector)
    signed = sign_message(_read(args.message, "message"), [key])
    sys.stdout.buffer.write(signed)
    sys.stdout.buffer.flush()
    return 0


def _dns_lookup(name: str) -> bytes | None:
    from engine.resolver import txt_bytes

    records = [r for r in asyncio.run(txt_bytes(name, timeout=5.0)) if b"p=" in r]
    return records[0] if len(records) == 1 else None


def cmd_verify(args: argparse.Namespace) -> int:
    from engine.dkim.verify import verify_message

    message = _read(args.message, "message")
    if args.txt_record:
        record = _read(args.txt_record, "TXT record file").strip()
        if b'"' in record:
            # A zone-file style value ("v=DKIM1; k=rsa; " "p=..."): join the quoted strings.
            record = b"".join(re.findall(rb'"([^"]*)"', record))
        results = verify_message(message, lambda name: record)
    else:
        results = verify_message(message, _dns_lookup)
    if not results:
        raise DkimError(f"{args.message} has no DKIM-Signature")
    for r in results:
        verdict = "pass" if r.ok else "FAIL"
        _out(f"{verdict} d={r.domain} s={r.selector} a={r.algorithm}: {r.detail}")
    failed = sum(not r.ok for r in results)
    if failed:
        sys.stderr.write(f"engine: {failed} of {len(results)} DKIM signatures failed\n")
        return 1
    return 0


def cmd_check_dns(args: argparse.Namespace) -> int:
    from engine.dkim.dnscheck import check_key
    from engine.dkim.sign import load_signing_key

    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    key = load_signing_key(_read(args.key, "key file"), domain=args.domain, selector=args.selector)
    check = asyncio.run(check_key(key, timeout=args.timeout))
    _out(f"{check.status}: {check.name}: {check.detail}")
    if not check.ok:
        _out(f"expected: {check.expected}")
        if check.published is not None:
            _out(f"published: {check.published}")
        return 1
    return 0


def cmd_activate(args: argparse.Namespace) -> int:
    from engine import config as config_mod
    from engine.dkim.rotation import promote
    from engine.store.pool import connect_one

    cfg = config_mod.load(args.config)

    async def run() -> int:
        conn = await connect_one(cfg.database.dsn)
        try:
            check, retired = await promote(
                conn, args.tenant, args.domain, args.selector, timeout=args.timeout
            )
        finally:
            await conn.close()
        _out(f"{check.status}: {check.name}: {check.detail}")
        if not check.ok:
            _out(f"expected: {check.expected}")
            _out("key stays pending; publish the record and run activate again")
            return 1
        _out(f"active: {check.name}")
        for selector in retired:
            _out(f"retired: {selector}._domainkey.{args.domain} (keep its TXT record ~7 days)")
        return 0

    return asyncio.run(run())
