"""The systemd files: required keys, hardening, sysusers/tmpfiles, env example; systemd-analyze."""

from __future__ import annotations

import re
import shutil
import subprocess
import typing
from pathlib import Path

import pytest

from engine.config import Config

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD / "penguinmails-engine.service"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections → key → every value given (systemd allows repeated keys)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            out.setdefault(section, {})
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not key=value: {raw!r}"
        out[section].setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text())


def one(unit: dict[str, dict[str, list[str]]], key: str) -> str:
    values = unit["Service"][key]
    assert len(values) == 1, (key, values)
    return values[0]


def test_service_contract(unit: dict[str, dict[str, list[str]]]) -> None:
    assert one(unit, "Type") == "notify"
    assert one(unit, "NotifyAccess") == "main"
    assert one(unit, "ExecStart").split()[1:] == [
        "run",
        "--config",
        "/etc/penguinmails-engine/engine.toml",
    ]
    assert one(unit, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(unit, "WatchdogSec") == "30"
    assert int(one(unit, "TimeoutStopSec")) >= 60  # room for the drain
    assert one(unit, "Restart") == "on-failure"
    assert one(unit, "User") == one(unit, "Group") == "penguinmails"
    assert one(unit, "EnvironmentFile") == "-/etc/default/penguinmails-engine"
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_service_hardening(unit: dict[str, dict[str, list[str]]]) -> None:
    expected = {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    }
    for key, value in expected.items():
        assert one(unit, key) == value, key
    assert "@system-service" in unit["Service"]["SystemCallFilter"]
    assert "/var/lib/penguinmails-engine" in one(unit, "ReadWritePaths")


def test_sysusers_and_tmpfiles() -> None:
    users = [
        line.split()
        for line in (SYSTEMD / "penguinmails-engine.sysusers").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert users and users[0][:2] == ["u", "penguinmails"]
    entries = [
        line.split()
        for line in (SYSTEMD / "penguinmails-engine.tmpfiles").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    state = [e for e in entries if e[1] == "/var/lib/penguinmails-engine"]
    assert state and state[0][0] == "d" and state[0][3] == "penguinmails"
    assert all(len(e) == 7 and e[2].startswith("0") for e in entries)


def test_env_example_names_real_config_keys() -> None:
    text = (SYSTEMD / "penguinmails-engine.env.example").read_text()
    names = re.findall(r"^#?(ENGINE_[A-Z0-9_]+)=", text, flags=re.M)
    assert len(names) >= 8
    sections = typing.get_type_hints(Config)
    for name in names:
        if name == "ENGINE_CONFIG":
            continue
        m = re.fullmatch(r"ENGINE_([A-Z0-9]+)__([A-Z0-9_]+)", name)
        assert m, name
        section, key = m.group(1).lower(), m.group(2).lower()
        assert section in sections, name
        assert key in sections[section].__struct_fields__, name


def _analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not on PATH (install the systemd package to run this)")
    return path


def _testable_copy(tmp_path: Path) -> Path:
    # verify checks that ExecStart exists; the engine is not installed system-wide in tests.
    text = UNIT.read_text().replace(
        "ExecStart=/opt/penguinmails-engine/bin/engine ", "ExecStart=/bin/true "
    )
    copy = tmp_path / UNIT.name
    copy.write_text(text)
    return copy


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    analyze = _analyze()
    copy = _testable_copy(tmp_path)
    proc = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # verify exits 0 on mere warnings (unknown keys...): any line naming our file is a finding.
    findings = [line for line in proc.stderr.splitlines() if UNIT.name in line]
    assert proc.returncode == 0 and not findings, proc.stderr


def test_systemd_analyze_security_exposure_is_low(tmp_path: Path) -> None:
    analyze = _analyze()
    copy = _testable_copy(tmp_path)
    proc = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout + proc.stderr)
    if m is None:
        pytest.skip(f"this systemd-analyze cannot rate units offline: {proc.stderr.strip()[:200]}")
    assert float(m.group(1)) <= 2.5, proc.stdout[-2000:]
