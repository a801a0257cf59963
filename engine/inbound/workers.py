"""Bounce-parse processes with a hard CPU budget per message, driven by the event loop.

Each worker is ``python -m engine.inbound.parse_worker`` with a pipe each way, as the DKIM signer
processes are (:mod:`engine.dkim.procs`): the parser's regexes hold the GIL, so in a thread of
the daemon one hostile message stalled the whole event loop; in its own process it stalls only
itself. A worker takes one message at a time, so the CPU it uses between a request and its
answer is that message's. The loop reads that CPU (``/proc/<pid>/schedstat``, nanoseconds)
every few milliseconds while it waits, and SIGKILLs the worker once the budget is spent: a C
regex never looks at signals, so nothing inside the worker could stop it. A killed worker is
replaced; its message is reported for quarantine.

A worker that dies on its own (out of memory, a crash in C) gets the message once more on a
fresh worker; a second death quarantines it too. Workers end with the daemon: EOF on their
stdin (the daemon closing it, or the daemon dying).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time

import msgspec

from engine.inbound.evidence import Analysis
from engine.inbound.parse_worker import Reply
from engine.workerpipe import frame
from engine.workerspawn import await_ready, start_worker

log = logging.getLogger("engine.inbound")

#: An answer larger than this is refused and the message quarantined (a parser result is a few
#: kB; this bounds the decoding the event loop does for one message to a few milliseconds).
MAX_REPLY_BYTES = 2 << 20
#: A worker that uses no CPU but does not answer (stopped, starved) is given up on after this
#: many times its budget, and at least ``MIN_WALL_S``.
WALL_FACTOR = 40
MIN_WALL_S = 10.0
_decode = msgspec.msgpack.Decoder(Reply).decode
_TICKS_S = os.sysconf("SC_CLK_TCK")


class ParseOutcome(msgspec.Struct, frozen=True):
    """One message's parse: the analysis, or why the message is to be quarantined."""

    analysis: Analysis | None
    cpu_ms: float
    quarantine: str | None = None  # the reason, when analysis is None
    cause: str | None = None  # budget | crash | error (a metric label), when analysis is None


def cpu_ns(pid: int) -> int:
    """CPU time used so far by process ``pid`` (its main thread: workers have no other)."""
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    with open(f"/proc/{pid}/stat", "rb") as f:  # 10 ms ticks, where schedstat is missing
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // _TICKS_S


class _Worker:
    __slots__ = ("proc",)

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @property
    def pid(self) -> int:
        return self.proc.pid


class _Died(Exception):
    """The worker ended (or was killed) without answering."""

    def __init__(self, why: str, cpu_ms: float = 0.0) -> None:
        super().__init__(why)
        self.why = why
        self.cpu_ms = cpu_ms


class _OverBudget(_Died):
    """The worker used up the message's CPU budget (and is killed)."""


class _TooLarge(_Died):
    """The worker's answer is over :data:`MAX_REPLY_BYTES` (and the worker is killed)."""


