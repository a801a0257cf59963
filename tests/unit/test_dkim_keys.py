"""Key generation, the AES-GCM key box and the KeyRing the hot path asks for keys."""

from __future__ import annotations

import base64
import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from engine import config as config_mod
from engine.dkim.crypto_box import KeyBox, generate_master_key, key_aad
from engine.dkim.keys import KeyRing, StoredKey, algorithm_name, generate_key
from engine.dkim.sign import load_signing_key, sign_message
from engine.errors import (
    ConfigError,
    DkimCryptoError,
    DkimDnsError,
    DkimKeyError,
    DkimKeyMissingError,
)
from tests.unit.dkim_support import dkimpy_verify_all, pem

MESSAGE = b"From: a@news.example.com\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nbody\r\n"


@pytest.mark.parametrize(("algo", "k"), [("rsa", "k=rsa"), ("ed25519", "k=ed25519")])
def test_generate_key_gives_loadable_pem_and_matching_txt(algo: str, k: str) -> None:
    private, txt = generate_key(algo, 1024)
    assert private.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert txt.startswith(f"v=DKIM1; {k}; p=")
    key = load_signing_key(private, domain="example.com", selector="s1")
    assert key.public_txt == txt
    assert dkimpy_verify_all(sign_message(MESSAGE, [key]), key) == [True]


@pytest.mark.parametrize("bits", [512, 8192])
def test_generate_key_refuses_unsupported_rsa_sizes(bits: int) -> None:
    with pytest.raises(DkimKeyError, match="1024"):
        generate_key("rsa", bits)


def test_algorithm_names() -> None:
    assert algorithm_name("RSA") == "rsa-sha256"
    assert algorithm_name("ed25519-sha256") == "ed25519-sha256"
    with pytest.raises(DkimKeyError, match="unknown DKIM key type"):
        algorithm_name("dsa")


# --- KeyBox -------------------------------------------------------------------------------


def test_keybox_round_trip_and_binding_to_its_row() -> None:
    box = KeyBox.from_base64(generate_master_key())
    aad = key_aad("t1", "example.com", "s1")
    sealed = box.seal(b"secret pem", aad=aad)
    assert b"secret" not in sealed
    assert box.open(sealed, aad=aad) == b"secret pem"
    assert box.seal(b"secret pem", aad=aad) != sealed  # fresh nonce each time
    with pytest.raises(DkimCryptoError, match="does not decrypt"):
        box.open(sealed, aad=key_aad("t2", "example.com", "s1"))  # copied onto another row
    other = KeyBox.from_base64(generate_master_key())
    with pytest.raises(DkimCryptoError, match="master key differs"):
        other.open(sealed, aad=aad)
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(DkimCryptoError):
        box.open(tampered, aad=aad)
    with pytest.raises(DkimCryptoError, match="known encrypted format"):
        box.open(b"\x02" + sealed[1:], aad=aad)


def test_keybox_never_shows_the_master_key() -> None:
    text = generate_master_key()
    box = KeyBox.from_base64(text)
    assert text not in repr(box) and "hidden" in repr(box)
    with pytest.raises(DkimCryptoError) as err:
        KeyBox.from_base64(base64.b64encode(b"short").decode())
    assert "32 bytes" in str(err.value)


@pytest.mark.parametrize("bad", ["not base64!!", base64.b64encode(b"x" * 16).decode()])
def test_keybox_rejects_bad_master_keys(bad: str) -> None:
    with pytest.raises(DkimCryptoError):
        KeyBox.from_base64(bad)


def test_keybox_from_config_file_and_missing(tmp_path: Path) -> None:
    with pytest.raises(DkimCryptoError, match="no DKIM master key"):
        KeyBox.from_config(config_mod.parse({}).dkim)
    f = tmp_path / "master.key"
    f.write_text(generate_master_key() + "\n")
    f.chmod(0o600)
    cfg = config_mod.parse({"dkim": {"master_key_file": str(f)}})
    assert isinstance(KeyBox.from_config(cfg.dkim), KeyBox)
    f.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        KeyBox.from_config(cfg.dkim)


# --- KeyRing ------------------------------------------------------------------------------


def _write(tmp_path: Path, name: str, data: bytes, mode: int = 0o600) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    path.chmod(mode)
    return str(path)


def _ring(tmp_path: Path, entries: list[dict[str, str]], **dkim: object) -> KeyRing:
    cfg = config_mod.parse({"dkim": {"keys": entries, **dkim}})
    return KeyRing.from_config(cfg.dkim)


