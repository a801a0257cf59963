"""Declared background work: a periodic task is named once, and one runner drives them all.

A :class:`Periodic` says what to call, how often (a number, or a function read before every wait
so a reload can change it), whether the first call happens at start-up, which event may wake it
early, how long to wait after a failure (doubling per consecutive failure, up to a cap) and
whether it runs once more when the daemon stops (final flushes). A task's function may return a
number of seconds to override the next wait (0: go on at once, there is a backlog).

The :class:`Runner` owns the policy every task shares, so no task repeats it: a failure is logged
and counted and the task goes on after its back-off; stopping cancels every loop and then runs
the final calls in declaration order under a time limit, so a backing service that is down does
not hold the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from engine import metrics
from engine.backoff import backoff_s

log = logging.getLogger("engine.periodic")

Seconds: TypeAlias = float | Callable[[], float]

#: How long the final calls of all tasks together may take when the daemon stops.
STOP_TIMEOUT_S = 5.0


class Retry(Exception):
    """Raised by a task that failed and already said why: counted and backed off, not logged."""


def _seconds(value: Seconds) -> float:
    if isinstance(value, int | float):
        return float(value)
    return value()


@dataclass(frozen=True, slots=True)
class Periodic:
    """One background task, declared once (arq's ``cron`` in spirit)."""

    name: str
    run: Callable[[], Awaitable[float | None]]  # may return the next wait in seconds
    every_s: Seconds
    at_start: bool = True  # first call at once; else after one interval
    wake: asyncio.Event | None = None  # set by others to run before the interval is up
    retry_s: Seconds | None = None  # wait after a failure (default: the interval)
    max_backoff_s: Seconds | None = None  # consecutive failures double the wait up to this
    on_stop: bool = False  # call once more when the runner stops (flush what is buffered)

    def retry_after(self, failures: int) -> float:
        """The wait after ``failures`` consecutive failures (>= 1)."""
        first = _seconds(self.every_s if self.retry_s is None else self.retry_s)
        cap = first if self.max_backoff_s is None else max(first, _seconds(self.max_backoff_s))
        return backoff_s(failures, base_s=first, max_s=cap, jitter=0.0)


async def call_once(task: Periodic) -> tuple[bool, float | None]:
    """Run ``task`` once, counting and logging a failure; returns (succeeded, next wait)."""
    started = time.perf_counter()
    try:
        delay = await task.run()
    except Retry:
        metrics.labelled(metrics.TASK_ERRORS, task.name).inc()
        return False, None
    except Exception as exc:  # a background task never takes the daemon down
        metrics.labelled(metrics.TASK_ERRORS, task.name).inc()
        log.warning(
            "background task failed; retrying",
            extra={"task": task.name, "error": str(exc) or repr(exc)},
        )
        return False, None
    finally:
        metrics.labelled(metrics.TASK_RUNS, task.name).inc()
        metrics.labelled(metrics.TASK_DURATION, task.name).set(time.perf_counter() - started)
    return True, delay


async def _wait(halt: asyncio.Event, wake: asyncio.Event | None, seconds: float) -> None:
    """Return after ``seconds``, or sooner when ``halt`` (or ``wake``, if given) is set."""
    events = [halt] if wake is None else [halt, wake]
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def run_until(task: Periodic, halt: asyncio.Event) -> None:
    """Drive one task until ``halt`` is set (its final call, if any, is the runner's job)."""
    failures = 0
    delay = 0.0 if task.at_start else _seconds(task.every_s)
    while not halt.is_set():
        if delay > 0:
            # After a failure a wake-up does not help (the backing service is what is down).
            await _wait(halt, task.wake if failures == 0 else None, delay)
            if halt.is_set():
                return
        if task.wake is not None:
            task.wake.clear()  # a wake-up during this call means "run again"
        ok, chosen = await call_once(task)
        if ok:
            failures = 0
            delay = _seconds(task.every_s) if chosen is None else chosen
        else:
            failures += 1
            delay = task.retry_after(failures)
        if delay <= 0:
            await asyncio.sleep(0)  # a backlog must not starve the rest of the loop


class Runner:
    """Runs declared tasks from :meth:`start` until :meth:`stop`."""

    def __init__(self, tasks: Sequence[Periodic], halt: asyncio.Event | None = None) -> None:
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"background task names must be unique: {names}")
        self.tasks = list(tasks)
        self.halt = halt or asyncio.Event()
        self._running: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start every task's loop on the running event loop."""
        self._running = [
            asyncio.create_task(run_until(t, self.halt), name=f"periodic-{t.name}")
            for t in self.tasks
        ]

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Cancel the loops, then make the final calls (in declaration order, time-limited)."""
        self.halt.set()
        for running in self._running:
            running.cancel()
        for running in self._running:
            with contextlib.suppress(asyncio.CancelledError):
                await running
        self._running = []
        finals = [t for t in self.tasks if t.on_stop]
        if not finals:
            return
        try:
            async with asyncio.timeout(timeout_s):
                for task in finals:
                    await call_once(task)
        except TimeoutError:
            log.warning("final background work cut short", extra={"timeout_s": timeout_s})


async def run_all(tasks: Sequence[Periodic], stop: asyncio.Event) -> None:
    """Run ``tasks`` until ``stop`` is set, then stop them as :meth:`Runner.stop` does."""
    runner = Runner(tasks)
    runner.start()
    try:
        await stop.wait()
    finally:
        await runner.stop()
