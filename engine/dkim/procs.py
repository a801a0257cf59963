"""DKIM signer processes driven by the event loop itself (``[dkim] signer = "process"``).

Each worker is ``python -m engine.dkim.worker`` with a pipe each way (:mod:`engine.dkim.worker`
has the frames). The loop writes a slice to the least busy worker and a reader task per worker
settles the slices in order as their answers come: no helper threads taking the daemon's GIL
for every slice, as ``ProcessPoolExecutor``'s manager and queue feeder threads do (they cost
memory and buy no throughput).

A worker that dies (killed, out of memory) is replaced; the slices it held go to the others (or
to the replacement) once more. Signing twice is harmless: a result never came back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Coroutine, Sequence
from typing import Any

import msgspec
from cryptography.hazmat.primitives import serialization

from engine.dkim.canon import split_message
from engine.dkim.sign import SigningKey, prepend_fields
from engine.dkim.worker import MAX_KEYS, Fields, KeySpec
from engine.errors import DkimError
from engine.workerpipe import frame
from engine.workerspawn import await_ready, start_worker

log = logging.getLogger("engine.dkim")

#: How a message is made: its per-recipient fields (so many octets), then a header block many
#: messages share, then the empty line and the body.
Split = tuple[int, bytes]
#: message, keys, body hash, timestamp, its split (or None), the caller's future.
Request = tuple[
    bytes, Sequence[SigningKey], bytes | None, int | None, Split | None, "asyncio.Future[bytes]"
]
_Slice = tuple[list[Request], int]  # the requests and the attempt (1, then 2 after a death)
_decode = msgspec.msgpack.Decoder(list[tuple[bytes | None, str | None]]).decode
_encode = msgspec.msgpack.Encoder().encode


class _Worker:
    __slots__ = ("inflight", "outbox", "proc", "reader")

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.inflight: deque[_Slice] = deque()
        self.outbox: list[bytes] = []  # frames of this turn of the loop, written together
        self.reader: asyncio.Task[None] | None = None

    def send(self) -> None:
        """Write the frames submitted this turn in one write (one pipe write per worker for
        a whole batch, not one per slice; the worker still answers slice by slice)."""
        stdin = self.proc.stdin
        data, self.outbox = b"".join(self.outbox), []
        if data and stdin is not None and not stdin.is_closing():
            stdin.write(data)


class SignerProcesses:
    """``count`` worker processes; :meth:`submit` hands them one-key-set slices."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.workers: list[_Worker] = []
        self._specs: dict[SigningKey, KeySpec] = {}
        self._waiting: list[_Slice] = []  # while no worker is up
        self._spawning = 0
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()  # spawns in the background

    async def start(self) -> None:
        """Start every worker (before the first signature: spawning takes about a second)."""
        await asyncio.gather(*(self._spawn() for _ in range(self.count - len(self.workers))))

    async def _spawn(self) -> None:
        self._spawning += 1
        try:
            proc = await start_worker("engine.dkim.worker")
            # Ready: imported, and SIGTERM ignored (the daemon's drain must not kill it).
            await await_ready(proc, "DKIM signer")
        except OSError as exc:
            log.error("cannot start a DKIM signer process", extra={"error": str(exc)})
            self._fail_waiting(f"cannot start a DKIM signer process: {exc}")
            return
        finally:
            self._spawning -= 1
        worker = _Worker(proc)
        if self._closed:  # closed while it started
            self._close_worker(worker)
            await self._reap(worker)
            return
        worker.reader = asyncio.create_task(self._read(worker))
        self.workers.append(worker)
        waiting, self._waiting = self._waiting, []
        for part, attempt in waiting:
            self.submit(part, attempt)

    def submit(self, part: list[Request], attempt: int = 1) -> None:
        """Send one slice (its requests share one key set) to the least busy worker."""
        if self._closed:
            fail(part, DkimError("DKIM signer processes unavailable: the pool is closed"))
            return
        if not self.workers:
            self._waiting.append((part, attempt))
            if not self._spawning:
                self._background_spawn()
            return
        worker = min(self.workers, key=lambda w: len(w.inflight))
        specs = [self._spec(key) for key in part[0][1]]
        # With the body hash given, the worker reads only the header block: the body stays
        # here; with a split, the shared head goes as it is (one bytes object for a campaign)
        # and the worker parses it once.
        items = [
            (message, bh, ts, None)
            if bh is None
            else (message[: split_message(message)[1]], bh, ts, None)
            if split is None
            else (message[: split[0]], bh, ts, split[1])
            for message, _, bh, ts, split, _ in part
        ]
        worker.inflight.append((part, attempt))
        worker.outbox.append(frame(_encode((specs, items))))
        if len(worker.outbox) == 1:
            asyncio.get_running_loop().call_soon(worker.send)

    async def _read(self, worker: _Worker) -> None:
        stdout = worker.proc.stdout
        assert stdout is not None
        try:
            while True:
                head = await stdout.readexactly(4)
                results = _decode(await stdout.readexactly(int.from_bytes(head, "big")))
                part, _ = worker.inflight.popleft()
                _settle(part, results)
        except (asyncio.IncompleteReadError, ConnectionError, msgspec.DecodeError) as exc:
            self._lost(worker, exc)

    def _lost(self, worker: _Worker, exc: BaseException) -> None:
        """A worker's output ended: it died, or was closed. Its slices go elsewhere, once."""
        if worker in self.workers:
            self.workers.remove(worker)
        worker.outbox.clear()  # their slices are in inflight, sent elsewhere below
        self._close_worker(worker)
        self._background(self._reap(worker))
        if self._closed:
            for part, _ in worker.inflight:
                fail(part, DkimError("DKIM signer processes unavailable: the pool is closed"))
            return
        log.warning("DKIM signer process died; starting another", extra={"error": repr(exc)})
        self._background_spawn()
        for part, attempt in worker.inflight:
            if attempt == 1:
                self.submit(part, 2)
            else:
                fail(part, DkimError("DKIM signer process died twice with these messages"))
        worker.inflight.clear()

    def _background_spawn(self) -> None:
        self._background(self._spawn())

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _reap(worker: _Worker) -> None:
        """Wait for a worker that is gone (its exit status, and its pipes closed)."""
        with contextlib.suppress(ProcessLookupError):
            worker.proc.kill()  # it may only have closed its output
        await worker.proc.wait()

    def _spec(self, key: SigningKey) -> KeySpec:
        spec = self._specs.get(key)
        if spec is None:
            if len(self._specs) >= MAX_KEYS:
                self._specs.clear()
            pem = key.private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            spec = self._specs[key] = (pem, key.domain, key.selector)
        return spec

    def _fail_waiting(self, why: str) -> None:
        waiting, self._waiting = self._waiting, []
        for part, _ in waiting:
            fail(part, DkimError(why))

    @staticmethod
    def _close_worker(worker: _Worker) -> None:
        # EOF on its stdin ends the worker once it has answered what it holds.
        worker.send()
        stdin = worker.proc.stdin
        if stdin is not None:
            with contextlib.suppress(Exception):
                stdin.close()

    def close(self) -> None:
        """Close every worker's input: each ends after answering what it holds."""
        self._closed = True
        for worker in self.workers:
            self._close_worker(worker)
        self._fail_waiting("DKIM signer processes unavailable: the pool is closed")

    async def wait_closed(self) -> None:
        """After :meth:`close`: wait until every worker has answered and ended."""
        for worker in list(self.workers):
            if worker.reader is not None:
                with contextlib.suppress(Exception):
                    await worker.reader  # ends at the worker's EOF, after its last answers
        while self._tasks:  # spawns, and the reaping of every worker that ended
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.workers.clear()

    def pids(self) -> list[int]:
        """The workers' process ids (for tests and diagnostics)."""
        return [w.proc.pid for w in self.workers]


def _settle(part: list[Request], results: list[Fields]) -> None:
    for (message, *_, waiter), (fields, error) in zip(part, results, strict=True):
        if waiter.done():  # its task was cancelled meanwhile
            continue
        if error is not None:
            waiter.set_exception(DkimError(error))
        else:
            assert fields is not None
            waiter.set_result(prepend_fields(fields, message))


def fail(part: Sequence[Request], error: BaseException) -> None:
    """Every caller of ``part`` still waiting gets ``error``."""
    for *_, waiter in part:
        if not waiter.done():
            waiter.set_exception(error)
