"""engine/sdnotify.py speaks the sd_notify datagram protocol to a socket we bind ourselves."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import sdnotify, supervisor


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2.0)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


def test_ready_reaches_the_socket(notify_socket: socket.socket) -> None:
    assert sdnotify.notify("READY=1\nSTATUS=sending as test") is True
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=sending as test"
    assert sdnotify.notify("WATCHDOG=1") is True
    assert notify_socket.recv(4096) == b"WATCHDOG=1"


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"pm-engine-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2.0)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("STOPPING=1") is True
        assert sock.recv(4096) == b"STOPPING=1"


def test_not_under_systemd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert sdnotify.notify("READY=1") is False  # a vanished socket is not an error


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval_s() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert sdnotify.watchdog_interval_s() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert sdnotify.watchdog_interval_s() is None


def test_listener_tells_senders_apart_by_their_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    listener = sdnotify.Listener()
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", listener.path)
        assert sdnotify.notify("STATUS=starting") is True
        child = subprocess.run(
            [sys.executable, "-c", "from engine import sdnotify; sdnotify.notify('READY=1')"],
            env={**os.environ, "NOTIFY_SOCKET": listener.path},
            check=True,
        )
        assert child.returncode == 0
        got = listener.poll()
        assert got[0] == (os.getpid(), {"STATUS": "starting"})
        (pid, fields) = got[1]
        assert pid not in (0, os.getpid()) and fields == {"READY": "1"}
        assert listener.ready == {pid}
        assert listener.poll() == []  # nothing more waiting, and no blocking
    finally:
        listener.close()
    assert not os.path.exists(listener.path)


def test_supervisor_says_ready_only_once_every_worker_has(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    upstream = tmp_path / "systemd.sock"
    listener = sdnotify.Listener()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(str(upstream))
        systemd.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", str(upstream))
        env = {**os.environ, "NOTIFY_SOCKET": listener.path}
        # Each "worker" says READY=1 when its stdin closes.
        script = "import sys\nfrom engine import sdnotify\nsys.stdin.read()\n"
        script += "sdnotify.notify('READY=1')"
        workers = {
            i: subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, env=env)
            for i in range(2)
        }
        try:
            listener.poll()
            assert supervisor._announce(workers, listener) is False
            assert workers[0].stdin is not None and workers[1].stdin is not None
            workers[0].stdin.close()  # the first worker becomes ready
            workers[0].wait(10)
            listener.poll()
            assert supervisor._announce(workers, listener) is False
            with pytest.raises(BlockingIOError):
                systemd.recv(4096)  # nothing said upstream yet
            workers[1].stdin.close()
            workers[1].wait(10)
            listener.poll()
            assert supervisor._announce(workers, listener) is True
            assert systemd.recv(4096) == b"READY=1\nSTATUS=2 workers"
        finally:
            for w in workers.values():
                w.kill()
                w.wait()
            listener.close()


def test_a_receiver_that_stopped_reading_does_not_hang_notify(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "full.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))  # never read: its queue fills up
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        monkeypatch.setattr(sdnotify, "NOTIFY_TIMEOUT_S", 0.2)
        sent = []
        while len(sent) < 5000 and (not sent or sent[-1]):
            sent.append(sdnotify.notify(f"STATUS={len(sent)}"))
    assert sent[0] is True and sent[-1] is False  # gave up instead of blocking