def test_ring_picks_latest_selector_and_dual_signs(tmp_path: Path) -> None:
    rsa_old = _write(tmp_path, "old.pem", pem("rsa", 2048)[0])
    rsa_new = _write(tmp_path, "new.pem", pem("rsa", 1024)[0])
    ed = _write(tmp_path, "ed.pem", pem("ed25519")[0])
    ring = _ring(
        tmp_path,
        [
            {"domain": "example.com", "selector": "old", "private_key_file": rsa_old},
            {
                "domain": "example.com",
                "selector": "ed1",
                "private_key_file": ed,
                "algorithm": "ed25519-sha256",
            },
            {"domain": "Example.com", "selector": "new", "private_key_file": rsa_new},
        ],
    )
    keys = ring.keys_for("EXAMPLE.com")
    assert [(k.selector, k.algorithm) for k in keys] == [
        ("new", "rsa-sha256"),
        ("ed1", "ed25519-sha256"),
    ]
    assert ring.keys_for("example.com") is keys  # cached lookup
    # A subdomain without its own key is signed by the parent's (relaxed DMARC alignment).
    assert ring.keys_for("news.example.com") == keys
    signed = sign_message(MESSAGE, keys)
    assert dkimpy_verify_all(signed, *keys) == [True, True]


def test_missing_key_blocks_when_required_and_is_empty_otherwise(tmp_path: Path) -> None:
    key_file = _write(tmp_path, "k.pem", pem("ed25519")[0])
    entry = {
        "domain": "example.com",
        "selector": "s1",
        "private_key_file": key_file,
        "algorithm": "ed25519-sha256",
    }
    assert _ring(tmp_path, [entry]).keys_for("other.org") == ()
    required = _ring(tmp_path, [entry], required=True)
    with pytest.raises(DkimKeyMissingError, match=r"no active DKIM key for other\.org.*held"):
        required.keys_for("other.org", tenant_id="t1")
    assert required.keys_for("example.com")
    with pytest.raises(DkimKeyMissingError):  # no fallback from a domain to its bare TLD
        required.keys_for("example.org")
    assert _ring(tmp_path, [entry], enabled=False, required=True).keys_for("example.com") == ()


def test_config_key_problems_stop_the_start(tmp_path: Path) -> None:
    ed = _write(tmp_path, "ed.pem", pem("ed25519")[0])
    with pytest.raises(DkimKeyError, match='algorithm = "ed25519-sha256"'):
        _ring(tmp_path, [{"domain": "example.com", "selector": "s1", "private_key_file": ed}])
    with pytest.raises(DkimKeyError, match="cannot be read"):
        _ring(
            tmp_path,
            [
                {
                    "domain": "example.com",
                    "selector": "s1",
                    "private_key_file": str(tmp_path / "nope.pem"),
                }
            ],
        )
    garbage = _write(tmp_path, "bad.pem", b"-----BEGIN PRIVATE KEY-----\nxx\n")
    with pytest.raises(DkimKeyError, match="cannot be parsed"):
        _ring(tmp_path, [{"domain": "example.com", "selector": "s1", "private_key_file": garbage}])


def test_world_readable_key_file_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loose = _write(tmp_path, "loose.pem", pem("ed25519")[0], mode=0o644)
    with caplog.at_level(logging.WARNING, logger="engine.dkim.keys"):
        _ring(
            tmp_path,
            [
                {
                    "domain": "example.com",
                    "selector": "s1",
                    "private_key_file": loose,
                    "algorithm": "ed25519-sha256",
                }
            ],
        )
    assert any("world-readable" in r.getMessage() for r in caplog.records)
    assert "PRIVATE" not in caplog.text


def _stored(
    box: KeyBox, tenant: str, selector: str, algo: str, when: int, state: str = "active"
) -> StoredKey:
    private = pem(algo, 1024)[0]
    key = load_signing_key(private, domain="example.com", selector=selector)
    return StoredKey(
        tenant_id=tenant,
        domain="example.com",
        selector=selector,
        algorithm=key.algorithm,
        private_key_enc=box.seal(private, aad=key_aad(tenant, "example.com", selector)),
        public_txt=key.public_txt,
        state=state,  # type: ignore[arg-type]  # tests pass literal strings
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
        activated_at=datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=when),
    )


def test_stored_keys_belong_to_their_tenant_and_latest_activation_wins(tmp_path: Path) -> None:
    box = KeyBox(os.urandom(32))
    cfg_key = _write(tmp_path, "cfg.pem", pem("rsa", 2048)[0])
    ring = _ring(
        tmp_path, [{"domain": "example.com", "selector": "cfg", "private_key_file": cfg_key}]
    )
    ring.replace_stored(
        [
            _stored(box, "t1", "b", "rsa", when=2),
            _stored(box, "t1", "a", "rsa", when=1),
            _stored(box, "t1", "p", "rsa", when=3, state="pending"),
            _stored(box, "t2", "e", "ed25519", when=1),
        ],
        box,
    )
    assert [k.selector for k in ring.keys_for("example.com", tenant_id="t1")] == ["b"]
    assert [k.selector for k in ring.keys_for("example.com", tenant_id="t2")] == ["e"]
    assert [k.selector for k in ring.keys_for("example.com", tenant_id="t3")] == ["cfg"]
    assert [k.selector for k in ring.keys_for("example.com")] == ["cfg"]
    # A refresh replaces stored keys (t1's retired here) but keeps the config ones.
    ring.replace_stored([_stored(box, "t2", "e", "ed25519", when=1)], box)
    assert [k.selector for k in ring.keys_for("example.com", tenant_id="t1")] == ["cfg"]
    assert len(ring.domains()) == 2


