"""The shaping maths stay sans-IO: importing them pulls in no asyncio, redis or asyncpg."""

from __future__ import annotations

import subprocess
import sys

SANS_IO = ("gcra", "aimd", "warmup", "reputation", "signals", "clock", "model")


def test_sans_io_modules_import_no_io_libraries() -> None:
    code = (
        "import sys\n"
        + "".join(f"import engine.shaping.{m}\n" for m in SANS_IO)
        + "bad = sorted(m for m in ('asyncio', 'redis', 'asyncpg', 'dns') if m in sys.modules)\n"
        + "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert out == ""
