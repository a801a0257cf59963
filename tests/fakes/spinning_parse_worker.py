"""``python -m tests.fakes.spinning_parse_worker``: the real parse worker, except that a message
carrying ``X-Test-Spin:`` makes the *first* worker that sees it write its pid to
``$ENGINE_TEST_SPIN_FILE`` and spin (pure CPU, no system call) until someone kills it. Later
workers parse it normally. Lets a test SIGKILL a worker that is provably mid-parse.
"""

from __future__ import annotations

import os

from engine.inbound import parse_worker
from engine.inbound.evidence import Analysis, analyse


def _spinning(raw: bytes, envelope_to: str | None = None) -> Analysis:
    flag = os.environ.get("ENGINE_TEST_SPIN_FILE", "")
    if b"X-Test-Spin:" in raw and flag:
        try:
            fd = os.open(flag, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            pass
        else:
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            n = 0
            while True:  # until SIGKILL
                n += 1
    return analyse(raw, envelope_to)


parse_worker.analyse = _spinning  # type: ignore[assignment]

if __name__ == "__main__":
    raise SystemExit(parse_worker.main())
