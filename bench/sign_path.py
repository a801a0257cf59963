"""``python -m bench.sign_path [--messages N] [--json]``: the per-message path from a composed
body to the relay's answer, alone, with its real I/O: render (as the dispatcher does), DKIM
(RSA-2048) in two signer processes, the relay pool (16 connections, PIPELINING + DATA) to
``engine.sink`` in its own process. No queue, no database.

CPU milliseconds per message of this process (the event loop: compose, signer IPC, relay) and
of the signer processes, from ``/proc``, over N messages with 512 in flight (after 500 to warm
up), and one RSA-2048 signature's CPU time measured here (best quarter of 400), so
``signers_non_rsa_ms`` is their own work. Steadier than ``bench e2e`` for changes to these
modules: PostgreSQL, Redis and the dispatcher's other work are not in the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import orjson
import uvloop
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bench.e2e import _PARA
from engine.compose import message_id as message_ids
from engine.compose import verp_keys
from engine.compose.mime import build_body, effective_message_id, render
from engine.compose.unsubscribe import feedback_id
from engine.config.schema import InboundConfig, RelayConfig, RelayNode
from engine.dispatch.signing import DkimSigner
from engine.dkim.keys import KeyRing
from engine.dkim.pool import SignerPool
from engine.dkim.sign import dkim_selectors, load_signing_key
from engine.model import Content, OutcomeKind
from engine.relay.pool import RelayPool

DOMAIN = "bench.penguinmails.test"


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rsa_ms(key: rsa.RSAPrivateKey, rounds: int = 400) -> float:
    best = float("inf")
    for _ in range(4):
        t0 = time.thread_time()
        for _ in range(rounds // 4):
            key.sign(b"x" * 600, padding.PKCS1v15(), hashes.SHA256())
        best = min(best, (time.thread_time() - t0) * 1000 / (rounds // 4))
    return best


async def measure(messages: int) -> dict[str, Any]:
    sink = subprocess.Popen(
        [sys.executable, "-m", "engine.sink", "--no-chunking"], stdout=subprocess.PIPE
    )
    assert sink.stdout is not None
    port = int(sink.stdout.readline())
    inbound = InboundConfig(verp_secret="b" * 40, verp_domain="bounces.penguinmails.test")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    ring = KeyRing(required=True)
    ring.add(load_signing_key(pem, domain=DOMAIN, selector="s1"))
    pool = SignerPool(2, processes=True)
    await pool.start()
    signer = DkimSigner(ring, pool)
    node = RelayNode(name="sink", host="127.0.0.1", port=port, tls="none", max_connections=16)
    relay = RelayPool(RelayConfig(nodes=[node], dsn=False))
    await relay.start(health_checks=False)
    body = build_body(
        Content(
            from_=f"news@{DOMAIN}",
            subject="Your monthly PenguinMails update",
            text=_PARA * 12,
            list_unsubscribe="https://u.penguinmails.test/x",
        )
    )
    slots = asyncio.Semaphore(512)

    async def one(i: int) -> None:
        # The dispatcher's steps for one job of a campaign (engine/dispatch/worker.py).
        async with slots:
            mid = effective_message_id(body, message_ids.make(i, "bench", DOMAIN))
            extra = [("Feedback-ID", feedback_id("bench", "bench", DOMAIN))]
            message = render(
                body, to=f"user{i}@example.com", message_id=mid, date=None, extra_headers=extra
            )
            envelope_from = verp_keys.encode(i, inbound)
            message = await signer.sign("bench", DOMAIN, message, body)
            dkim_selectors(message)
            result = await relay.send(envelope_from, f"user{i}@example.com", message)
            if result.kind is not OutcomeKind.RELAYED:
                raise RuntimeError(f"not relayed: {result.reply}")

    try:
        await asyncio.gather(*(one(i) for i in range(500)))
        assert pool._procs is not None
        pids = pool._procs.pids()
        cpu0, workers0, t0 = time.process_time(), [_cpu_s(p) for p in pids], time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(1000, 1000 + messages)))
        wall = time.perf_counter() - t0
        cpu1, workers1 = time.process_time(), [_cpu_s(p) for p in pids]
    finally:
        await relay.close()
        await pool.aclose()
        sink.terminate()
        sink.wait()
    loop_ms = (cpu1 - cpu0) * 1000 / messages
    signers_ms = sum(b - a for a, b in zip(workers0, workers1, strict=True)) * 1000 / messages
    rsa_ms = _rsa_ms(key)
    return {
        "messages": messages,
        "msg_s": round(messages / wall, 1),
        "loop_cpu_ms": round(loop_ms, 4),
        "signers_cpu_ms": round(signers_ms, 4),
        "rsa_sign_ms": round(rsa_ms, 4),
        "signers_non_rsa_ms": round(signers_ms - rsa_ms, 4),
        "non_rsa_ms": round(loop_ms + signers_ms - rsa_ms, 4),
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.sign_path")
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    result = uvloop.run(measure(args.messages))
    if args.json:
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
    else:
        for name, value in result.items():
            sys.stdout.write(f"{name:>20}: {value}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
