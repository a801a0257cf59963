"""Throwaway PostgreSQL and Redis servers on free ports (demo, benchmarks, chaos tests).

They run from the binaries on PATH (or Debian's /usr/lib/postgresql/*/bin); when a binary is
missing the error names the Debian package to install. PostgreSQL refuses to run as root, so as
root the cluster is created and run as the ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from engine.errors import EngineError


class ServerError(EngineError):
    """A throwaway server could not be started."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_binary(name: str, package: str) -> str:
    """Path of ``name`` from PATH or Debian's PostgreSQL layout; else a clear error."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if candidates:
        return candidates[-1]
    raise ServerError(
        f"{name} not found on PATH",
        hint=f"install the Debian package {package}: apt-get install {package}",
    )


def _wait_port(port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerError(f"server on port {port} exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise ServerError(f"server on port {port} did not start within {timeout_s:.0f}s")


class ThrowawayPostgres:
    """initdb + postgres in a temporary directory; ``dsn`` connects as superuser ``postgres``."""

    def __init__(
        self,
        port: int | None = None,
        *,
        fsync: bool = False,
        settings: dict[str, str] | None = None,
    ) -> None:
        """``settings``: extra ``-c name=value`` server settings (e.g. for profiling)."""
        self.port = port or free_port()
        self.fsync = fsync
        self.settings = dict(settings or {})
        self.tmp = Path(tempfile.mkdtemp(prefix="engine-pg-"))
        self.data = self.tmp / "data"
        self.proc: subprocess.Popen[bytes] | None = None
        self._user: str | None = "postgres" if os.geteuid() == 0 else None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        initdb = find_binary("initdb", "postgresql")
        if self._user:
            pw = pwd.getpwnam(self._user)
            os.chown(self.tmp, pw.pw_uid, pw.pw_gid)
        subprocess.run(
            [
                initdb,
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            user=self._user,
        )

    def start(self) -> ThrowawayPostgres:
        if not self.data.exists():
            self.init()
        postgres = find_binary("postgres", "postgresql")
        args = [
            postgres,
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-h",
            "127.0.0.1",
            "-k",
            str(self.tmp),
            "-c",
            f"fsync={'on' if self.fsync else 'off'}",
            "-c",
            "synchronous_commit=off" if not self.fsync else "synchronous_commit=on",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=256MB",
        ]
        for name, value in self.settings.items():
            args += ["-c", f"{name}={value}"]
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=self._user,
        )
        _wait_port(self.port, 30, self.proc)
        time.sleep(0.2)
        return self

    def stop(self, *, hard: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if hard else signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> ThrowawayPostgres:
        return self.start()

    def __exit__(self, *exc: tuple[type[BaseException], BaseException, TracebackType]) -> None:
        self.cleanup()


class ThrowawayRedis:
    """A redis-server without persistence on a free port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> ThrowawayRedis:
        binary = find_binary("redis-server", "redis-server")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port, 15, self.proc)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()

    def __enter__(self) -> ThrowawayRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
