"""``python -m bench e2e`` and ``python -m bench latency``.

e2e: N jobs (default 50k, ~3 KB, RSA-2048 DKIM) are enqueued through the real batch path and sent
by the real daemon (``engine run``, a child process) through the relay pool to a local sink
(``engine.sink``, a minimal asyncio SMTP server in its own process), with PostgreSQL durability
(a throwaway server with fsync and synchronous_commit on). In the same run a naive uvloop +
aiosmtplib loop sends the same messages, pre-built and unsigned, to a fresh sink of the same
kind with the same number of connections. Reported: ``engine_msg_s``, ``naive_msg_s``,
``ratio``, ``p50_ms``/``p99_ms`` enqueue→relayed, ``lost``, ``duplicates`` (at the sink, by
Message-ID), ``rss_mb`` (the daemon's peak RSS).

``--relay postfix``: the same workload with a real Postfix between the engine and the sink,
configured like a MailU node (``tests/fakes/postfix.py``: submission with STARTTLS and SASL
AUTH, sender-login check, DSN), so the relay tier's cost is visible beside the direct figure
measured in the same run: ``engine_msg_s`` is then the engine's rate through Postfix (jobs
relayed, i.e. Postfix's 250), ``engine_msg_s_direct`` the same engine straight to the sink, and
``postfix_delivered_msg_s`` the rate until Postfix had handed every message to the sink. Postfix
delivers to the same ``engine.sink`` (not Postfix's ``smtp-sink``) so ``lost`` and
``duplicates`` are still counted by Message-ID at the far end. Needs root and Debian's postfix
(scripts/bootstrap.sh installs it).

latency: a fixed offered load (default 50% of a just-measured capacity) enqueued in small
batches at a steady pace; reports p50/p99 enqueue→relayed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import aiosmtplib
import asyncpg
import msgspec
import orjson
import uvloop

from bench import personalized as personalized_run
from engine import sdnotify
from engine.config import DatabaseConfig
from engine.demo import write_toml
from engine.dkim.keys import generate_key
from engine.dkim.sign import SigningKey, body_hash, load_signing_key, sign_message
from engine.enqueue import enqueue
from engine.servers import ThrowawayPostgres, ThrowawayRedis, ThrowawayRedisCluster
from engine.store import pool as pool_mod
from engine.store.migrate import migrate

DOMAIN = "bench.penguinmails.test"
CONNECTIONS = 16
_PARA = (
    "Thank you for being part of the PenguinMails community. This month we shipped faster "
    "delivery, better reputation tracking and a new dashboard for your campaigns.\n"
)


class Sink:
    """``python -m engine.sink`` in its own process (so it does not share our GIL)."""

    def __init__(self, tmp: Path, name: str, *, chunking: bool = True) -> None:
        self.stats_file = tmp / f"{name}.json"
        args = [sys.executable, "-m", "engine.sink", "--stats", str(self.stats_file)]
        if not chunking:
            args.append("--no-chunking")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def stop(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        doc: dict[str, Any] = json.loads(self.stats_file.read_text())
        return doc


def tenant_ids(count: int) -> list[str]:
    """The bench's tenants: ``bench`` alone, or ``bench-0`` … ``bench-{count-1}``."""
    return ["bench"] if count <= 1 else [f"bench-{i}" for i in range(count)]


def job_docs(n: int, run: str, tenants: int = 1) -> list[bytes]:
    """``n`` campaign jobs, dealt round robin over the bench's tenants (each its own campaign
    body, as each tenant stores its own content)."""
    text = _PARA * 12  # ~2.3 KB of text + headers and MIME: ~3 KB on the wire
    ids = tenant_ids(tenants)
    return [
        orjson.dumps(
            {
                "tenant_id": ids[i % len(ids)],
                "idempotency_key": f"{run}-{i}",
                "from": f"news@{DOMAIN}",
                "to": f"user{i}@example.com",
                "subject": "Your monthly PenguinMails update",
                "text": text,
                "campaign_id": run,
                "list_unsubscribe": "https://u.penguinmails.test/x",
            }
        )
        for i in range(n)
    ]


