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
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from engine.errors import EngineError


class ServerError(EngineError):
    """A throwaway server could not be started."""


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports: each stays bound until all are chosen, so a group of servers
    started one after the other cannot be handed one port twice (a cluster node's bus port
    taken from the port list of a node not started yet)."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(n):
            s = held.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            ports.append(int(s.getsockname()[1]))
        return ports


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
        self.proc = subprocess.Popen(
            _redis_args(self.port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
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


def _redis_args(port: int, workdir: Path | None = None) -> list[str]:
    """redis-server on ``port``, local only, without persistence (files, if any, in ``workdir``)."""
    return [
        find_binary("redis-server", "redis-server"),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        *(["--dir", str(workdir)] if workdir is not None else []),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--loglevel",
        "warning",
    ]


def redis_cli(port: int, *args: str, timeout_s: float = 30.0) -> str:
    """``redis-cli -p PORT ARGS...``'s output (raises :class:`ServerError` on failure)."""
    cli = find_binary("redis-cli", "redis-tools")
    try:
        done = subprocess.run(
            [cli, "-h", "127.0.0.1", "-p", str(port), *args],
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ServerError(f"redis-cli {' '.join(args)} timed out on port {port}") from None
    out = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        raise ServerError(f"redis-cli {' '.join(args)} failed: {out} {done.stderr.decode()}")
    return out


class _RedisGroup:
    """Several redis-server processes on free ports sharing one temporary directory."""

    def __init__(self) -> None:
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.dir: Path | None = None

    def _spawn(self, port: int, args: list[str]) -> None:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs[port] = proc
        _wait_port(port, 15, proc)

    @contextlib.contextmanager
    def _stopped_on_failure(self) -> Iterator[None]:
        """A start that fails stops the servers it had started (nothing may outlive it)."""
        try:
            yield
        except BaseException:
            self.cleanup()
            raise

    def kill(self, port: int) -> None:
        """SIGKILL the server on ``port`` (a master: a replica is promoted)."""
        proc = self.procs.get(port)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        for port in list(self.procs):
            self.kill(port)
        self.procs.clear()

    def cleanup(self) -> None:
        self.stop()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


class ThrowawayRedisCluster(_RedisGroup):
    """A Redis Cluster of ``masters`` masters with ``replicas`` replicas each, on free ports,
    without persistence; a short node timeout so a killed master's replica takes over in a few
    seconds."""

    def __init__(self, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1000) -> None:
        nodes = masters * (1 + replicas)
        ports = free_ports(2 * nodes)
        self.ports = ports[:nodes]
        #: Each node's cluster bus port, kept across restarts.
        self.bus_ports = dict(zip(self.ports, ports[nodes:], strict=True))
        self.masters_wanted = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        super().__init__()

    @property
    def url(self) -> str:
        """Any node names the cluster; the client discovers the others."""
        return f"redis://127.0.0.1:{self.live_ports()[0]}/0"

    def live_ports(self) -> list[int]:
        return [p for p in self.ports if p in self.procs and self.procs[p].poll() is None]

    def start_node(self, port: int) -> None:
        """Start (or restart, with its saved cluster config: it rejoins) the node on ``port``."""
        assert self.dir is not None
        workdir = self.dir / str(port)
        workdir.mkdir(exist_ok=True)
        args = [
            *_redis_args(port, workdir),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(workdir / "nodes.conf"),
            "--cluster-node-timeout",
            str(self.node_timeout_ms),
            "--cluster-port",
            str(self.bus_ports[port]),
            "--cluster-require-full-coverage",
            "no",
            "--logfile",
            str(workdir / "redis.log"),
        ]
        self._spawn(port, args)

    def start(self) -> ThrowawayRedisCluster:
        """Start every node and create the cluster; a failure stops the nodes started."""
        self.dir = Path(tempfile.mkdtemp(prefix="engine-redis-cluster-"))
        with self._stopped_on_failure():
            for port in self.ports:
                self.start_node(port)
            redis_cli(
                self.ports[0],
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
                timeout_s=60.0,
            )
            self.wait_ok()
        return self

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Until every live node reports ``cluster_state:ok`` and knows every slot's master."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                ok = all(self._node_ok(p) for p in self.live_ports())
            except ServerError:
                ok = False
            if ok:
                return
            time.sleep(0.2)
        raise ServerError(f"Redis Cluster on {self.ports} not ready within {timeout_s:.0f}s")

    def _node_ok(self, port: int) -> bool:
        if "cluster_state:ok" not in redis_cli(port, "cluster", "info"):
            return False
        if len(self.masters(port)) != self.masters_wanted:
            return False
        # A replica that has not finished its first sync cannot take over.
        info = redis_cli(port, "info", "replication")
        return "role:master" in info or "master_link_status:up" in info

    def masters(self, via: int | None = None) -> list[int]:
        """Ports of the masters serving slots, as node ``via`` (default: any live one) sees."""
        port = via if via is not None else self.live_ports()[0]
        out = []
        for line in redis_cli(port, "cluster", "nodes").splitlines():
            parts = line.split()
            if len(parts) > 8 and "master" in parts[2] and "fail" not in parts[2]:
                out.append(int(parts[1].split("@")[0].rsplit(":", 1)[1]))
        return sorted(out)

    def wait_promoted(self, killed: int, timeout_s: float = 30.0) -> None:
        """Until a replica serves the killed master's slots (every live node agrees)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(ServerError):
                views = [self.masters(p) for p in self.live_ports()]
                if all(killed not in v and len(v) == self.masters_wanted for v in views):
                    return
            time.sleep(0.2)
        raise ServerError(f"no replica took over from the master on port {killed}")

    def __enter__(self) -> ThrowawayRedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class ThrowawayRedisSentinel(_RedisGroup):
    """A Redis master, ``replicas`` replicas and ``sentinels`` sentinels (quorum 1) on free
    ports, without persistence; a killed master is failed over after about a second."""

    SERVICE = "mymaster"

    def __init__(
        self, replicas: int = 1, sentinels: int = 1, sentinel_password: str | None = None
    ) -> None:
        ports = free_ports(1 + replicas + sentinels)
        self.data_ports = ports[: 1 + replicas]
        self.sentinel_ports = ports[1 + replicas :]
        # The sentinels' own `requirepass` (the data servers keep none).
        self.sentinel_password = sentinel_password
        super().__init__()

    @property
    def sentinels(self) -> list[str]:
        """``[redis] sentinels`` for the engine."""
        return [f"127.0.0.1:{p}" for p in self.sentinel_ports]

    def start(self) -> ThrowawayRedisSentinel:
        """Start the master, its replicas and the sentinels; a failure stops what started."""
        self.dir = Path(tempfile.mkdtemp(prefix="engine-redis-sentinel-"))
        with self._stopped_on_failure():
            master = self.data_ports[0]
            for port in self.data_ports:
                workdir = self.dir / str(port)
                workdir.mkdir()
                args = _redis_args(port, workdir)
                if port != master:
                    args += ["--replicaof", "127.0.0.1", str(master)]
                self._spawn(port, args)
            for port in self.data_ports[1:]:
                self._wait_synced(port)
            for port in self.sentinel_ports:
                conf = self.dir / f"sentinel-{port}.conf"
                conf.write_text(
                    f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                    f"sentinel monitor {self.SERVICE} 127.0.0.1 {master} 1\n"
                    f"sentinel down-after-milliseconds {self.SERVICE} 1000\n"
                    f"sentinel failover-timeout {self.SERVICE} 5000\n"
                    + (
                        f"requirepass {self.sentinel_password}\n"
                        if self.sentinel_password is not None
                        else ""
                    )
                )
                binary = find_binary("redis-server", "redis-server")
                self._spawn(port, [binary, str(conf), "--sentinel"])
        return self

    def _wait_synced(self, port: int, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while "master_link_status:up" not in redis_cli(port, "info", "replication"):
            if time.monotonic() > deadline:
                raise ServerError(f"replica on port {port} did not sync within {timeout_s:.0f}s")
            time.sleep(0.1)

    def master(self) -> int:
        """The master's port as the first sentinel reports it."""
        auth = (
            ["--no-auth-warning", "-a", self.sentinel_password]
            if self.sentinel_password is not None
            else []
        )
        out = redis_cli(
            self.sentinel_ports[0], *auth, "sentinel", "get-master-addr-by-name", self.SERVICE
        ).split()
        return int(out[1])

    def wait_failover(self, killed: int, timeout_s: float = 30.0) -> int:
        """Until the sentinels name a new master; returns its port."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(ServerError, IndexError, ValueError):
                port = self.master()
                if port != killed and "role:master" in redis_cli(port, "info", "replication"):
                    return port
            time.sleep(0.2)
        raise ServerError(f"the sentinels did not fail over from port {killed}")

    def __enter__(self) -> ThrowawayRedisSentinel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