def test_a_refresh_loads_only_rows_it_has_not_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    box = KeyBox(os.urandom(32))
    a, b = _stored(box, "t1", "a", "rsa", when=1), _stored(box, "t2", "b", "ed25519", when=1)
    loads: list[str] = []
    real = StoredKey.load

    def counting(self: StoredKey, box: KeyBox) -> object:
        loads.append(self.selector)
        return real(self, box)

    monkeypatch.setattr(StoredKey, "load", counting)
    ring = KeyRing()
    ring.replace_stored([a, b], box)
    first = ring.keys_for("example.com", tenant_id="t1")
    ring.replace_stored([a, b], box)  # every minute: nothing new, nothing decrypted again
    assert loads == ["a", "b"]
    assert ring.keys_for("example.com", tenant_id="t1")[0] is first[0]
    c = _stored(box, "t1", "c", "rsa", when=2)  # rotation: the new row alone is loaded
    ring.replace_stored([a, b, c], box)
    assert loads == ["a", "b", "c"]
    assert [k.selector for k in ring.keys_for("example.com", tenant_id="t1")] == ["c"]
    ring.replace_stored([b], box)  # retired rows drop out of the reuse table too
    ring.replace_stored([a, b], box)
    assert loads == ["a", "b", "c", "a"]


def test_a_trusted_load_skips_only_the_rsa_consistency_check() -> None:
    good = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    n = good.private_numbers()
    # p and q swapped in the CRT parameters only: parseable, but not a consistent key.
    bad = rsa.RSAPrivateNumbers(
        n.p, n.q, n.d, n.dmq1, n.dmp1, n.iqmp, n.public_numbers
    ).private_key(unsafe_skip_rsa_key_validation=True)
    bad_pem = bad.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(DkimKeyError, match="cannot be parsed"):
        load_signing_key(bad_pem, domain="example.com", selector="s")
    assert load_signing_key(bad_pem, domain="example.com", selector="s", trusted=True)
    good_pem = good.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    checked = load_signing_key(good_pem, domain="example.com", selector="s")
    trusted = load_signing_key(good_pem, domain="example.com", selector="s", trusted=True)
    message = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: x\r\n\r\nbody\r\n"
    assert sign_message(message, [trusted], timestamp=1) == sign_message(
        message, [checked], timestamp=1
    )
    for junk in (b"not a key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"):
        with pytest.raises(DkimKeyError):  # trust skips a check, not the parsing
            load_signing_key(junk, domain="example.com", selector="s", trusted=True)


def test_a_row_that_fails_to_decrypt_leaves_the_ring_unchanged() -> None:
    box = KeyBox(os.urandom(32))
    ring = KeyRing()
    ring.replace_stored([_stored(box, "t1", "a", "ed25519", when=1)], box)
    bad = _stored(KeyBox(os.urandom(32)), "t1", "b", "ed25519", when=2)
    with pytest.raises(DkimCryptoError):
        ring.replace_stored([_stored(box, "t1", "a", "ed25519", when=1), bad], box)
    assert [k.selector for k in ring.keys_for("example.com", tenant_id="t1")] == ["a"]


async def test_check_dns_at_start_drops_unpublished_keys(tmp_path: Path) -> None:
    ok_file = _write(tmp_path, "ok.pem", pem("ed25519")[0])
    bad_file = _write(tmp_path, "bad.pem", pem("rsa", 1024)[0])
    flaky_file = _write(tmp_path, "flaky.pem", pem("rsa", 2048)[0])
    ring = _ring(
        tmp_path,
        [
            {
                "domain": "example.com",
                "selector": "ok",
                "private_key_file": ok_file,
                "algorithm": "ed25519-sha256",
            },
            {"domain": "example.com", "selector": "bad", "private_key_file": bad_file},
            {"domain": "other.example", "selector": "flaky", "private_key_file": flaky_file},
        ],
        required=True,
        check_dns=True,
    )
    published = {"ok._domainkey.example.com": ring.keys_for("example.com")[1].public_txt}

    async def lookup(name: str) -> list[bytes]:
        if name.startswith("flaky."):
            raise DkimDnsError("DNS lookup timed out")
        return [published[name].encode()] if name in published else []

    checks = await ring.drop_unpublished(lookup=lookup)
    assert sorted(c.status for c in checks) == ["error", "missing", "ok"]
    assert [k.selector for k in ring.keys_for("example.com")] == ["ok"]  # RSA one dropped
    assert [k.selector for k in ring.keys_for("other.example")] == ["flaky"]  # DNS error: kept
