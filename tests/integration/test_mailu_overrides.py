"""`engine mailu overrides` → applied the way MailU applies them → Postfix accepts every line.

MailU runs ``postconf -e`` per line of ``postfix.cf`` and ``postconf -Me`` per line of
``postfix.master``, and ``postmap`` on ``*.map``; this does the same on a scratch config
directory and asks Postfix (``postconf -n``) for warnings: an unknown or misspelt parameter,
or a per-transport parameter without its transport, would be one.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import msgspec
import pytest

from engine.cli import main

POSTCONF = shutil.which("postconf") or "/usr/sbin/postconf"
POSTMAP = shutil.which("postmap") or "/usr/sbin/postmap"

pytestmark = pytest.mark.skipif(
    not Path(POSTCONF).exists(), reason="postfix is not installed (scripts/bootstrap.sh)"
)

# A small provider table of its own: every line costs a postconf run.
TABLE = """\
[[providers]]
name = "outlook"
mx_suffixes = ["outlook.com"]
domains = ["outlook.com", "hotmail.com"]
max_connections = 4
"""
CONFIG = """\
[shaping]
providers_file = "{table}"
[[shaping.providers]]
name = "gmail"
mx_suffixes = ["google.com"]
domains = ["gmail.com"]
max_connections = 7
[[shaping.providers]]
name = "slowmail"
mx_suffixes = ["mx.slow.test"]
rate_per_s = 0.5
max_connections = 2
domains = ["slow.test"]
[dns.overrides]
"gmail.test" = ["gmail-smtp-in.l.google.com"]
"""


def _postconf(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [POSTCONF, "-c", str(conf), *args], capture_output=True, text=True, check=True
    )


def test_postfix_accepts_the_rendered_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "engine.toml"
    table = tmp_path / "providers.toml"
    table.write_text(TABLE)
    cfg.write_text(CONFIG.format(table=table))
    overrides = tmp_path / "overrides"
    overrides.mkdir()
    args = ["mailu", "overrides", "--config", str(cfg), "--dir", str(overrides), "--json"]
    assert main(args) == 0
    doc = msgspec.json.decode(capsys.readouterr().out)
    gmail = next(p for p in doc["providers"] if p["provider"] == "gmail")
    assert gmail["max_connections"] == 7 and "gmail.test" in gmail["domains"]

    conf = tmp_path / "postfix"
    conf.mkdir()
    (conf / "main.cf").write_text("compatibility_level = 3.7\n")
    (conf / "master.cf").write_text("smtp unix - - n - - smtp\n")
    for line in (overrides / "postfix.cf").read_text().splitlines():
        _postconf(conf, "-e", line)
    for line in (overrides / "postfix.master").read_text().splitlines():
        _postconf(conf, "-Me", line)

    shown = _postconf(conf, "-n")
    assert shown.stderr == ""  # no "unused parameter" warning: every line means something
    assert "pm_gmail_destination_concurrency_limit = 7" in shown.stdout
    assert "pm_slowmail_destination_rate_delay = 2s" in shown.stdout
    assert "delay_warning_time = 30m" in shown.stdout
    entry = _postconf(conf, "-M", "pm_gmail/unix").stdout.split()
    assert entry[:7] == ["pm_gmail", "unix", "-", "-", "n", "-", "7"]  # maxproc = connections
    assert _postconf(conf, "-P", "pm_gmail/unix/smtp_connection_reuse_count_limit").stdout

    # A typo would be caught the same way (the check above is not vacuous).
    (conf / "main.cf").write_text((conf / "main.cf").read_text() + "pm_nosuch_destination_x = 1\n")
    assert "unused parameter" in _postconf(conf, "-n").stderr

    for domain, transport in (
        ("gmail.com", "pm_gmail:"),
        ("gmail.test", "pm_gmail:"),
        ("slow.test", "pm_slowmail:"),
    ):
        found = subprocess.run(
            [POSTMAP, "-c", str(conf), "-q", domain, f"texthash:{overrides / 'transport.map'}"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert found.stdout.strip() == transport
