"""Signing off the event loop: a small thread pool around :func:`engine.dkim.sign.sign_message`.

The RSA private-key operation is ~0.7 ms of OpenSSL time per message at 2048 bits, during which
OpenSSL releases the GIL. Run inline it would stall the relay loop; in a pool of one thread per
core it both frees the loop and uses every core (pure-Python signing could do neither).
Ed25519 signatures are ~40 µs, so for Ed25519-only senders the hand-off costs about as much as
it saves; the daemon may call :func:`~engine.dkim.sign.sign_message` inline for those.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

from engine.dkim.sign import SigningKey, sign_message

_MAX_SLICE = 16
_Request = tuple[bytes, Sequence[SigningKey], bytes | None, int | None, "asyncio.Future[bytes]"]
_Result = tuple[bytes | None, BaseException | None]


def _sign_slice(part: Sequence[_Request]) -> list[_Result]:
    """In a worker thread: sign each request; an error belongs to its own message only."""
    out: list[_Result] = []
    for message, keys, body_hash, timestamp, _ in part:
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
    """Worker threads that DKIM-sign messages; ``sign()`` is thread-safe, so no locking here."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._executor = ThreadPoolExecutor(
            max_workers=self.workers, thread_name_prefix="dkim-sign"
        )
        self._pending: list[_Request] = []

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
    ) -> bytes:
        """Awaitable :func:`~engine.dkim.sign.sign_message` that never blocks the event loop.

        Requests made in the same turn of the event loop (the dispatcher starts a batch of jobs
        at once) are handed to the threads as a few slices, not one future each: a
        ``concurrent.futures.Future`` and a thread-safe wake-up of the loop per message were a
        real share of the loop thread's time at 2,000 messages a second.
        """
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bytes] = loop.create_future()
        self._pending.append((message, keys, body_hash, timestamp, waiter))
        if len(self._pending) == 1:
            loop.call_soon(self._flush, loop)
        return await waiter

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        pending, self._pending = self._pending, []
        # Enough slices to keep every thread busy, small enough that the first results come
        # back within a few signatures' time.
        step = max(1, min(_MAX_SLICE, -(-len(pending) // self.workers)))
        for i in range(0, len(pending), step):
            part = pending[i : i + step]
            try:
                done = asyncio.wrap_future(self._executor.submit(_sign_slice, part), loop=loop)
            except RuntimeError as exc:  # the pool was closed
                for *_, waiter in part:
                    if not waiter.done():
                        waiter.set_exception(exc)
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
        """Finish queued signatures and stop the threads."""
        self._executor.shutdown(wait=True)

    def __enter__(self) -> SignerPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
