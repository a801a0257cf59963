"""Signing off the event loop: worker threads or worker processes around
:func:`engine.dkim.sign.sign_message`.

The RSA private-key operation is the largest CPU cost of a message at 2048 bits (its time per
host: bench/README.md), and OpenSSL releases the GIL while it runs. Run inline it would stall
the relay loop; in a pool of one worker per core it both frees the loop and uses every
core (pure-Python signing could do neither).

Processes (``processes=True``; the daemon's default, ``[dkim] signer = "process"``) take the
signing off the daemon's GIL altogether: a signer thread must re-take the GIL after every RSA
operation and for its share of Python work, and with the loop thread busy it waits for it,
so processes send more where RSA is a large share of the work (bench/README.md). A worker process
gets the key as PEM (and keeps it parsed), signs, and sends back only the DKIM-Signature fields;
one that dies is replaced and the slices it held are signed again. Threads are the lighter
choice (no interpreter per worker; docs/dkim.md gives its memory).
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

from engine.dkim.procs import Request as _Request
from engine.dkim.procs import SignerProcesses, Split, fail
from engine.dkim.sign import SigningKey, sign_message

_MAX_SLICE = 16
_Result = tuple[bytes | None, BaseException | None]


def _sign_slice(part: Sequence[_Request]) -> list[_Result]:
    """In a worker thread: sign each request; an error belongs to its own message only."""
    out: list[_Result] = []
    for message, keys, body_hash, timestamp, _, _ in part:
        try:
            signed = sign_message(message, keys, body_hash=body_hash, timestamp=timestamp)
            out.append((signed, None))
        except Exception as exc:
            out.append((None, exc))
    return out


def _settle(part: Sequence[_Request], done: asyncio.Future[list[_Result]]) -> None:
    """On the loop: hand each waiter its signed message or its error."""
    if done.cancelled():
        results: list[_Result] = [(None, asyncio.CancelledError())] * len(part)
    elif (exc := done.exception()) is not None:
        results = [(None, exc)] * len(part)
    else:
        results = done.result()
    for (*_, waiter), (signed, error) in zip(part, results, strict=True):
        if waiter.done():  # its task was cancelled meanwhile
            continue
        if error is not None:
            waiter.set_exception(error)
        else:
            assert signed is not None
            waiter.set_result(signed)


class SignerPool:
    """Workers that DKIM-sign messages: threads (``sign()`` is thread-safe) or, with
    ``processes=True``, processes for :meth:`sign_message` (the other methods use threads)."""

    def __init__(self, workers: int | None = None, *, processes: bool = False) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._executor = ThreadPoolExecutor(
            max_workers=self.workers, thread_name_prefix="dkim-sign"
        )
        self._procs = SignerProcesses(self.workers) if processes else None
        self._pending: list[_Request] = []

    async def start(self) -> None:
        """Start the worker processes now (a no-op for threads), not at the first signature:
        spawning an interpreter per worker takes a noticeable part of a second (more without
        compiled bytecode), which the first messages after a start would wait."""
        if self._procs is not None:
            await self._procs.start()

    def submit(
        self,
        message: bytes,
        keys: Sequence[SigningKey],
        *,
        body_hash: bytes | None = None,
        timestamp: int | None = None,
    ) -> Future[bytes]:
        """Sign in a worker thread; the future yields the signed message (or raises DkimError)."""
        return self._executor.submit(
            sign_message, message, keys, body_hash=body_hash, timestamp=timestamp
        )

    async def sign_message(
        self,
        message: bytes,
        keys: Sequence[SigningKey],
        *,
        body_hash: bytes | None = None,
        timestamp: int | None = None,
        split: Split | None = None,
    ) -> bytes:
        """Awaitable :func:`~engine.dkim.sign.sign_message` that never blocks the event loop.

        ``split`` (with ``body_hash``): ``message`` is its first ``split[0]`` octets, then the
        header block ``split[1]`` shared by many messages, then CRLF and the body; a signer
        process parses the shared block once.

        Requests made in the same turn of the event loop (the dispatcher starts a batch of jobs
        at once) are handed to the threads as a few slices, not one future each: a
        ``concurrent.futures.Future`` and a thread-safe wake-up of the loop per message were a
        real share of the loop thread's time at 2,000 messages a second.
        """
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bytes] = loop.create_future()
        self._pending.append((message, keys, body_hash, timestamp, split, waiter))
        if len(self._pending) == 1:
            loop.call_soon(self._flush, loop)
        return await waiter

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        pending, self._pending = self._pending, []
        # Enough slices to keep every worker busy, small enough that the first results come
        # back within a few signatures' time.
        step = max(1, min(_MAX_SLICE, -(-len(pending) // self.workers)))
        if self._procs is not None:
            # A slice goes to a process with its keys, so it holds messages of one key set.
            by_keys: dict[int, list[_Request]] = {}
            for request in pending:
                by_keys.setdefault(id(request[1]), []).append(request)
            for group in by_keys.values():
                for i in range(0, len(group), step):
                    self._procs.submit(group[i : i + step])
            return
        for i in range(0, len(pending), step):
            part = pending[i : i + step]
            try:
                done = asyncio.wrap_future(self._executor.submit(_sign_slice, part), loop=loop)
            except RuntimeError as exc:  # the pool was closed
                fail(part, exc)
                continue
            done.add_done_callback(functools.partial(_settle, part))

    def sign_many(
        self,
        messages: Sequence[bytes],
        keys: Sequence[SigningKey],
        *,
        body_hash: bytes | None = None,
        timestamp: int | None = None,
    ) -> list[bytes]:
        """Sign a batch across all workers, results in input order (blocking; for batch jobs).

        One task per slice rather than per message: a future per message costs tens of
        microseconds of GIL-holding bookkeeping, a real share of an Ed25519 signature.
        """

        def run(part: Sequence[bytes]) -> list[bytes]:
            return [sign_message(m, keys, body_hash=body_hash, timestamp=timestamp) for m in part]

        step = max(1, -(-len(messages) // (self.workers * 4)))
        futures = [
            self._executor.submit(run, messages[i : i + step])
            for i in range(0, len(messages), step)
        ]
        return [signed for f in futures for signed in f.result()]

    def close(self) -> None:
        """Finish queued signatures and stop the threads; close the processes' input (each
        ends once it has answered what it holds; :meth:`aclose` also waits for that)."""
        self._executor.shutdown(wait=True)
        if self._procs is not None:
            self._procs.close()

    async def aclose(self) -> None:
        """:meth:`close`, then wait until the worker processes have ended."""
        self.close()
        if self._procs is not None:
            await self._procs.wait_closed()

    def __enter__(self) -> SignerPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> SignerPool:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