def naive_messages(n: int) -> list[tuple[str, str, bytes]]:
    body = (_PARA * 12).replace("\n", "\r\n").encode()
    out = []
    for i in range(n):
        head = (
            f"From: news@{DOMAIN}\r\nTo: user{i}@example.com\r\n"
            f"Subject: Your monthly PenguinMails update\r\n"
            f"Message-ID: <naive.{i}@{DOMAIN}>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        ).encode()
        out.append((f"news@{DOMAIN}", f"user{i}@example.com", head + body))
    return out


async def naive_loop(port: int, messages: list[tuple[str, str, bytes]], conns: int) -> float:
    """The baseline: ``conns`` persistent aiosmtplib connections sending in parallel."""
    queue: asyncio.Queue[tuple[str, str, bytes]] = asyncio.Queue()
    for m in messages:
        queue.put_nowait(m)

    async def worker() -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await smtp.connect()
        while True:
            try:
                sender, rcpt, data = queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            await smtp.sendmail(sender, [rcpt], data)
        await smtp.quit()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conns)))
    return len(messages) / (time.perf_counter() - start)


_SIGN_SLICE = 128
_naive_key: SigningKey | None = None


def _naive_sign(pem: bytes, part: list[tuple[str, str, bytes]]) -> list[tuple[str, str, bytes]]:
    """Sign ``part`` with ``pem`` (in a pool process; the key is parsed once per process). The
    body hash is computed once per slice: the messages share one body, as a campaign's do."""
    global _naive_key
    if _naive_key is None:
        _naive_key = load_signing_key(pem, domain=DOMAIN, selector="b")
    keys = [_naive_key]
    if not part:
        return []
    data = part[0][2]
    bh = body_hash(data[data.index(b"\r\n\r\n") + 4 :])
    return [(f, t, sign_message(m, keys, body_hash=bh)) for f, t, m in part]


async def naive_signed_loop(
    port: int, messages: list[tuple[str, str, bytes]], conns: int, pem: bytes
) -> float:
    """The second baseline: the naive loop, each message RSA-signed in a process pool with one
    process per core, slices signed while earlier ones are sent. No queue, no durability."""
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        # Warm every process (start-up and key parse) before the clock starts.
        await asyncio.gather(
            *(loop.run_in_executor(pool, _naive_sign, pem, messages[:1]) for _ in range(8))
        )
        ready: asyncio.Queue[tuple[str, str, bytes] | None] = asyncio.Queue()
        slices = [messages[i : i + _SIGN_SLICE] for i in range(0, len(messages), _SIGN_SLICE)]

        async def feed() -> None:
            window = 2 * (os.cpu_count() or 1)  # keeps every core busy, bounds the backlog
            pending = [loop.run_in_executor(pool, _naive_sign, pem, s) for s in slices[:window]]
            nxt = window
            while pending:
                for m in await pending.pop(0):
                    ready.put_nowait(m)
                if nxt < len(slices):
                    pending.append(loop.run_in_executor(pool, _naive_sign, pem, slices[nxt]))
                    nxt += 1
            for _ in range(conns):
                ready.put_nowait(None)

        async def worker() -> None:
            smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
            await smtp.connect()
            while (item := await ready.get()) is not None:
                await smtp.sendmail(item[0], [item[1]], item[2])
            await smtp.quit()

        start = time.perf_counter()
        await asyncio.gather(feed(), *(worker() for _ in range(conns)))
        return len(messages) / (time.perf_counter() - start)


def rsa_sign_ms(pem: bytes, rounds: int = 400) -> float:
    """CPU milliseconds of one RSA-2048 PKCS#1 v1.5 SHA-256 signature on this host, now (the
    OpenSSL operation alone, what every message costs whatever the engine does)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    data = b"x" * 600  # about the size of a message's canonical signed header fields
    key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    best = float("inf")
    for _ in range(4):  # the least disturbed quarter: other processes share the core's caches
        t0 = time.thread_time()
        for _ in range(rounds // 4):
            key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        best = min(best, (time.thread_time() - t0) * 1000 / (rounds // 4))
    return best


def status_mb(pid: int, field: str) -> float:
    """A ``/proc/<pid>/status`` memory field (``VmRSS``, ``VmHWM``) in MB; 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tree_mb(root: int, field: str) -> float:
    """``field`` summed over ``root`` and its descendants: the daemon with its DKIM signer
    processes (and ``--workers`` children)."""
    return sum(status_mb(pid, field) for pid in process_tree(root))


def _rss_peak_mb(pid: int) -> float:
    # Each process's own peak, summed: an upper bound of the tree's peak.
    return tree_mb(pid, "VmHWM")


_TICK = os.sysconf("SC_CLK_TCK")


def process_tree(root: int) -> set[int]:
    """``root`` and its live descendants."""
    return set(_proc_table(root)[0])


