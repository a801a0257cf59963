"""Secrets stay secret and relay TLS is verified.

- secret files (relay passwords, the admin token, the DKIM master key) must be 0600/0400;
- DKIM private keys stored by ``engine dkim keygen --tenant`` are encrypted at rest: no PEM, no
  key bytes in ``oltp.dkim_keys``;
- passwords never reach a log line or an error message;
- TLS to a relay node verifies the certificate chain and the host name by default.
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from cryptography.hazmat.primitives import serialization

from engine.admin.auth import resolve_token
from engine.config import (
    AdminConfig,
    DatabaseConfig,
    DkimConfig,
    RelayConfig,
    RelayNode,
    parse,
    read_secret,
)
from engine.dkim.crypto_box import KeyBox, generate_master_key
from engine.errors import ConfigError, EngineError
from engine.model import OutcomeKind
from engine.relay.pool import RelayPool
from engine.store.pool import connect
from tests.fakes.fixtures import MAILU_PASSWORD, MAILU_USER, mailu_tls  # noqa: F401
from tests.fakes.mailu import FakeMailU

MESSAGE = b"From: a@sender.test\r\nTo: r@example.test\r\nSubject: s\r\n\r\nbody\r\n"


def _secret_file(tmp_path: Path, mode: int, value: str = "s3cret-value-0123456789abcdef") -> str:
    path = tmp_path / f"secret-{mode:o}"
    path.write_text(value + "\n")
    path.chmod(mode)
    return str(path)


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_owner_only_secret_files_are_read(tmp_path: Path, mode: int) -> None:
    assert read_secret(None, _secret_file(tmp_path, mode), "x") == "s3cret-value-0123456789abcdef"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own the file as root and chown it")
def test_root_owned_group_readable_secret_is_read_and_others_are_not(tmp_path: Path) -> None:
    # The packaged layout: root:penguinmails 0640, readable by the service through its group.
    path = _secret_file(tmp_path, 0o640)
    os.chown(path, 0, 65534)
    assert read_secret(None, path, "x") == "s3cret-value-0123456789abcdef"
    assert resolve_token(AdminConfig(token_file=path)) == "s3cret-value-0123456789abcdef"
    # The same mode on a file the service (or anyone but root) owns lets its group read it.
    os.chown(path, 65534, 65534)
    with pytest.raises(ConfigError, match="readable by group/others"):
        read_secret(None, path, "x")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o666, 0o620, 0o602, 0o610])
def test_group_or_world_accessible_secret_files_are_refused(tmp_path: Path, mode: int) -> None:
    path = _secret_file(tmp_path, mode)
    if mode & 0o040 and not mode & 0o037 and os.geteuid() == 0:
        os.chown(path, 65534, 65534)  # 0640 is refused unless root owns the file
    with pytest.raises(ConfigError, match="readable by group/others") as refused:
        read_secret(None, path, "relay node n1 password")
    assert "s3cret" not in str(refused.value) and "chmod 600" in str(refused.value.hint)
    # ... and every secret the engine reads from a file goes through that check.
    with pytest.raises(ConfigError):
        resolve_token(AdminConfig(token_file=path))
    with pytest.raises(ConfigError):
        KeyBox.from_config(DkimConfig(master_key_file=path))
    node = RelayNode(name="n1", host="127.0.0.1", port=1, username="u", password_file=path)
    with pytest.raises(ConfigError):
        RelayPool(RelayConfig(nodes=[node]))
    with pytest.raises(ConfigError, match="chmod 600") as verp_refused:
        parse({"inbound": {"verp_secret_file": path}})
    assert "s3cret" not in str(verp_refused.value)


def test_missing_secret_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_secret(None, str(tmp_path / "nope"), "[admin] token")


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    return subprocess.run(
        [sys.executable, "-m", "engine", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


async def test_dkim_private_keys_are_encrypted_at_rest(clean_db: str, tmp_path: Path) -> None:
    master = tmp_path / "master.key"
    master.write_text(generate_master_key())
    master.chmod(0o600)
    config = tmp_path / "engine.toml"
    config.write_text(f'[database]\ndsn = "{clean_db}"\n[dkim]\nmaster_key_file = "{master}"\n')
    for algorithm, selector in (("rsa", "r1"),):
        done = _cli(
            config,
            "dkim",
            "keygen",
            "--domain",
            "acme.example",
            "--selector",
            selector,
            "--tenant",
            "acme",
            "--type",
            algorithm,
        )
        assert done.returncode == 0, done.stderr
        assert "PRIVATE KEY" not in done.stdout, "keygen --tenant must not print the key"

    conn = await asyncpg.connect(clean_db)
    try:
        rows = await conn.fetch("SELECT t::text AS row, t.* FROM oltp.dkim_keys t")
        assert len(rows) == 1
        box = KeyBox.from_base64(master.read_text())
        for row in rows:
            text = row["row"]
            assert "PRIVATE KEY" not in text and "BEGIN" not in text
            stored = row["private_key_enc"]
            assert b"PRIVATE KEY" not in stored
            # The key material itself (DER, and its base64 as in the PEM) is nowhere in the row.
            from engine.dkim.crypto_box import key_aad

            pem = box.open(stored, aad=key_aad("acme", row["domain"], row["selector"]))
            der = serialization.load_pem_private_key(pem, None).private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            assert der[-24:] not in stored and der[-24:].hex() not in text
            assert base64.b64encode(der)[40:80].decode() not in text
    finally:
        await conn.close()

    # A world-readable master key is refused before anything is written.
    master.chmod(0o644)
    done = _cli(config, "dkim", "keygen", "--domain", "acme.example", "--selector", "x1",
                "--tenant", "acme", "--type", "ed25519")  # fmt: skip
    assert done.returncode == 2 and "readable by group/others" in done.stderr


async def test_database_password_is_not_in_errors(caplog: pytest.LogCaptureFixture) -> None:
    dsn = "postgresql://engine:Hunter2-db-pass@127.0.0.1:1/engine"
    with pytest.raises(EngineError) as failed:
        await connect(DatabaseConfig(dsn=dsn, pool_min=1, pool_max=1, command_timeout_s=2))
    assert "Hunter2-db-pass" not in str(failed.value)
    assert "Hunter2-db-pass" not in caplog.text


async def test_relay_password_is_never_logged(
    mailu_tls: FakeMailU, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wrong-Pa55word-xyz"
    with caplog.at_level(logging.DEBUG):
        for password in (wrong, MAILU_PASSWORD):
            node = mailu_tls.relay_node("n1", password=password)
            pool = RelayPool(RelayConfig(nodes=[node], helo_name="engine.test"))
            await pool.start(health_checks=False)
            try:
                result = await pool.send("a@sender.test", ["r@example.test"], MESSAGE)
                await pool.check_health()
            finally:
                await pool.close()
            assert (result.kind is OutcomeKind.RELAYED) == (password == MAILU_PASSWORD)
            assert password not in (result.reply or "")
    logged = caplog.text + " ".join(repr(r.__dict__) for r in caplog.records)
    assert MAILU_USER  # the user name may be logged; the passwords may not
    assert wrong not in logged and MAILU_PASSWORD not in logged


def _relay(node: FakeMailU, **fields: object) -> RelayConfig:
    return RelayConfig(
        nodes=[node.relay_node("n1", **fields)],
        helo_name="engine.test",
        connect_timeout_s=3,
        command_timeout_s=3,
    )


async def _send(cfg: RelayConfig) -> OutcomeKind:
    pool = RelayPool(cfg)
    await pool.start(health_checks=False)
    try:
        return (await pool.send("a@sender.test", ["r@example.test"], MESSAGE)).kind
    finally:
        await pool.close()


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
async def test_relay_tls_is_verified_by_default(tls: str) -> None:
    with FakeMailU(auth=(MAILU_USER, MAILU_PASSWORD), tls=tls) as node:  # type: ignore[arg-type]
        assert node.relay_node("n1").verify_tls, "verification is on unless a node opts out"
        # A certificate from a CA the engine does not trust: nothing is delivered.
        assert await _send(_relay(node, ca_file=None)) is OutcomeKind.DEFERRED
        assert node.count() == 0
        # With the node's CA: delivered, over TLS, authenticated.
        assert await _send(_relay(node)) is OutcomeKind.RELAYED
        [got] = node.received
        assert got.tls and got.authenticated_as == MAILU_USER
    # Trusted CA, wrong name: the certificate is for 127.0.0.1/localhost/mailu.test.
    with FakeMailU(auth=(MAILU_USER, MAILU_PASSWORD), tls=tls, host="127.0.0.2") as other:  # type: ignore[arg-type]
        assert await _send(_relay(other)) is OutcomeKind.DEFERRED
        assert other.count() == 0
