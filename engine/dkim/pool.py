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


class SignerPool:
    """Worker threads that DKIM-sign messages; ``sign()`` is thread-safe, so no locking here."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._executor = ThreadPoolExecutor(
            max_workers=self.workers, thread_name_prefix="dkim-sign"
        )

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
        """Awaitable :func:`~engine.dkim.sign.sign_message` that never blocks the event loop."""
        loop = asyncio.get_running_loop()
        call = functools.partial(
            sign_message, message, keys, body_hash=body_hash, timestamp=timestamp
        )
        return await loop.run_in_executor(self._executor, call)

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