def _proc_table(root: int) -> tuple[set[int], dict[int, int]]:
    """(the pids of ``root``'s tree, CPU ticks of every process)."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields start after the last ")".
        fields = stat[stat.rindex(")") + 2 :].split()
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        ticks[pid] = int(fields[11]) + int(fields[12])
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return tree, ticks


def _tree_cpu_s(root: int) -> float:
    """User + system CPU seconds of ``root`` and its live descendants (threads included)."""
    tree, ticks = _proc_table(root)
    return sum(ticks.get(pid, 0) for pid in tree) / _TICK


def _box_cpu_s() -> float:
    """Busy CPU seconds of the whole machine (all cores) since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system irq softirq: time taken by a hypervisor (steal) is not ours.
    return (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / _TICK


class CpuMeter:
    """CPU seconds spent by each process tree (and the whole box) between two readings."""

    def __init__(self, pids: dict[str, int | list[int]]) -> None:
        self.pids = pids
        self.start = self._read()

    def _read(self) -> dict[str, float]:
        readings = {
            name: sum(_tree_cpu_s(p) for p in (pid if isinstance(pid, list) else [pid]))
            for name, pid in self.pids.items()
        }
        readings["box"] = _box_cpu_s()
        return readings

    def per_message_ms(self, n: int) -> dict[str, float]:
        """``cpu_ms_per_msg_<name>`` for each tree and the box, since the meter was made."""
        end = self._read()
        return {
            f"cpu_ms_per_msg_{name}": round((end[name] - self.start[name]) * 1000 / n, 3)
            for name in end
        }


class Engine:
    """A throwaway PostgreSQL + Redis, a DKIM key, and ``engine run`` against a sink."""

    def __init__(
        self,
        tmp: Path,
        sink_port: int,
        *,
        shaping: bool,
        dkim: bool,
        workers: int = 1,
        tenants: int = 1,
        overrides: dict[str, dict[str, Any]] | None = None,
        redis: str = "single",
        cluster_replicas: int = 1,
    ) -> None:
        self.tmp = tmp
        self.workers = workers
        self.tenants = tenants
        # BENCH_PG_STATEMENTS=1: load pg_stat_statements and print the costliest statements to
        # stderr after the run (where the database time goes; off by default, it costs a little).
        self.pg_statements = os.environ.get("BENCH_PG_STATEMENTS") == "1"
        settings = {"shared_preload_libraries": "pg_stat_statements"} if self.pg_statements else {}
        # BENCH_REDIS_STATS=1: print each Redis command's calls and time, summed over the
        # servers (the cluster's replicas apart), to stderr after the run.
        self.redis_stats = os.environ.get("BENCH_REDIS_STATS") == "1"
        self.pg = ThrowawayPostgres(fsync=True, settings=settings).start()
        # --redis cluster: 3 masters + 3 replicas on this host, the engine's queue in 8 shards.
        try:
            self.redis: ThrowawayRedis | ThrowawayRedisCluster = (
                ThrowawayRedisCluster(replicas=cluster_replicas).start()
                if redis == "cluster"
                else ThrowawayRedis().start()
            )
        except BaseException:
            self.pg.cleanup()  # nothing of a failed phase may outlive it
            raise
        pem, _ = generate_key("rsa-sha256", 2048)
        key = tmp / "dkim.pem"
        key.write_bytes(pem)
        key.chmod(0o600)
        cfg: dict[str, dict[str, Any]] = {
            "database": {"dsn": self.pg.dsn, "pool_min": 2, "pool_max": 12},
            "redis": {"url": self.redis.url, "prefix": "bench", "mode": redis},
            "queue": {"max_in_flight": 1024, "batch_size": 512, "outcome_batch": 1000},
            "relay": {
                "nodes": [
                    {
                        "name": "sink",
                        "host": "127.0.0.1",
                        "port": sink_port,
                        "tls": "none",
                        "max_connections": CONNECTIONS,
                        "max_messages_per_connection": 100000,
                    }
                ]
            },
            "dkim": {
                "enabled": dkim,
                "required": dkim,
                "keys": [
                    {
                        "domain": DOMAIN,
                        "selector": "b",
                        "algorithm": "rsa-sha256",
                        "private_key_file": str(key),
                    }
                ],
            },
            "shaping": {
                "enabled": shaping,
                "default_rate_per_s": 100000.0,
                "warmup": False,
                # Generous limits for the bench's one provider: as many transactions in flight
                # as the relay pool has connections (the default, 10, would hold most of every
                # batch at the in-flight gate and measure the re-queueing instead).
                "providers": [
                    {
                        "name": "bench-mx",
                        "mx_suffixes": ["mx.example.com"],
                        "rate_per_s": 100000.0,
                        "max_connections": CONNECTIONS,
                        "max_messages_per_connection": 100000,
                    }
                ],
            },
            "dns": {"overrides": {"example.com": ["mx.example.com"]}},
            # Listener off, but every message is still signed with a VERP return path.
            "inbound": {"enabled": False, "verp_secret": secrets.token_hex(32)},
            "admin": {"listen": "127.0.0.1:0"},
            "log": {"level": "warning"},
        }
        for section, values in (overrides or {}).items():
            cfg[section] = {**cfg.get(section, {}), **values}
        self.config = tmp / "engine.toml"
        write_toml(self.config, cfg)
        self.proc: subprocess.Popen[bytes] | None = None

    async def prepare(self) -> None:
        if self.pg_statements:
            conn = await asyncpg.connect(self.pg.dsn)
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            await conn.close()
        await migrate(self.pg.dsn)
        pool = await pool_mod.connect(DatabaseConfig(dsn=self.pg.dsn, pool_min=1, pool_max=2))
        await pool.execute(
            "INSERT INTO oltp.tenants (tenant_id) SELECT unnest($1::text[])",
            tenant_ids(self.tenants),
        )
        await pool.close()

    async def start(self) -> None:
        """Start ``engine run`` and wait for its READY=1 (sd_notify), as systemd would: the
        daemon has loaded its keys, started its signers and connected to the relay."""
        listener = sdnotify.Listener()
        try:
            with open(self.tmp / "daemon.log", "ab") as log:
                args = [sys.executable, "-m", "engine", "run", "--config", str(self.config)]
                if self.workers > 1:
                    args += ["--workers", str(self.workers)]
                self.proc = subprocess.Popen(
                    args,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "NOTIFY_SOCKET": listener.path},
                )
            deadline = time.monotonic() + 60
            while self.proc.pid not in listener.ready:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"daemon did not become ready; see {self.tmp}/daemon.log")
                await asyncio.sleep(0.02)
                listener.poll()
        finally:
            listener.close()

    def redis_ports(self) -> list[int]:
        if isinstance(self.redis, ThrowawayRedisCluster):
            return list(self.redis.procs)
        return [self.redis.port]

    def redis_pids(self) -> list[int]:
        if isinstance(self.redis, ThrowawayRedisCluster):
            return [p.pid for p in self.redis.procs.values()]
        assert self.redis.proc is not None
        return [self.redis.proc.pid]

    def replica_pids(self) -> list[int]:
        """The cluster's replicas (their CPU is what replicating the masters' writes costs)."""
        if not isinstance(self.redis, ThrowawayRedisCluster):
            return []
        masters = set(self.redis.masters())
        return [p.pid for port, p in self.redis.procs.items() if port not in masters]

    def stop(self) -> tuple[int, float]:
        assert self.proc is not None
        rss = _rss_peak_mb(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(120)
        return code, rss

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.pg.cleanup()
        self.redis.cleanup()


async def _wait_done(conn: asyncpg.Connection, n: int, timeout: float) -> None:
    # Polls the OLAP counters (one small row, written in the same transaction as the job states):
    # a count(*) over queue.jobs twenty times a second would take PostgreSQL time away from the
    # engine under test. The exact count is checked once at the end.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = await conn.fetchval(
            "SELECT coalesce(sum(relayed + failed), 0) FROM olap.daily_stats"
        )
        if done >= n:
            break
        await asyncio.sleep(0.05)
    while time.monotonic() < deadline:
        done = await conn.fetchval(
            "SELECT count(*) FROM queue.jobs WHERE state IN ('relayed', 'failed')"
        )
        if done >= n:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"engine did not finish {n} jobs within {timeout:.0f}s")