class ParseWorkers:
    """``count`` parse processes; :meth:`parse` runs one message on an idle one."""

    def __init__(
        self, count: int, budget_ms: float, module: str = "engine.inbound.parse_worker"
    ) -> None:
        self.count = max(1, count)
        self.module = module  # tests run a wrapper of the real worker
        self.budget_ms = budget_ms
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._all: set[_Worker] = set()
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()  # workers started in the background
        # Poll often enough to stop a runaway within ~a fifth of its budget.
        self._poll_s = min(0.02, max(0.001, budget_ms / 5000))
        self._wall_s = max(MIN_WALL_S, WALL_FACTOR * budget_ms / 1000)

    async def start(self) -> None:
        """Start every worker (spawning one takes ~0.3 s: before the first message)."""
        workers = await asyncio.gather(*(self._spawn() for _ in range(self.count)))
        for worker in workers:
            self._idle.put_nowait(worker)

    async def _spawn(self) -> _Worker:
        proc = await start_worker(self.module)
        worker = _Worker(proc)
        self._all.add(worker)
        try:
            await await_ready(proc, "parse worker")
        except OSError:
            self._all.discard(worker)  # killed and reaped
            raise
        except BaseException:
            self._forget(worker)  # cancelled while it started (the daemon is stopping)
            raise
        return worker

    async def parse(self, raw: bytes, envelope_to: str | None) -> ParseOutcome:
        """Parse one message within the CPU budget (see the module doc for what can happen)."""
        why = ""
        cpu_ms = 0.0
        for _attempt in (1, 2):
            worker = await self._idle.get()
            try:
                reply, cpu_ms = await self._run(worker, raw, envelope_to)
            except _OverBudget as exc:
                await self._replace(worker)
                return ParseOutcome(None, exc.cpu_ms, exc.why, "budget")
            except _TooLarge as exc:
                await self._replace(worker)
                return ParseOutcome(None, exc.cpu_ms, exc.why, "error")
            except _Died as exc:
                why, cpu_ms = exc.why, exc.cpu_ms
                await self._replace(worker)
                log.warning("bounce parse worker died; retrying once", extra={"error": why})
                continue
            except BaseException:
                # Cancelled mid-parse: the worker's state is unknown; replace it off this task.
                self._forget(worker)
                self._background_spawn(0.0)
                raise
            self._idle.put_nowait(worker)
            analysis, error = reply
            if analysis is None:
                return ParseOutcome(None, cpu_ms, f"parser error: {error}", "error")
            return ParseOutcome(analysis, cpu_ms)
        return ParseOutcome(None, cpu_ms, f"parse worker died twice: {why}", "crash")

    async def _run(
        self, worker: _Worker, raw: bytes, envelope_to: str | None
    ) -> tuple[Reply, float]:
        proc = worker.proc
        assert proc.stdin is not None and proc.stdout is not None
        try:
            start = cpu_ns(proc.pid)
        except OSError as exc:
            raise _Died(f"the parse worker is gone ({exc})") from exc
        to = (envelope_to or "").encode("utf-8", "surrogateescape")
        answer = asyncio.ensure_future(_answer(proc.stdout))
        began = time.monotonic()
        used_ms = 0.0
        try:
            proc.stdin.write(frame(to) + len(raw).to_bytes(4, "big"))
            proc.stdin.write(raw)
            while True:
                done, _ = await asyncio.wait({answer}, timeout=self._poll_s)
                with contextlib.suppress(OSError, ValueError):
                    used_ms = (cpu_ns(proc.pid) - start) / 1e6
                if done:
                    return answer.result(), used_ms
                if used_ms > self.budget_ms:
                    raise _OverBudget(
                        f"CPU budget exceeded: {used_ms:.1f} ms > {self.budget_ms:g} ms", used_ms
                    )
                if time.monotonic() - began > self._wall_s:
                    raise _Died(f"no answer after {self._wall_s:g} s", used_ms)
        except _TooLarge as exc:
            raise _TooLarge(exc.why, used_ms) from None
        except (asyncio.IncompleteReadError, ConnectionError, msgspec.DecodeError) as exc:
            await self._kill(worker)
            raise _Died(f"exit status {proc.returncode} ({type(exc).__name__})", used_ms) from None
        finally:
            answer.cancel()

    async def _replace(self, worker: _Worker) -> None:
        await self._kill(worker)
        if self._closed:
            return
        try:
            self._idle.put_nowait(await self._spawn())
        except OSError as exc:
            # Without a worker the next parse would wait for ever: keep trying in the background.
            log.error("cannot start a bounce parse worker", extra={"error": str(exc)})
            self._background_spawn(5.0)

    def _background_spawn(self, delay_s: float) -> None:
        task = asyncio.get_running_loop().create_task(self._respawn(delay_s))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _respawn(self, delay_s: float) -> None:
        while not self._closed:
            await asyncio.sleep(delay_s)
            try:
                worker = await self._spawn()
            except OSError as exc:
                log.error("cannot start a bounce parse worker", extra={"error": str(exc)})
                delay_s = 5.0
                continue
            if self._closed:
                await self._kill(worker)
            else:
                self._idle.put_nowait(worker)
            return

    def _forget(self, worker: _Worker) -> None:
        """Kill a worker without waiting (its exit is reaped by asyncio's child watcher)."""
        self._all.discard(worker)
        with contextlib.suppress(ProcessLookupError):
            worker.proc.kill()

    async def _kill(self, worker: _Worker) -> None:
        self._forget(worker)
        await worker.proc.wait()

    async def close(self, timeout_s: float = 2.0) -> None:
        """End every worker: EOF first (each ends after its message), then SIGKILL."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # no worker starts after this
        workers = list(self._all)
        for worker in workers:
            if worker.proc.stdin is not None:
                with contextlib.suppress(Exception):
                    worker.proc.stdin.close()
        for worker in workers:
            try:
                await asyncio.wait_for(worker.proc.wait(), timeout_s)
            except TimeoutError:
                await self._kill(worker)
        self._all.clear()

    def pids(self) -> list[int]:
        """The workers' process ids (for tests and diagnostics)."""
        return [w.proc.pid for w in self._all]


async def _answer(stdout: asyncio.StreamReader) -> Reply:
    size = int.from_bytes(await stdout.readexactly(4), "big")
    if size > MAX_REPLY_BYTES:
        raise _TooLarge(f"parse result of {size} bytes (over {MAX_REPLY_BYTES})")
    reply: Reply = _decode(await stdout.readexactly(size))
    return reply
