"""journald priorities: with stdout on the journal (``JOURNAL_STREAM`` names it) every log line
carries the sd-daemon ``<N>`` prefix, so ``journalctl -p warning`` finds warnings (4) and
errors (3); anywhere else lines stay bare JSON. Runs a real child process with its stdout on a
file whose device:inode is passed as ``JOURNAL_STREAM``, as systemd does for a socket."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

CHILD = """
import logging, sys
from engine import logs
logs.setup("debug", sys.argv[1])
log = logging.getLogger("engine.test")
log.debug("d")
log.info("i")
log.warning("careful", extra={"node": "relay1"})
log.error("broken")
try:
    raise ValueError("boom")
except ValueError:
    log.exception("failed")
"""


def run_child(tmp_path: Path, fmt: str, *, journal: bool | str) -> list[str]:
    out = tmp_path / f"out-{fmt}-{journal}"
    with out.open("wb") as fh:
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        if journal is True:
            st = os.fstat(fh.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        elif journal:
            env["JOURNAL_STREAM"] = journal
        subprocess.run(
            [sys.executable, "-c", CHILD, fmt], stdout=fh, env=env, check=True, timeout=60
        )
    return out.read_text().splitlines()


def test_json_lines_carry_the_syslog_priority_on_the_journal(tmp_path: Path) -> None:
    lines = run_child(tmp_path, "json", journal=True)
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>", "<3>"]
    warning = orjson.loads(lines[2][3:])
    assert warning["level"] == "warning" and warning["node"] == "relay1"
    assert orjson.loads(lines[3][3:])["msg"] == "broken"
    assert "ValueError: boom" in orjson.loads(lines[4][3:])["exc"]


def test_text_lines_and_each_traceback_line_are_prefixed(tmp_path: Path) -> None:
    lines = run_child(tmp_path, "text", journal=True)
    assert lines[2].startswith("<4>") and "WARNING" in lines[2]
    assert lines[3].startswith("<3>") and "broken" in lines[3]
    tail = lines[4:]
    assert len(tail) > 2 and all(line.startswith("<3>") for line in tail)


@pytest.mark.parametrize("journal", [False, "0:0", "garbage"])
def test_no_prefix_off_the_journal(tmp_path: Path, journal: bool | str) -> None:
    # Unset, or naming another file (a child that inherited the variable): bare lines.
    lines = run_child(tmp_path, "json", journal=journal)
    assert [orjson.loads(line)["level"] for line in lines] == [
        "debug",
        "info",
        "warning",
        "error",
        "error",
    ]
