"""A short, fixed atheris session over ``parse_bounce`` (the long hunt: run the script itself)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

atheris = pytest.importorskip("atheris", reason="atheris has wheels for x86_64 only")

SCRIPT = Path(__file__).with_name("atheris_bounce.py")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bounces"
RUNS = 4000


def test_atheris_session_finds_no_crash(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for path in FIXTURES.glob("*.msg"):
        shutil.copy(path, corpus / path.name)
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            f"-runs={RUNS}",
            "-max_len=16384",
            "-seed=20240601",
            str(corpus),
        ],
        cwd=tmp_path,  # libFuzzer writes crash-* files to the working directory
        capture_output=True,
        timeout=240,
    )
    log = proc.stderr.decode("utf-8", "replace")
    crashes = sorted(p.name for p in tmp_path.glob("crash-*"))
    assert proc.returncode == 0 and not crashes, f"{crashes}\n{log[-4000:]}"
    assert f"Done {RUNS} runs" in log, log[-2000:]
