"""Signing off the event loop: worker threads or worker processes around
:func:`engine.dkim.sign.sign_message`.

The RSA private-key operation is ~0.26 ms of OpenSSL time per message at 2048 bits (AMD EPYC,
2026), during which OpenSSL releases the GIL. Run inline it would stall the relay loop; in a pool
of one worker per core it both frees the loop and uses every core (pure-Python signing could do
neither).

Threads (``processes=False``, the daemon's default) are the simple choice. Processes (``[dkim]
signer = "process"``) take the signing off the daemon's GIL altogether: a signer thread must
re-take the GIL after every RSA operation and for its share of Python work, and with the loop
thread busy it waits for it. At full load that pays (e2e bench: median +9% msg/s over 13
interleaved pairs); at half load the latency tail grows (p99 320–650 ms against ~80: every slice
passes through ``ProcessPoolExecutor``'s helper threads, a few slices at a time). A worker
process gets the key as PEM with each slice (and keeps the parsed key), signs, and sends back
only the DKIM-Signature fields; one that dies breaks the pool, which is then made again and the
lost slices signed once more.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import os
import signal
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from types import TracebackType

from cryptography.hazmat.primitives import serialization

from engine.dkim.sign import SigningKey, load_signing_key, prepend_fields, sign, sign_message
from engine.errors import DkimError

log = logging.getLogger("engine.dkim")

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


def _fail(part: Sequence[_Request], error: BaseException) -> None:
    for *_, waiter in part:
        if not waiter.done():
            waiter.set_exception(error)


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


# -- worker processes ----------------------------------------------------------------------------

#: What a worker process needs to rebuild a key: PEM (PKCS#8), domain, selector.
_KeySpec = tuple[bytes, str, str]
#: One message for a worker process: the message, its body hash (or None), the timestamp.
_Item = tuple[bytes, bytes | None, int | None]
#: The DKIM-Signature field(s), or why not (as text: an exception that does not unpickle in the
#: daemon would break the whole pool).
_Fields = tuple[bytes | None, str | None]
#: Keys parsed in this worker process (parsing a PEM costs more than a signature).
_worker_keys: dict[_KeySpec, SigningKey] = {}
_MAX_KEYS = 1024  # in either cache; rotation retires keys, so the caches are only ever trimmed


def _worker_init() -> None:
    """In a new worker process: leave SIGINT/SIGTERM to the daemon, which drains and then shuts
    the pool down (a Ctrl-C reaches the whole process group)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _sign_fields(specs: tuple[_KeySpec, ...], items: Sequence[_Item]) -> list[_Fields]:
    """In a worker process: the DKIM-Signature field(s) for each message, errors kept apart."""
    try:
        keys = [_worker_key(spec) for spec in specs]
    except Exception as exc:
        return [(None, _text(exc))] * len(items)
    out: list[_Fields] = []
    for message, body_hash, timestamp in items:
        try:
            out.append((sign(message, keys, body_hash=body_hash, timestamp=timestamp), None))
        except Exception as exc:
            out.append((None, _text(exc)))
    return out


def _worker_key(spec: _KeySpec) -> SigningKey:
    key = _worker_keys.get(spec)
    if key is None:
        if len(_worker_keys) >= _MAX_KEYS:
            _worker_keys.clear()
        key = _worker_keys[spec] = load_signing_key(spec[0], domain=spec[1], selector=spec[2])
    return key


