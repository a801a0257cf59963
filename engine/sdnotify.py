"""systemd notification protocol (sd_notify) without a dependency: one datagram per message."""

from __future__ import annotations

import os
import select
import shutil
import socket
import struct
import tempfile

NOTIFY_TIMEOUT_S = 2.0


def notify(message: str) -> bool:
    """Send ``READY=1``, ``STATUS=...``, ``WATCHDOG=1``...; False when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        # A receiver whose queue is full (one that stopped reading) must not hang the daemon.
        sock.settimeout(NOTIFY_TIMEOUT_S)
        try:
            sock.connect(address)
            sock.sendall(message.encode())
        except OSError:
            return False
    return True


def watchdog_interval_s() -> float | None:
    """Half of systemd's WatchdogSec (how often to ping), or None when no watchdog is set."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000


class Listener:
    """The receiving end of the protocol, for a process that supervises daemons of its own
    (``engine run --workers N``, the bench): a datagram socket in a private directory, and
    who sent each message (the kernel's SCM_CREDENTIALS, as systemd itself tells services
    apart). Set ``NOTIFY_SOCKET`` to :attr:`path` in the children's environment.
    """

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="engine-notify-")
        self.path = os.path.join(self._dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.setblocking(False)
        self.ready: set[int] = set()

    def poll(self) -> list[tuple[int, dict[str, str]]]:
        """Messages received so far: (sender pid, fields); senders of READY=1 join :attr:`ready`."""
        out: list[tuple[int, dict[str, str]]] = []
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, _CRED_SPACE)
            except (BlockingIOError, InterruptedError):
                return out
            pid = 0
            for level, kind, cdata in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", cdata[: struct.calcsize("3i")])[0]
            lines = data.decode(errors="replace").splitlines()
            fields = dict(line.split("=", 1) for line in lines if "=" in line)
            if fields.get("READY") == "1":
                self.ready.add(pid)
            out.append((pid, fields))

    def wait(self, timeout: float) -> None:
        """Block until a message may be waiting, at most ``timeout`` seconds."""
        select.select([self.sock], [], [], timeout)

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)


_CRED_SPACE = socket.CMSG_SPACE(struct.calcsize("3i"))
