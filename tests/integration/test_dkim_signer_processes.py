"""``SignerPool(processes=True)``: the daemon's signing in worker processes (spawned for real).

The signatures must be exactly those made in-process, errors must stay with their message, and a
worker that dies must cost a retry, not the messages that were with it.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import time

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization

from engine.compose.mime import build_body, render
from engine.dispatch.signing import message_split
from engine.dkim import worker
from engine.dkim.canon import body_hash, split_message
from engine.dkim.pool import SignerPool
from engine.dkim.sign import sign_message
from engine.errors import DkimError
from engine.model import Content
from tests.unit.dkim_support import dkimpy_verify_all, key
from tests.unit.test_dkim_sign import MESSAGE

pytestmark = pytest.mark.timeout(120)

TS = 1_700_000_000


def numbered(i: int, message: bytes = MESSAGE) -> bytes:
    return message.replace(b"<1@", f"<{i}@".encode())


def worker_pids(pool: SignerPool) -> list[int]:
    assert pool._procs is not None
    return pool._procs.pids()


async def test_same_signatures_as_in_process_for_every_key_set_in_one_turn() -> None:
    rsa, ed = key("rsa", 2048, "example.com", "rsa1"), key("ed25519", 256, "example.com", "ed1")
    other = key(domain="other.example", selector="s2")
    lf = numbered(7).replace(b"\r\n", b"\n")
    requests = [(numbered(i), (rsa,)) for i in range(40)]
    requests += [(numbered(100 + i), (rsa, ed)) for i in range(5)]  # dual signing
    requests += [(numbered(200), (other,)), (lf, (rsa,))]
    async with SignerPool(2, processes=True) as pool:
        signed = await asyncio.gather(
            *(pool.sign_message(m, list(keys), timestamp=TS) for m, keys in requests)
        )
    for (message, keys), out in zip(requests, signed, strict=True):
        assert out == sign_message(message, list(keys), timestamp=TS)  # RSA PKCS#1 is stable
    assert dkimpy_verify_all(signed[0], rsa) == [True]
    assert dkimpy_verify_all(signed[40], rsa, ed) == [True, True]
    assert b"\r\n" not in signed[-1]  # an LF message gets LF fields


async def test_a_rendered_campaign_message_signs_the_same_with_its_head_shared() -> None:
    # The dispatcher's path: messages rendered from one ComposedBody go with their split (own
    # fields, the shared head); the signatures are those made over the whole message.
    rsa = key("rsa", 2048, "example.com", "rsa1")
    content = Content(from_="news@example.com", subject="Hello", text="Hi there.\n")
    body = build_body(content)
    messages = [
        render(body, to=f"u{i}@example.org", message_id=f"<{i}@example.com>", date=None)
        for i in range(6)
    ]
    bh = body_hash(body.body)
    splits = [message_split(m, body) for m in messages]
    assert all(s is not None and s[1] is body.head for s in splits)
    async with SignerPool(2, processes=True) as pool:
        signed = await asyncio.gather(
            *(
                pool.sign_message(m, [rsa], body_hash=bh, timestamp=TS, split=s)
                for m, s in zip(messages, splits, strict=True)
            )
        )
    for message, out in zip(messages, signed, strict=True):
        assert out == sign_message(message, [rsa], timestamp=TS)
        assert dkimpy_verify_all(out, rsa) == [True]
    # A message not made from the body has no split: it is signed whole.
    assert message_split(messages[0] + b"tail", body) is None
    assert message_split(b"X: y\r\n" + body.head + b"\r\n" + body.body[:-1] + b"!", body) is None


async def test_a_campaign_body_hash_signs_the_same_with_only_headers_sent() -> None:
    # With the body hash given, only the header block crosses the pipe; the signature is the one
    # made in-process over the whole message, and it verifies (CRLF and LF messages alike).
    rsa = key("rsa", 2048, "example.com", "rsa1")
    messages = [numbered(i) for i in range(6)] + [numbered(9).replace(b"\r\n", b"\n")]
    async with SignerPool(2, processes=True) as pool:
        signed = await asyncio.gather(
            *(
                pool.sign_message(
                    m, [rsa], body_hash=body_hash(m[split_message(m)[1] :]), timestamp=TS
                )
                for m in messages
            )
        )
    for message, out in zip(messages, signed, strict=True):
        assert out == sign_message(message, [rsa], timestamp=TS)
        assert out.endswith(message)  # the body is the one the daemon kept
        assert dkimpy_verify_all(out, rsa) == [True]


async def test_an_unsignable_message_fails_alone() -> None:
    k = key()
    async with SignerPool(2, processes=True) as pool:
        good = [asyncio.create_task(pool.sign_message(numbered(i), [k])) for i in range(10)]
        bad = asyncio.create_task(pool.sign_message(b"no header separator", [k]))
        assert all(await asyncio.gather(*good))
        with pytest.raises(DkimError, match="header"):
            await bad


async def test_a_worker_killed_mid_slice_costs_a_retry_not_the_messages() -> None:
    k = key()
    async with SignerPool(2, processes=True) as pool:
        assert await pool.sign_message(numbered(0), [k])  # the workers are up
        first = worker_pids(pool)
        # Enough work that both workers are busy when one is killed.
        tasks = [
            asyncio.create_task(pool.sign_message(numbered(i), [k], timestamp=TS))
            for i in range(400)
        ]
        await asyncio.sleep(0.05)
        os.kill(first[0], signal.SIGKILL)
        signed = await asyncio.gather(*tasks)
        assert signed == [sign_message(numbered(i), [k], timestamp=TS) for i in range(400)]
        assert not set(worker_pids(pool)) & {first[0]}


async def test_a_worker_that_died_while_idle_is_replaced() -> None:
    k = key()
    async with SignerPool(1, processes=True) as pool:
        assert await pool.sign_message(numbered(0), [k])
        (pid,) = worker_pids(pool)
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.5)  # the pool notices and starts another
        assert await pool.sign_message(numbered(1), [k])
        assert worker_pids(pool) != [pid]


async def test_workers_ignore_sigterm_and_go_with_the_pool() -> None:
    k = key()
    pool = SignerPool(2, processes=True)
    await pool.start()
    assert await pool.sign_message(numbered(0), [k])
    pids = worker_pids(pool)
    for pid in pids:
        os.kill(pid, signal.SIGTERM)  # the daemon drains on SIGTERM; its signers must not die
    await asyncio.sleep(0.2)
    assert await pool.sign_message(numbered(1), [k])
    assert worker_pids(pool) == pids
    await pool.aclose()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(DkimError, match="unavailable"):
        await pool.sign_message(numbered(2), [k])


async def test_start_spawns_every_worker_before_the_first_signature() -> None:
    async with SignerPool(2, processes=True) as pool:
        assert len(set(worker_pids(pool))) == 2  # started on entering
        assert await pool.sign_message(numbered(0), [key()])
    async with SignerPool(2) as threads:  # nothing to start
        assert threads._procs is None


def test_worker_protocol_answers_each_frame_in_order_and_stops_at_eof() -> None:
    k = key()
    pem = k.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    frames = [
        ([(pem, k.domain, k.selector)], [(numbered(1), None, TS), (b"no separator", None, TS)]),
        ([(b"not a key", "x.example", "s")], [(numbered(2), None, TS)]),
    ]
    data = b""
    for frame in frames:
        body = msgspec.msgpack.encode(frame)
        data += len(body).to_bytes(4, "big") + body
    out = io.BytesIO()
    # Items of three (no shared head): what a daemon started before shared heads sends.
    worker.serve(io.BytesIO(data + b"\0\0"), out)  # a torn length at the end: EOF, no answer
    raw, answers = out.getvalue(), []
    while raw:
        size = int.from_bytes(raw[:4], "big")
        answers.append(msgspec.msgpack.decode(raw[4 : 4 + size]))
        raw = raw[4 + size :]
    assert len(answers) == 2
    (fields, error), (none, why) = answers[0]
    assert error is None and fields + numbered(1) == sign_message(numbered(1), [k], timestamp=TS)
    assert none is None and "header" in why
    assert answers[1][0][0] is None and answers[1][0][1]  # a bad key fails its frame's items


def _gone(pid: int) -> bool:
    """Exited (a zombie waiting for its new parent to reap it counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_workers_end_when_the_daemon_is_killed() -> None:
    # SIGKILL gives the daemon no chance to close anything: the kernel closes its end of each
    # worker's stdin, and EOF ends the worker (no orphans left holding memory).
    script = (
        "import asyncio, os\n"
        "from engine.dkim.pool import SignerPool\n"
        "async def main():\n"
        "    pool = SignerPool(2, processes=True)\n"
        "    await pool.start()\n"
        "    assert pool._procs is not None\n"
        "    print(*pool._procs.pids(), flush=True)\n"
        "    os.kill(os.getpid(), 9)\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == -signal.SIGKILL
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 10
    while not all(_gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(p) for p in pids)