async def _print_statements(conn: asyncpg.Connection) -> None:
    rows = await conn.fetch(
        "SELECT calls, round(total_exec_time) ms, rows,"
        " left(regexp_replace(query, '\\s+', ' ', 'g'), 110) q"
        " FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 15"
    )
    for r in rows:
        line = f"{r['ms']:>8} ms {r['calls']:>8} calls {r['rows']:>8} rows  {r['q']}"
        print(line, file=sys.stderr)


def _print_redis_stats(ports: list[int]) -> None:
    """Each command's calls and CPU time over the servers on ``ports``, masters and replicas
    apart (a replica's time is what replicating the masters' writes costs)."""
    import redis as sync_redis  # bench diagnostics only

    totals: dict[tuple[str, str], list[float]] = {}
    for port in ports:
        client = sync_redis.Redis(port=port)
        try:
            role = str(client.info("replication")["role"])
            for name, stat in client.info("commandstats").items():
                cell = totals.setdefault((role, name.removeprefix("cmdstat_")), [0, 0.0])
                cell[0] += int(stat["calls"])
                cell[1] += float(stat["usec"]) / 1000
        finally:
            client.close()
    for (role, name), (calls, ms) in sorted(totals.items(), key=lambda kv: -kv[1][1])[:25]:
        print(f"{role:>6} {name:<28} {int(calls):>9} calls {ms:>9.1f} ms", file=sys.stderr)


