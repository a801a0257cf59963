"""A 10 MiB message received, stored and parsed while the event loop keeps its 10 ms ticks.

The sender is another process (stdlib smtplib), so only the listener's own work runs on this
loop: aiosmtpd reading the DATA lines, compression (in a thread), the INSERT, the hand-over to
the parse process and the effects. Loop lag is how late a 10 ms ticker wakes.

The bound is looser than the 50 ms target (``python -m bench bounces`` measures that on a quiet
box as ``loop_lag_max_ms``): the sender, the parse worker, PostgreSQL and this loop share two
cores. The time the loop's thread waited for a CPU (the kernel's run-queue wait) is taken out
of each tick's lag, so a loaded box does not read as a stalled loop.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import asyncpg

from engine.looplag import cpu_wait_s
from tests.security.listener import FBL, listener_config, running_listener

LAG_BOUND_S = 0.150

SENDER = """
import base64, os, smtplib, sys
body = base64.encodebytes(os.urandom(int(sys.argv[2]))).replace(b"\\n", b"\\r\\n")
msg = b"From: isp@example.net\\r\\nSubject: big report\\r\\n\\r\\n" + body
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=60) as s:
    s.sendmail("isp@example.net", [sys.argv[3]], msg)
"""


async def _ticker(lags: list[float], stop: asyncio.Event, period: float = 0.01) -> None:
    """How late each 10 ms tick wakes, less the time the loop's thread waited for a CPU: on a
    box busier than its cores a descheduled loop is not a stalled one, while work on the loop
    and blocking calls still count in full."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        due = loop.time() + period
        waited = cpu_wait_s()
        await asyncio.sleep(period)
        late = loop.time() - due
        lags.append(max(0.0, late - max(0.0, cpu_wait_s() - waited)))


async def test_a_10_mib_message_does_not_stall_the_loop(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool
) -> None:
    cfg = listener_config(clean_db, redis_prefix, timeout_s=60.0)
    size = 7_400_000  # random bytes: ~10 MiB once base64-encoded with CRLF lines
    async with running_listener(cfg, pool) as service:
        lags: list[float] = []
        stop = asyncio.Event()
        ticker = asyncio.create_task(_ticker(lags, stop))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            SENDER,
            str(service.port),
            str(size),
            FBL,
            stderr=subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
        deadline = time.monotonic() + 60
        while not await pool.fetchval(
            "SELECT count(*) FROM content.inbound_messages"
            " WHERE processed_at IS NOT NULL OR quarantined_at IS NOT NULL"
        ):
            assert time.monotonic() < deadline, "never parsed nor quarantined"
            await asyncio.sleep(0.02)
        stop.set()
        await ticker
    stored = await pool.fetchval("SELECT size FROM content.inbound_messages")
    assert stored > 10_000_000
    assert len(lags) > 20
    assert max(lags) < LAG_BOUND_S, f"loop stalled {max(lags) * 1000:.0f} ms (ticks {len(lags)})"
