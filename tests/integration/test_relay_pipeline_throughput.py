"""Throughput of the relay pool with and without PIPELINING, to the sink in its own process.

``python -m engine.sink`` runs in a separate process (its own GIL), the pool on uvloop as in the
daemon: 1 node, 8 connections, ~3 KB messages, both modes interleaved in the same run so machine
noise hits both. Prints the rates; run with ``-s`` to see them.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import uvloop

from engine.config import RelayConfig, RelayNode
from engine.model import OutcomeKind
from engine.relay import RelayPool
from engine.relay.node import NodePool

MESSAGES = 3000
CONCURRENCY = 128
CONNECTIONS = 8
BODY = (
    b"From: news@sender.test\r\nTo: r@example.test\r\nSubject: bench\r\nMIME-Version: 1.0\r\n\r\n"
    + (b"y" * 76 + b"\r\n") * 38
)  # ~3 KB with the Message-ID


async def _rate(port: int, mode: str, rnd: int) -> float:
    cfg = RelayConfig(
        nodes=[
            RelayNode(
                name="sink",
                host="127.0.0.1",
                port=port,
                tls="none",
                max_connections=CONNECTIONS,
                max_messages_per_connection=1_000_000,
            )
        ],
        helo_name="engine.test",
        health_interval_s=0,
    )
    NodePool.pipelining = mode == "on"
    async with RelayPool(cfg) as pool:
        # Warm the sessions up so the figure is steady-state sending, not connecting.
        warm = [b"Message-ID: <w%d-%s-%d@x.test>\r\n" % (i, mode.encode(), rnd) for i in range(8)]
        await asyncio.gather(*(pool.send("a@x.test", ["r@x.test"], w + BODY) for w in warm))
        ids = iter(range(MESSAGES))
        relayed = 0

        async def worker() -> None:
            nonlocal relayed
            for i in ids:
                mid = b"Message-ID: <%s-%d-%d@sender.test>\r\n" % (mode.encode(), rnd, i)
                result = await pool.send("a@sender.test", ["r@example.test"], mid + BODY)
                relayed += result.kind is OutcomeKind.RELAYED

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - began
    assert relayed == MESSAGES
    return MESSAGES / elapsed


@pytest.mark.timeout(120)
def test_pipelining_pays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(NodePool, "pipelining", True)  # restored after the test
    stats = tmp_path / "sink.json"
    sink = subprocess.Popen(
        [sys.executable, "-m", "engine.sink", "--stats", str(stats)], stdout=subprocess.PIPE
    )
    try:
        assert sink.stdout is not None
        port = int(sink.stdout.readline())
        rates: dict[str, list[float]] = {"off": [], "on": []}

        async def scenario() -> None:
            for rnd in range(2):
                for mode in ("off", "on"):
                    rates[mode].append(await _rate(port, mode, rnd))

        uvloop.run(scenario())
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(timeout=10)
        if sink.stdout is not None:
            sink.stdout.close()
    doc = json.loads(stats.read_text())
    best = {mode: max(r) for mode, r in rates.items()}
    print(
        f"\nrelay pool → sink process, {CONNECTIONS} connections, 3 KB: "
        f"pipelining off {best['off']:.0f} msg/s, on {best['on']:.0f} msg/s "
        f"(×{best['on'] / best['off']:.2f}; all rounds: {rates})"
    )
    assert doc["messages"] == 4 * (MESSAGES + 8)
    assert doc["duplicates"] == 0
    # It must at least not be slower; it is typically twice as fast on a 2-core machine.
    assert best["on"] > best["off"]
