"""`engine dkim keygen|sign|verify|check-dns` as an operator runs them."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest

from engine.cli import main
from engine.dkim import dnscheck
from tests.unit.dkim_support import dkimpy_verify_all, key

MESSAGE = b"From: a@example.com\nTo: b@example.org\nSubject: hi\n\nhello\n"


def _keygen(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[Path, str]:
    out = tmp_path / "k.pem"
    rc = main(
        ["dkim", "keygen", "--domain", "Example.com", "--selector", "s1", "--out", str(out), *extra]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    m = re.search(r"DNS TXT value: (.+)", printed)
    assert m is not None and "DNS TXT name:  s1._domainkey.example.com" in printed
    return out, m.group(1)


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_keygen_sign_verify_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    pem_file, txt = _keygen(tmp_path, capsys, "--type", kind, "--bits", "1024")
    assert stat.S_IMODE(os.stat(pem_file).st_mode) == 0o600
    assert f"k={kind}" in txt
    msg = tmp_path / "m.eml"
    msg.write_bytes(MESSAGE)
    rc = main(
        [
            "dkim",
            "sign",
            "--domain",
            "example.com",
            "--selector",
            "s1",
            "--key",
            str(pem_file),
            str(msg),
        ]
    )
    assert rc == 0
    signed = capsys.readouterr().out.encode()
    assert signed.startswith(b"DKIM-Signature:") and signed.endswith(MESSAGE)
    signed_file = tmp_path / "signed.eml"
    signed_file.write_bytes(signed)
    record = tmp_path / "txt"
    record.write_text(txt + "\n")
    assert main(["dkim", "verify", str(signed_file), "--txt-record", str(record)]) == 0
    assert capsys.readouterr().out.startswith("pass d=example.com s=s1")

    signed_file.write_bytes(signed.replace(b"hello", b"HELLO"))
    assert main(["dkim", "verify", str(signed_file), "--txt-record", str(record)]) == 1
    assert "body hash mismatch" in capsys.readouterr().out


def test_cli_signature_verifies_with_dkimpy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.dkim.sign import load_signing_key

    pem_file, _ = _keygen(tmp_path, capsys)
    msg = tmp_path / "m.eml"
    msg.write_bytes(MESSAGE)
    main(
        [
            "dkim",
            "sign",
            "--domain",
            "example.com",
            "--selector",
            "s1",
            "--key",
            str(pem_file),
            str(msg),
        ]
    )
    signed = capsys.readouterr().out.encode()
    k = load_signing_key(pem_file.read_bytes(), domain="example.com", selector="s1")
    assert dkimpy_verify_all(signed, k) == [True]


def test_verify_accepts_a_zone_file_style_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    k = key()
    from engine.commands.dkim import zone_line
    from engine.dkim.sign import sign_message

    line = zone_line(k.dns_name, k.public_txt)
    assert line.count('"') == 4  # a 2048-bit key needs two <=255-byte strings
    f = tmp_path / "m.eml"
    f.write_bytes(sign_message(MESSAGE, [k]))
    rec = tmp_path / "rec"
    rec.write_text(line[line.index("(") + 1 : line.rindex(")")])
    assert main(["dkim", "verify", str(f), "--txt-record", str(rec)]) == 0


def test_keygen_refuses_to_overwrite_a_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pem_file, _ = _keygen(tmp_path, capsys, "--type", "ed25519")
    before = pem_file.read_bytes()
    rc = main(
        [
            "dkim",
            "keygen",
            "--domain",
            "example.com",
            "--selector",
            "s1",
            "--type",
            "ed25519",
            "--out",
            str(pem_file),
        ]
    )
    assert rc == 1 and pem_file.read_bytes() == before
    assert "refusing to overwrite" in capsys.readouterr().err


def test_usage_and_runtime_errors_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["dkim", "keygen", "--domain", "example.com"])  # no --selector
    assert exit_info.value.code == 2
    rc = main(
        [
            "dkim",
            "keygen",
            "--domain",
            "exa mple.com",
            "--selector",
            "s1",
            "--out",
            str(tmp_path / "x.pem"),
        ]
    )
    assert rc == 1 and "not a valid DNS name" in capsys.readouterr().err
    assert not (tmp_path / "x.pem").exists()
    bad_key = tmp_path / "bad.pem"
    bad_key.write_text("hello")
    msg = tmp_path / "m.eml"
    msg.write_bytes(MESSAGE)
    rc = main(
        [
            "dkim",
            "sign",
            "--domain",
            "example.com",
            "--selector",
            "s1",
            "--key",
            str(bad_key),
            str(msg),
        ]
    )
    assert rc == 1 and "not PEM" in capsys.readouterr().err
    unsigned = tmp_path / "u.eml"
    unsigned.write_bytes(MESSAGE)
    assert main(["dkim", "verify", str(unsigned), "--txt-record", str(bad_key)]) == 1
    assert "no DKIM-Signature" in capsys.readouterr().err


def test_check_dns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pem_file, txt = _keygen(tmp_path, capsys, "--type", "ed25519")
    published: list[bytes] = []

    async def fake_resolve(name: str, *, timeout: float = 3.0) -> Sequence[bytes]:
        assert name == "s1._domainkey.example.com"
        return published

    monkeypatch.setattr(dnscheck, "resolve_txt", fake_resolve)
    argv = [
        "dkim",
        "check-dns",
        "--domain",
        "example.com",
        "--selector",
        "s1",
        "--key",
        str(pem_file),
    ]
    assert main(argv) == 1
    assert capsys.readouterr().out.startswith("missing: s1._domainkey.example.com")
    published.append(txt.encode())
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("ok: s1._domainkey.example.com")
    published[0] = key("ed25519", 256, "other.example", "x").public_txt.encode()
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert out.startswith("mismatch") and "expected: " in out and "published: " in out
