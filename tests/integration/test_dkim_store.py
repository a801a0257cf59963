"""DKIM keys in PostgreSQL: encrypted at rest, rotation by selector without a gap, tenant RLS."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import asyncpg
import pytest

from engine.cli import main
from engine.dkim import dnscheck, store
from engine.dkim.crypto_box import KeyBox, generate_master_key
from engine.dkim.dnscheck import TxtLookup
from engine.dkim.keys import KeyRing, generate_key
from engine.dkim.rotation import promote
from engine.dkim.sign import sign_message
from engine.dkim.verify import verify_message
from engine.errors import DkimCryptoError, DkimKeyError, DkimKeyMissingError

MESSAGE = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nbody\r\n"


@pytest.fixture
async def conn(clean_db: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(clean_db)
    yield c
    await c.close()


@pytest.fixture
def box() -> KeyBox:
    return KeyBox(os.urandom(32))


def _dns(records: dict[str, str]) -> TxtLookup:
    async def lookup(name: str) -> Sequence[bytes]:
        return [records[name].encode()] if name in records else []

    return lookup


async def test_private_key_is_stored_encrypted(conn: asyncpg.Connection, box: KeyBox) -> None:
    pem, txt = generate_key("ed25519")
    rec = await store.insert_key(
        conn, box, tenant_id="t1", domain="Example.COM", selector="S1", private_pem=pem
    )
    assert (rec.domain, rec.selector, rec.state, rec.public_txt) == (
        "example.com",
        "s1",
        "pending",
        txt,
    )
    raw = await conn.fetchval("SELECT private_key_enc FROM oltp.dkim_keys")
    assert b"PRIVATE KEY" not in raw and pem[40:80] not in raw
    assert rec.load(box).public_txt == txt
    with pytest.raises(DkimCryptoError):
        rec.load(KeyBox(os.urandom(32)))
    with pytest.raises(DkimKeyError, match="rotate with a new selector"):
        await store.insert_key(
            conn, box, tenant_id="t1", domain="example.com", selector="s1", private_pem=pem
        )


async def test_rotation_without_a_gap(conn: asyncpg.Connection, box: KeyBox) -> None:
    ring = KeyRing(required=True)
    first_pem, first_txt = generate_key("rsa", 1024)
    await store.insert_key(
        conn, box, tenant_id="t1", domain="example.com", selector="s1", private_pem=first_pem
    )
    # Not published yet: the key stays pending, nothing signs.
    check, retired = await promote(conn, "t1", "example.com", "s1", lookup=_dns({}))
    assert check.status == "missing" and retired == []
    ring.replace_stored(await store.fetch_active(conn), box)
    with pytest.raises(DkimKeyMissingError):
        ring.keys_for("example.com", tenant_id="t1")

    dns = {"s1._domainkey.example.com": first_txt}
    check, retired = await promote(conn, "t1", "example.com", "s1", lookup=_dns(dns))
    assert check.ok and retired == []
    ring.replace_stored(await store.fetch_active(conn), box)
    assert [k.selector for k in ring.keys_for("example.com", tenant_id="t1")] == ["s1"]

    # Rotate: s2 is pending while its record is wrong; s1 keeps signing all along.
    second_pem, second_txt = generate_key("rsa", 1024)
    await store.insert_key(
        conn, box, tenant_id="t1", domain="example.com", selector="s2", private_pem=second_pem
    )
    dns["s2._domainkey.example.com"] = first_txt  # operator pasted the old record
    check, retired = await promote(conn, "t1", "example.com", "s2", lookup=_dns(dns))
    assert check.status == "mismatch" and retired == []
    ring.replace_stored(await store.fetch_active(conn), box)
    assert [k.selector for k in ring.keys_for("example.com", tenant_id="t1")] == ["s1"]

    dns["s2._domainkey.example.com"] = second_txt
    check, retired = await promote(conn, "t1", "example.com", "s2", lookup=_dns(dns))
    assert check.ok and retired == ["s1"]
    rows = await conn.fetch("SELECT selector, state FROM oltp.dkim_keys")
    states = {r["selector"]: r["state"] for r in rows}
    assert states == {"s1": "retired", "s2": "active"}
    ring.replace_stored(await store.fetch_active(conn), box)
    (k,) = ring.keys_for("example.com", tenant_id="t1")
    assert k.selector == "s2"
    signed = sign_message(MESSAGE, [k])
    assert [r.ok for r in verify_message(signed, lambda n: dns[n].encode())] == [True]

    with pytest.raises(DkimKeyError, match="retired"):
        await promote(conn, "t1", "example.com", "s1", lookup=_dns(dns))
    with pytest.raises(DkimKeyMissingError):
        await promote(conn, "t1", "example.com", "nope", lookup=_dns(dns))
    assert await store.retire(conn, "t1", "example.com", "s2") is True
    assert await store.retire(conn, "t1", "example.com", "s2") is False


async def test_dual_algorithms_rotate_independently(conn: asyncpg.Connection, box: KeyBox) -> None:
    dns: dict[str, str] = {}
    for selector, algo in (("r1", "rsa"), ("e1", "ed25519")):
        pem, txt = generate_key(algo, 1024)
        dns[f"{selector}._domainkey.example.com"] = txt
        await store.insert_key(
            conn, box, tenant_id="t1", domain="example.com", selector=selector, private_pem=pem
        )
        check, retired = await promote(conn, "t1", "example.com", selector, lookup=_dns(dns))
        assert check.ok and retired == []  # activating Ed25519 does not retire the RSA key
    ring = KeyRing()
    ring.replace_stored(await store.fetch_active(conn), box)
    keys = ring.keys_for("example.com", tenant_id="t1")
    assert [k.algorithm for k in keys] == ["rsa-sha256", "ed25519-sha256"]
    results = verify_message(sign_message(MESSAGE, keys), lambda n: dns[n].encode())
    assert [r.ok for r in results] == [True, True]
    listed = await store.list_keys(conn, tenant_id="t1", domain="EXAMPLE.com")
    assert {r.selector for r in listed} == {"r1", "e1"}


async def test_tenants_see_only_their_rows_and_never_the_ciphertext(
    conn: asyncpg.Connection, box: KeyBox
) -> None:
    for tenant in ("t1", "t2"):
        pem, _ = generate_key("ed25519")
        await store.insert_key(
            conn, box, tenant_id=tenant, domain="example.com", selector="s1", private_pem=pem
        )
    async with conn.transaction():
        await conn.execute("SELECT engine.set_tenant('t1')")  # trusted code sets the tenant
        await conn.execute("SET LOCAL ROLE engine_tenant")
        rows = await conn.fetch("SELECT tenant_id, selector, public_txt FROM oltp.dkim_keys")
        assert [r["tenant_id"] for r in rows] == ["t1"]
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with conn.transaction():  # savepoint, so the outer transaction survives
                await conn.fetch("SELECT private_key_enc FROM oltp.dkim_keys")


def test_cli_keygen_to_the_database_then_activate(
    clean_db: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    master = tmp_path / "master.key"
    master.write_text(generate_master_key())
    master.chmod(0o600)
    cfg = tmp_path / "engine.toml"
    cfg.write_text(f'[database]\ndsn = "{clean_db}"\n[dkim]\nmaster_key_file = "{master}"\n')
    base = ["--config", str(cfg), "--domain", "acme.example", "--selector", "s1"]
    assert main(["dkim", "keygen", "--tenant", "acme", "--type", "ed25519", *base]) == 0
    out = capsys.readouterr().out
    assert "stored: tenant acme, s1._domainkey.acme.example, state pending" in out
    assert "private key:" not in out  # stored only; no file unless --out is given
    txt = out.split("DNS TXT value: ")[1].splitlines()[0]

    published: list[bytes] = []

    async def fake_resolve(name: str, *, timeout: float = 3.0) -> Sequence[bytes]:
        return published

    monkeypatch.setattr(dnscheck, "resolve_txt", fake_resolve)
    assert main(["dkim", "activate", "--tenant", "acme", *base]) == 1
    assert "key stays pending" in capsys.readouterr().out
    published.append(txt.encode())
    assert main(["dkim", "activate", "--tenant", "acme", *base]) == 0
    assert "active: s1._domainkey.acme.example" in capsys.readouterr().out

    async def states() -> list[str]:
        conn = await asyncpg.connect(clean_db)
        try:
            return [r.state for r in await store.list_keys(conn, tenant_id="acme")]
        finally:
            await conn.close()

    assert asyncio.run(states()) == ["active"]
