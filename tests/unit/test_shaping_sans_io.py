"""The shaping maths stay sans-IO: importing them pulls in no asyncio, redis or asyncpg.

The GCRA itself lives in the foundation (``engine.gcra``, shared with the API keys' limit)."""

from __future__ import annotations

import subprocess
import sys

_SHAPING = ("aimd", "warmup", "reputation", "signals", "clock", "model")
SANS_IO = ("engine.gcra", *(f"engine.shaping.{m}" for m in _SHAPING))


def test_sans_io_modules_import_no_io_libraries() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in SANS_IO)
        + "bad = sorted(m for m in ('asyncio', 'redis', 'asyncpg', 'dns') if m in sys.modules)\n"
        + "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert out == ""