async def _latencies(conn: asyncpg.Connection) -> tuple[float, float, float, float]:
    row = await conn.fetchrow(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) p50,"
        " percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) p99,"
        " extract(epoch FROM max(finished_at) - min(created_at)) span,"
        " count(*) n FROM (SELECT extract(epoch FROM finished_at - created_at) * 1000 ms,"
        " finished_at, created_at FROM queue.jobs WHERE state = 'relayed') t"
    )
    assert row is not None
    return float(row["p50"] or 0), float(row["p99"] or 0), float(row["span"] or 0), row["n"]


def _postfix_node(sink_port: int) -> Any:
    """A MailU-like Postfix (tests/fakes/postfix.py) relaying the bench's mail to the sink."""
    from tests.fakes.postfix import PostfixNode, skip_reason  # a test fixture, bench-only

    reason = skip_reason()
    if reason is not None:
        raise SystemExit(f"bench e2e --relay postfix: {reason}")
    node = PostfixNode(senders=["@bounces.localhost"], routes={"example.com": sink_port})
    return node.start()


async def _wait_postfix_empty(node: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while node.queue_size() > 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"postfix still holds {node.queue_size()} messages")
        await asyncio.sleep(0.1)


async def _engine_phase(
    tmp: Path,
    n: int,
    *,
    shaping: bool,
    dkim: bool,
    workers: int = 1,
    chunking: bool = False,
    tenants: int = 1,
    relay: str = "direct",
    redis: str = "single",
    cluster_replicas: int = 1,
    personalized: bool = False,
) -> dict[str, Any]:
    sink = Sink(tmp, "engine-sink", chunking=chunking)
    postfix: Any = None
    try:
        postfix = _postfix_node(sink.port) if relay == "postfix" else None
        overrides: dict[str, dict[str, Any]] = {}
        if postfix is not None:
            node = postfix.relay_node(
                "postfix", max_connections=CONNECTIONS, max_messages_per_connection=100000
            )
            # No success notices: they would reach the sink and spoil its count of Message-IDs
            # (NOTIFY=FAILURE,DELAY costs nothing when the mail goes through).
            overrides["relay"] = {
                "nodes": [{k: v for k, v in msgspec.structs.asdict(node).items() if v is not None}],
                "dsn_success_fraction": 0.0,
            }
        engine = Engine(
            tmp,
            sink.port,
            shaping=shaping,
            dkim=dkim,
            workers=workers,
            tenants=tenants,
            overrides=overrides,
            redis=redis,
            cluster_replicas=cluster_replicas,
        )
    except BaseException:
        # Nothing of this phase may outlive it (a Postfix master, the sink process).
        if postfix is not None:
            postfix.close()
        with contextlib.suppress(Exception):
            sink.stop()
        raise
    delivered_s = 0.0
    try:
        await engine.prepare()
        await engine.start()
        pool = await pool_mod.connect(DatabaseConfig(dsn=engine.pg.dsn, pool_min=1, pool_max=2))
        conn = await asyncpg.connect(engine.pg.dsn)
        try:
            docs = job_docs(n, "e2e", tenants)
            if personalized:  # bench/personalized.py: a template and variables per job
                await personalized_run.store_template(pool, tenant_ids(tenants), "e2e")
                docs = personalized_run.job_docs(n, "e2e", tenants)
            assert engine.proc is not None and engine.pg.proc is not None
            pids: dict[str, int | list[int]] = {
                "daemon": engine.proc.pid,
                "postgres": engine.pg.proc.pid,
                "redis": engine.redis_pids(),
                "sink": sink.proc.pid,
            }
            if postfix is not None and (master := postfix.master_pid()) is not None:
                pids["postfix"] = master
            if replicas := engine.replica_pids():
                pids["redis_replicas"] = replicas  # part of cpu_ms_per_msg_redis
            meter = CpuMeter(pids)
            t0_mono = time.monotonic()
            t0 = time.perf_counter()
            res = await enqueue(pool, docs, max_message_bytes=10**7, max_age_s=86400)
            enqueue_s = time.perf_counter() - t0
            assert all(r.error is None for r in res)
            await _wait_done(conn, n, timeout=max(300.0, n / 20))
            total_s = time.perf_counter() - t0
            if postfix is not None:
                await _wait_postfix_empty(postfix, timeout=max(300.0, n / 20))
                delivered_s = time.perf_counter() - t0
            cpu = meter.per_message_ms(n)
            p50, p99, _, relayed = await _latencies(conn)
            if engine.pg_statements:
                await _print_statements(conn)
            if engine.redis_stats:
                _print_redis_stats(engine.redis_ports())
        finally:
            await conn.close()
            await pool.close()
        code, rss = engine.stop()
    finally:
        engine.cleanup()
        if postfix is not None:
            postfix.close()
        stats = sink.stop()
    extra = {"postfix_delivered_msg_s": round(n / delivered_s, 1)} if delivered_s else {}
    unique = stats["unique_message_ids"]
    # Counted where the mail arrives: distinct Message-IDs over the time to the last new one.
    sink_s = (stats.get("last_unique_at") or t0_mono) - t0_mono
    engine_side = ("daemon", "postgres", "redis")
    cpu["cpu_ms_per_msg"] = round(sum(cpu[f"cpu_ms_per_msg_{k}"] for k in engine_side), 3)
    return {
        **extra,
        "engine_msg_s": round(unique / sink_s, 1) if sink_s > 0 else 0.0,
        "engine_msg_s_db": round(n / total_s, 1),
        "enqueue_jobs_s": round(n / enqueue_s, 1),
        "p50_ms": round(p50, 1),
        "p99_ms": round(p99, 1),
        "lost": n - stats["unique_message_ids"],
        "duplicates": stats["duplicates"],
        "rss_mb": round(rss, 1),
        "relayed": relayed,
        "daemon_exit": code,
        **cpu,
    }