def _ready() -> int:
    """In a worker process: nothing (the imports are done); proves the worker is up."""
    return os.getpid()


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class SignerPool:
    """Workers that DKIM-sign messages: threads (``sign()`` is thread-safe) or, with
    ``processes=True``, processes for :meth:`sign_message` (the other methods use threads)."""

    def __init__(self, workers: int | None = None, *, processes: bool = False) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._executor = ThreadPoolExecutor(
            max_workers=self.workers, thread_name_prefix="dkim-sign"
        )
        self.processes = processes
        self._procs: ProcessPoolExecutor | None = None
        self._specs: dict[SigningKey, _KeySpec] = {}
        self._closed = False
        self._pending: list[_Request] = []

    async def start(self) -> None:
        """Start the worker processes now (a no-op for threads), not at the first signature.

        Spawning takes about a second on a small box; done lazily, the first messages after a
        start waited for it (p99 of the latency bench: 481 ms instead of ~85).
        """
        if not self.processes:
            return
        loop = asyncio.get_running_loop()
        procs = self._process_pool()
        # One task per worker, submitted together: each finds no idle worker and spawns one.
        await asyncio.gather(
            *(asyncio.wrap_future(procs.submit(_ready), loop=loop) for _ in range(self.workers))
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
        # Enough slices to keep every worker busy, small enough that the first results come
        # back within a few signatures' time.
        step = max(1, min(_MAX_SLICE, -(-len(pending) // self.workers)))
        if self.processes:
            # A slice goes to a process with its keys, so it holds messages of one key set.
            by_keys: dict[int, list[_Request]] = {}
            for request in pending:
                by_keys.setdefault(id(request[1]), []).append(request)
            for group in by_keys.values():
                for i in range(0, len(group), step):
                    self._submit_fields(loop, group[i : i + step], attempt=1)
            return
        for i in range(0, len(pending), step):
            part = pending[i : i + step]
            try:
                done = asyncio.wrap_future(self._executor.submit(_sign_slice, part), loop=loop)
            except RuntimeError as exc:  # the pool was closed
                _fail(part, exc)
                continue
            done.add_done_callback(functools.partial(_settle, part))

    def _submit_fields(
        self, loop: asyncio.AbstractEventLoop, part: list[_Request], *, attempt: int
    ) -> None:
        """Hand one slice to a worker process; :meth:`_settle_fields` gets the result."""
        specs = tuple(self._spec(key) for key in part[0][1])
        items = [(message, bh, ts) for message, _, bh, ts, _ in part]
        try:
            try:
                procs = self._process_pool()
                future = procs.submit(_sign_fields, specs, items)
            except BrokenProcessPool:  # a worker died while the pool was idle: a new pool
                log.warning("DKIM signer process died; restarting the pool")
                self._drop_process_pool(procs)
                procs = self._process_pool()
                future = procs.submit(_sign_fields, specs, items)
        except (RuntimeError, BrokenProcessPool) as exc:  # closed, or broken again at once
            _fail(part, DkimError(f"DKIM signer processes unavailable: {_text(exc)}"))
            return
        done = asyncio.wrap_future(future, loop=loop)
        done.add_done_callback(functools.partial(self._settle_fields, loop, part, attempt, procs))

    def _settle_fields(
        self,
        loop: asyncio.AbstractEventLoop,
        part: list[_Request],
        attempt: int,
        procs: ProcessPoolExecutor,
        done: asyncio.Future[list[_Fields]],
    ) -> None:
        """On the loop: each waiter gets its signed message or a DkimError."""
        # Cancelled only by the shutdown of a broken pool: the same case as a broken pool (a
        # CancelledError would cancel the job's task instead of deferring the job).
        exc = (
            BrokenProcessPool("the signer pool was shut down")
            if done.cancelled()
            else done.exception()
        )
        if isinstance(exc, BrokenProcessPool) and attempt == 1 and not self._closed:
            # A worker died (killed, out of memory): the pool is unusable. Make a new one and
            # sign this slice again (signing twice is harmless; the first result never came).
            # Every slice of the broken pool comes here: only the first replaces it.
            if self._procs is procs:
                log.warning(
                    "DKIM signer process died; restarting the pool", extra={"error": str(exc)}
                )
            self._drop_process_pool(procs)
            self._submit_fields(loop, part, attempt=2)
            return
        if exc is not None:
            _fail(part, DkimError(f"DKIM signer process failed: {_text(exc)}"))
            return
        for (message, *_, waiter), (fields, error) in zip(part, done.result(), strict=True):
            if waiter.done():  # its task was cancelled meanwhile
                continue
            if error is not None:
                waiter.set_exception(DkimError(error))
            else:
                assert fields is not None
                waiter.set_result(prepend_fields(fields, message))

    def _spec(self, key: SigningKey) -> _KeySpec:
        spec = self._specs.get(key)
        if spec is None:
            if len(self._specs) >= _MAX_KEYS:
                self._specs.clear()
            pem = key.private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            spec = self._specs[key] = (pem, key.domain, key.selector)
        return spec

    def _process_pool(self) -> ProcessPoolExecutor:
        if self._closed:
            raise RuntimeError("the signer pool is closed")
        if self._procs is None:
            # spawn, not fork: the daemon has threads and an event loop a fork would copy.
            self._procs = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
            )
        return self._procs

    def _drop_process_pool(self, broken: ProcessPoolExecutor) -> None:
        """Forget ``broken`` (if it is still the current pool) so the next submit makes one."""
        if self._procs is broken:
            self._procs = None
            broken.shutdown(wait=False, cancel_futures=True)

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
        """Finish queued signatures and stop the threads and processes."""
        self._closed = True
        self._executor.shutdown(wait=True)
        procs, self._procs = self._procs, None
        if procs is not None:
            procs.shutdown(wait=True)

    def __enter__(self) -> SignerPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
