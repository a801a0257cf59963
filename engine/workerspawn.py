"""Starting a worker process (DKIM signer, bounce parser) and waiting for its READY frame.

The daemon side of :mod:`engine.workerpipe`: both pools start ``python -m <module>`` with piped
stdin and stdout the same way and accept it only once it has said READY (imports done, SIGINT and
SIGTERM left to the daemon). Kept apart from :mod:`engine.workerpipe` because the workers import
that module and need no asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from engine.workerpipe import READY

__all__ = ["READY_TIMEOUT_S", "await_ready", "start_worker"]

#: How long a worker may take to import and say READY (a loaded host takes seconds).
READY_TIMEOUT_S = 60.0


async def start_worker(module: str) -> asyncio.subprocess.Process:
    """``python -m module`` with its stdin and stdout as pipes (OSError if it cannot start)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )


async def await_ready(proc: asyncio.subprocess.Process, what: str) -> None:
    """Wait for the READY frame of ``proc``.

    Raises OSError naming ``what`` ("DKIM signer", "parse worker") when the worker ends, stays
    silent for :data:`READY_TIMEOUT_S` or says something else; the process is then killed and
    reaped. A cancelled wait leaves the process to the caller.
    """
    assert proc.stdout is not None
    try:
        ready = await asyncio.wait_for(proc.stdout.readexactly(len(READY)), READY_TIMEOUT_S)
    except (asyncio.IncompleteReadError, TimeoutError) as exc:
        await _kill(proc)
        raise OSError(f"the {what} did not start (exit status {proc.returncode})") from exc
    if ready != READY:
        await _kill(proc)
        raise OSError(f"the {what} said {ready!r} instead of being ready")


async def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await proc.wait()