async def _cluster_pairs(
    tmp: Path, n: int, pairs: int, replicas: int, same: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``pairs`` engine phases on a single Redis and on the cluster, interleaved.

    Every other pair runs the cluster first, so a host getting busier or quieter during the
    run does not favour one side. The cluster phase returned (for the contract keys) is the
    one of the median pair; ``cluster_vs_single`` is the median of the pairs' ratios.
    """
    runs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for i in range(pairs):
        got: dict[str, dict[str, Any]] = {}
        for mode in ("cluster", "single") if i % 2 else ("single", "cluster"):
            where = tmp / f"{mode}-{i}"
            where.mkdir()
            got[mode] = await _engine_phase(where, n, **same, redis=mode, cluster_replicas=replicas)
        runs.append((got["single"], got["cluster"]))
    ratios = [c["engine_msg_s"] / s["engine_msg_s"] for s, c in runs]
    order = sorted(range(pairs), key=lambda i: ratios[i])
    single, cluster = runs[order[(pairs - 1) // 2]]
    singles = [s["engine_msg_s"] for s, _ in runs]
    extra: dict[str, Any] = {
        "engine_msg_s_single_redis": single["engine_msg_s"],
        "p99_ms_single_redis": single["p99_ms"],
        "cpu_ms_per_msg_daemon_single_redis": single["cpu_ms_per_msg_daemon"],
        "cpu_ms_per_msg_redis_single_redis": single["cpu_ms_per_msg_redis"],
        "cluster_vs_single": round(statistics.median(ratios), 3),
        # Every phase's, not only the reported one's.
        "lost_all_phases": sum(r["lost"] for pair in runs for r in pair),
        "duplicates_all_phases": sum(r["duplicates"] for pair in runs for r in pair),
        "redis": f"cluster (3 masters + {3 * replicas} replicas, 8 stream shards)",
    }
    if pairs > 1:
        # The noise: how far apart the same single-Redis phase lands from one pair to the next.
        spread = (max(singles) - min(singles)) / statistics.median(singles)
        extra |= {
            "pairs": pairs,
            "cluster_vs_single_pairs": [round(r, 3) for r in ratios],
            "engine_msg_s_single_redis_pairs": singles,
            "engine_msg_s_cluster_pairs": [c["engine_msg_s"] for _, c in runs],
            "single_redis_spread": round(spread, 3),
            "cluster_within_noise": abs(statistics.median(ratios) - 1) <= spread,
            # CPU per message (daemon + PostgreSQL + every Redis server) moves less with the
            # host's speed than throughput does: the steadier comparison of the two.
            "cpu_ms_per_msg_single_redis_pairs": [s["cpu_ms_per_msg"] for s, _ in runs],
            "cpu_ms_per_msg_cluster_pairs": [c["cpu_ms_per_msg"] for _, c in runs],
            "cluster_cpu_vs_single": round(
                statistics.median(c["cpu_ms_per_msg"] / s["cpu_ms_per_msg"] for s, c in runs), 3
            ),
        }
    return cluster, extra


def run(argv: list[str]) -> dict[str, Any]:
    """The e2e benchmark (contract keys first)."""
    ap = argparse.ArgumentParser(prog="python -m bench e2e")
    ap.add_argument("--jobs", type=int, default=50_000)
    ap.add_argument("--no-dkim", action="store_true")
    ap.add_argument("--workers", type=int, default=1, help="engine run --workers N")
    ap.add_argument(
        "--tenants",
        type=int,
        default=1,
        help="deal the jobs round robin over N tenants (each with its own campaign body)",
    )
    ap.add_argument(
        "--chunking",
        action="store_true",
        help="the engine's sink offers CHUNKING (BDAT); by default it offers PIPELINING only,"
        " as MailU's front does, and the engine sends DATA",
    )
    # Accepted for old command lines: DATA is the default now.
    ap.add_argument("--no-chunking", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--no-naive-signed",
        action="store_true",
        help="skip the second baseline (the naive loop that RSA-signs every message)",
    )
    ap.add_argument(
        "--shaping",
        choices=["on", "off", "both"],
        default="on",
        help="both: also run the engine with shaping off and report shaping_overhead",
    )
    ap.add_argument(
        "--relay",
        choices=["direct", "postfix"],
        default="direct",
        help="postfix: relay through a real MailU-like Postfix node to the sink, and report the"
        " direct engine figure of the same run beside it",
    )
    ap.add_argument(
        "--redis",
        choices=["single", "cluster"],
        default="single",
        help="cluster: the engine on a local Redis Cluster (3 masters + 3 replicas); the same"
        " run also measures it on a single Redis and reports both",
    )
    ap.add_argument(
        "--cluster-replicas",
        type=int,
        default=1,
        help="with --redis cluster: replicas per master (default 1; 0: masters only, to see"
        " what replication costs on this host)",
    )
    ap.add_argument(
        "--pairs",
        type=int,
        default=1,
        help="with --redis cluster: measure N single/cluster pairs, interleaved (every other pair"
        " cluster first), and report the median ratio and the single runs' spread (the noise)",
    )
    ap.add_argument(
        "--personalized",
        action="store_true",
        help="also run a templated campaign (every message its own body) and report it beside"
        " the plain run (bench/personalized.py)",
    )
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-e2e-"))

    async def go() -> dict[str, Any]:
        pem, _ = generate_key("rsa-sha256", 2048)
        rsa_before = rsa_sign_ms(pem)
        messages = naive_messages(args.jobs)
        naive_sink = Sink(tmp, "naive-sink", chunking=args.chunking)
        try:
            naive = await naive_loop(naive_sink.port, messages, CONNECTIONS)
        finally:
            naive_sink.stop()
        naive_signed = 0.0
        if not args.no_naive_signed and not args.no_dkim:
            signed_sink = Sink(tmp, "naive-signed-sink", chunking=args.chunking)
            try:
                naive_signed = await naive_signed_loop(signed_sink.port, messages, CONNECTIONS, pem)
            finally:
                signed_stats = signed_sink.stop()
            if signed_stats["unique_message_ids"] != args.jobs:
                raise RuntimeError(f"the naive signed loop lost mail: {signed_stats}")
        del messages
        # Every engine phase of one invocation runs the same workload; each one changes one thing.
        same: dict[str, Any] = {
            "shaping": args.shaping != "off",
            "dkim": not args.no_dkim,
            "workers": args.workers,
            "chunking": args.chunking,
            "tenants": args.tenants,
        }
        extra: dict[str, Any] = {}
        if args.redis == "cluster":
            eng, extra = await _cluster_pairs(
                tmp, args.jobs, max(1, args.pairs), args.cluster_replicas, same
            )
        else:
            eng = await _engine_phase(tmp, args.jobs, **same)
        if args.relay == "postfix":
            (tmp / "postfix").mkdir()
            via = await _engine_phase(tmp / "postfix", args.jobs, **same, relay="postfix")
            # The contract keys describe the run asked for: through Postfix.
            extra = {
                "engine_msg_s_direct": eng["engine_msg_s"],
                "p50_ms_direct": eng["p50_ms"],
                "p99_ms_direct": eng["p99_ms"],
                "postfix_delivered_msg_s": via["postfix_delivered_msg_s"],
                "relay_cost": round(1 - via["engine_msg_s"] / eng["engine_msg_s"], 3),
                "relay": "postfix (MailU-like: STARTTLS + AUTH submission, DSN)",
            }
            eng = via
        if args.shaping == "both":
            (tmp / "noshape").mkdir()
            off = await _engine_phase(tmp / "noshape", args.jobs, **(same | {"shaping": False}))
            extra |= {
                "engine_msg_s_shaping_off": off["engine_msg_s"],
                "shaping_overhead": round(1 - eng["engine_msg_s"] / off["engine_msg_s"], 3),
            }
        # Measured before and after the engine ran: the lower one (the RSA share is then the
        # smaller, the figure beyond it the larger).
        rsa_ms = min(rsa_before, rsa_sign_ms(pem)) if not args.no_dkim else 0.0
        if naive_signed:
            extra["naive_signed_msg_s"] = round(naive_signed, 1)
            extra["ratio_signed"] = round(eng["engine_msg_s"] / naive_signed, 3)
        if args.personalized:
            (tmp / "personalized").mkdir()
            tpl = await _engine_phase(tmp / "personalized", args.jobs, **same, personalized=True)
            extra |= {
                "personalized_msg_s": tpl["engine_msg_s"],
                "personalized_vs_plain": round(tpl["engine_msg_s"] / eng["engine_msg_s"], 3),
                "personalized_p50_ms": tpl["p50_ms"],
                "personalized_p99_ms": tpl["p99_ms"],
                "personalized_lost": tpl["lost"],
                "personalized_duplicates": tpl["duplicates"],
                **{f"personalized_{k}": v for k, v in tpl.items() if k.startswith("cpu_ms_per")},
                **personalized_run.micro(),
            }
        return {
            "engine_msg_s": eng["engine_msg_s"],
            "naive_msg_s": round(naive, 1),
            "ratio": round(eng["engine_msg_s"] / naive, 3),
            "cpu_ms_per_msg": eng["cpu_ms_per_msg"],
            "rsa_sign_ms": round(rsa_ms, 3),
            "non_rsa_cpu_ms_per_msg": round(eng["cpu_ms_per_msg"] - rsa_ms, 3),
            "p50_ms": eng["p50_ms"],
            "p99_ms": eng["p99_ms"],
            "lost": eng["lost"],
            "duplicates": eng["duplicates"],
            "rss_mb": eng["rss_mb"],
            "jobs": args.jobs,
            "dkim": "rsa-2048" if not args.no_dkim else "off",
            "shaping": args.shaping,
            "sink": "engine.sink (asyncio, own process)",
            "relay_transfer": "BDAT"
            if args.chunking and args.relay != "postfix"  # MailU's front offers no CHUNKING
            else "DATA",
            "engine_msg_s_db": eng["engine_msg_s_db"],
            "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
            "enqueue_jobs_s": eng["enqueue_jobs_s"],
            "cpus": os.cpu_count(),
            "workers": args.workers,
            "tenants": args.tenants,
            **{k: v for k, v in eng.items() if k.startswith("cpu_ms_per_msg_")},
            **extra,
        }

    return uvloop.run(go())


def run_latency(argv: list[str]) -> dict[str, Any]:
    """Steady offered load at a fraction of capacity; p50/p99 enqueue→relayed."""
    ap = argparse.ArgumentParser(prog="python -m bench latency")
    ap.add_argument("--rate", type=float, default=0.0, help="msg/s (default: 50%% of capacity)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--capacity-jobs", type=int, default=10_000)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-latency-"))

    async def go() -> dict[str, Any]:
        rate = args.rate
        capacity = None
        if rate <= 0:
            (tmp / "cap").mkdir()
            cap = await _engine_phase(tmp / "cap", args.capacity_jobs, shaping=True, dkim=True)
            capacity = cap["engine_msg_s"]
            rate = capacity / 2
        sink = Sink(tmp, "lat-sink", chunking=False)
        engine = Engine(tmp, sink.port, shaping=True, dkim=True)
        try:
            await engine.prepare()
            await engine.start()
            pool = await pool_mod.connect(DatabaseConfig(dsn=engine.pg.dsn, pool_min=1, pool_max=2))
            conn = await asyncpg.connect(engine.pg.dsn)
            total = int(rate * args.seconds)
            docs = job_docs(total, "lat")
            tick = 0.05
            per_tick = max(1, int(rate * tick))
            start = time.perf_counter()
            for i in range(0, total, per_tick):
                await enqueue(
                    pool, docs[i : i + per_tick], max_message_bytes=10**7, max_age_s=86400
                )
                target = start + (i + per_tick) / rate
                await asyncio.sleep(max(0.0, target - time.perf_counter()))
            await _wait_done(conn, total, timeout=300)
            p50, p99, _, relayed = await _latencies(conn)
            await conn.close()
            await pool.close()
            engine.stop()
        finally:
            engine.cleanup()
            sink.stop()
        return {
            "offered_msg_s": round(rate, 1),
            "capacity_msg_s": capacity,
            "p50_ms": round(p50, 1),
            "p99_ms": round(p99, 1),
            "relayed": relayed,
        }

    return uvloop.run(go())
