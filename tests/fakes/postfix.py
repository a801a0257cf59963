"""A real Postfix started by the tests as a MailU-like relay node, with fake providers behind it.

MailU's MTA is Postfix; the engine's relay tier speaks to it. This starts Debian's ``postfix``
binaries (installed by ``scripts/bootstrap.sh``) as a throwaway instance with its own
``config_directory``, ``queue_directory`` and ``data_directory`` under a temporary directory, on
loopback ports chosen free, and removes it all on :meth:`PostfixNode.close`. It is configured as
MailU configures its submission front:

* a submission smtpd (``submission_port``): STARTTLS required (a ``trustme`` certificate), then
  SASL AUTH PLAIN/LOGIN against a cyrus sasldb of its own (``saslpasswd2 -f``), relaying only for
  authenticated clients, ``smtpd_sender_login_maps`` + ``reject_sender_login_mismatch`` (the
  authenticated user may only use the MAIL FROM addresses/domains it owns), no CHUNKING
  (MailU's 587/465 front does not pass it), DSN and PIPELINING advertised;
* a plain relay smtpd (``relay_port``) that relays for 127.0.0.0/8 without AUTH, like MailU's
  port 25 for RELAYNETS;
* a retry schedule in seconds so delays, delay warnings and expiries happen within a test:
  ``queue_run_delay``/``minimal_backoff_time`` 1 s, ``maximal_backoff_time`` 2 s,
  ``delay_warning_time`` and the queue lifetimes configurable (seconds);
* no DNS: ``transport_maps`` (a ``texthash`` file) sends each destination domain to a loopback
  port — a :class:`Provider` (gmail.test, outlook.test, …) or the engine's inbound listener for
  the VERP return-path domain, so Postfix's DSNs (bounces, delay warnings, success notices)
  reach the engine the way they would through the VERP domain's MX. Anything else is refused
  at once (``default_transport = error``).

Usage::

    with Provider("gmail.test") as gmail, PostfixNode(senders=["@bounces.localhost"]) as pf:
        pf.route("gmail.test", gmail.port)
        pf.route("bounces.localhost", inbound_listener_port)
        node_cfg = pf.relay_node()          # a [[relay.nodes]] entry: STARTTLS + AUTH
        gmail.set_reply("RCPT", 421, "4.7.0 Try again later", times=3)
        ...
        pf.flush()                          # retry the deferred queue now
        assert pf.queue_size() == 0
        print(pf.log())                     # Postfix's own log (maillog_file)

It needs root (Postfix's master must start as root and drop to the ``postfix`` user) and the
binaries; :func:`skip_reason` says why it cannot run, for ``pytest.skip``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine.config import RelayNode
from tests.fakes.mailu import FakeMailU, _TestCA

__all__ = [
    "POSTFIX_HOSTNAME",
    "POSTFIX_PASSWORD",
    "POSTFIX_USER",
    "PostfixNode",
    "Provider",
    "skip_reason",
]

POSTFIX_SBIN = Path("/usr/sbin")
POSTFIX_DAEMONS = Path("/usr/lib/postfix/sbin")
POSTFIX_HOSTNAME = "node1.mailu.test"
POSTFIX_USER = "relay@mailu.test"
POSTFIX_PASSWORD = "relay-s3cret-pw"

# One master.cf service per line: service type private unpriv chroot wakeup maxproc command.
# Nothing runs chrooted (the instance lives in a temporary directory, not /var/spool/postfix).
_MASTER_CF_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def skip_reason() -> str | None:
    """Why a real Postfix node cannot run here (None: it can)."""
    for binary in (POSTFIX_SBIN / "postfix", POSTFIX_SBIN / "saslpasswd2"):
        if not binary.exists():
            return (
                f"{binary} is missing: install the Debian packages postfix and sasl2-bin "
                "(scripts/bootstrap.sh does)"
            )
    if os.geteuid() != 0:
        return "a Postfix instance must be started as root (its master drops to user postfix)"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "the postfix user is missing: reinstall the Debian package postfix"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Provider(FakeMailU):
    """A receiving provider's MX (gmail.test, outlook.test, …): plain SMTP on a loopback port.

    Everything :class:`FakeMailU` offers to break it at runtime applies (``set_reply("RCPT",
    421, "4.7.0 ...")``, ``fail_rcpt``, ``drop``, ``stop``/``start``); ``domain`` is only a label.
    It does not advertise DSN, so Postfix reports a success as ``Action: relayed``.
    """

    def __init__(self, domain: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.domain = domain
        #: Wall-clock time of the first injected reply (``set_reply``) actually given: when the
        #: provider started answering 421, say, to Postfix.
        self.first_fault_at: float | None = None

    def _take_reply(self, stage: str) -> str | None:
        line = super()._take_reply(stage)
        if line is not None and self.first_fault_at is None:
            self.first_fault_at = time.time()
        return line


class PostfixNode:
    """A throwaway Postfix instance configured like a MailU node; see the module docstring."""

    def __init__(
        self,
        *,
        senders: Iterable[str] = ("@bounces.localhost",),
        user: str = POSTFIX_USER,
        password: str = POSTFIX_PASSWORD,
        delay_warning_s: int = 2,
        queue_lifetime_s: int = 60,
        routes: dict[str, int] | None = None,
        extra_main_cf: dict[str, str] | None = None,
    ) -> None:
        reason = skip_reason()
        if reason is not None:
            raise RuntimeError(reason)
        self.host = "127.0.0.1"
        self.user = user
        self.password = password
        self.senders = tuple(senders)
        self.delay_warning_s = delay_warning_s
        self.queue_lifetime_s = queue_lifetime_s
        self.extra_main_cf = dict(extra_main_cf or {})
        self._routes: dict[str, int] = dict(routes or {})
        self._lock = threading.Lock()
        self.submission_port = _free_port()
        self.relay_port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="pm-postfix-"))
        self.root.chmod(0o755)
        self.config_dir = self.root / "etc"
        self.queue_dir = self.root / "spool"
        self.data_dir = self.root / "data"
        self.log_file = self.root / "maillog"
        self.ca_pem_path = str(self.config_dir / "ca.pem")
        self._running = False

    # -- configuration -------------------------------------------------------------------------

    def _main_cf(self) -> str:
        c = self.config_dir
        params: dict[str, str] = {
            "compatibility_level": "3.7",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "daemon_directory": str(POSTFIX_DAEMONS),
            "command_directory": str(POSTFIX_SBIN),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "maillog_file": str(self.log_file),
            "maillog_file_prefixes": str(self.root),
            "myhostname": POSTFIX_HOSTNAME,
            "mydomain": "mailu.test",
            "myorigin": "mailu.test",
            # A relay only: nothing is delivered locally.
            "mydestination": "",
            "local_recipient_maps": "",
            "local_transport": "error:5.1.1 local delivery is disabled on this relay",
            "alias_maps": "",
            "alias_database": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "biff": "no",
            "smtputf8_enable": "yes",
            "message_size_limit": str(50 * 1024 * 1024),
            # No DNS anywhere: transport_maps names every destination by address.
            "smtp_host_lookup": "native",
            "smtp_dns_support_level": "disabled",
            "smtpd_peername_lookup": "no",
            "transport_maps": f"texthash:{c / 'transport'}",
            "default_transport": "error:5.4.4 no route to this test destination",
            "relay_transport": "error:5.4.4 no route to this test destination",
            # Retries in seconds: a test sees deferral, delay warning, retry and expiry.
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "delay_warning_time": f"{self.delay_warning_s}s",
            "maximal_queue_lifetime": f"{self.queue_lifetime_s}s",
            "bounce_queue_lifetime": f"{self.queue_lifetime_s}s",
            "in_flow_delay": "0",
            "smtp_connect_timeout": "5s",
            "smtp_helo_timeout": "10s",
            "smtp_tls_security_level": "none",
            # A provider that fails once is retried at the next queue run, not held back.
            "default_destination_concurrency_failed_cohort_limit": "100",
            # TLS and SASL for the submission port (MailU's 587).
            "smtpd_tls_cert_file": str(c / "cert.pem"),
            "smtpd_tls_key_file": str(c / "key.pem"),
            "smtpd_tls_security_level": "may",
            "smtpd_sasl_type": "cyrus",
            "smtpd_sasl_path": "smtpd",
            "cyrus_sasl_config_path": str(c / "sasl"),
            "smtpd_sasl_auth_enable": "no",
            "smtpd_sender_login_maps": f"texthash:{c / 'sender_login'}",
            "smtpd_relay_restrictions": (
                "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination"
            ),
            "notify_classes": "resource, software",
        }
        params.update(self.extra_main_cf)
        return "".join(f"{k} = {v}\n" for k, v in params.items())

    def _master_cf(self) -> str:
        submission = (
            f"127.0.0.1:{self.submission_port} inet n - n - - smtpd\n"
            "  -o syslog_name=postfix/submission\n"
            "  -o smtpd_tls_security_level=encrypt\n"
            "  -o smtpd_tls_auth_only=yes\n"
            "  -o smtpd_sasl_auth_enable=yes\n"
            "  -o smtpd_discard_ehlo_keywords=chunking,silent-discard\n"
            "  -o smtpd_client_restrictions=permit_sasl_authenticated,reject\n"
            "  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject\n"
            "  -o smtpd_sender_restrictions=reject_sender_login_mismatch\n"
        )
        relay = (
            f"127.0.0.1:{self.relay_port} inet n - n - - smtpd\n"
            "  -o syslog_name=postfix/relaynets\n"
            "  -o smtpd_relay_restrictions=permit_mynetworks,reject\n"
        )
        return submission + relay + _MASTER_CF_SERVICES

    def _transport(self) -> str:
        return "".join(
            f"{domain} smtp:[127.0.0.1]:{port}\n" for domain, port in sorted(self._routes.items())
        )

    def _sender_login(self) -> str:
        return "".join(f"{sender} {self.user}\n" for sender in self.senders)

    def _write_config(self) -> None:
        c = self.config_dir
        (c / "sasl").mkdir(parents=True, exist_ok=True)
        (c / "main.cf").write_text(self._main_cf())
        (c / "master.cf").write_text(self._master_cf())
        (c / "transport").write_text(self._transport())
        (c / "sender_login").write_text(self._sender_login())
        ca = _TestCA.get()
        ca.ca.cert_pem.write_to_path(self.ca_pem_path)
        cert = ca.cert
        with open(c / "cert.pem", "wb") as f:
            for blob in cert.cert_chain_pems:
                f.write(blob.bytes())
        cert.private_key_pem.write_to_path(str(c / "key.pem"))
        (c / "key.pem").chmod(0o600)
        # Outside config_directory: smtpd (user postfix) reads it, and postfix check wants every
        # file under config_directory owned by root.
        sasldb = self.root / "sasldb2"
        (c / "sasl" / "smtpd.conf").write_text(
            "pwcheck_method: auxprop\n"
            "auxprop_plugin: sasldb\n"
            f"sasldb_path: {sasldb}\n"
            "mech_list: PLAIN LOGIN\n"
        )
        local, _, realm = self.user.rpartition("@")
        subprocess.run(
            [str(POSTFIX_SBIN / "saslpasswd2"), "-f", str(sasldb), "-p", "-c", "-u", realm, local],
            input=self.password.encode(),
            check=True,
            capture_output=True,
        )
        pw = pwd.getpwnam("postfix")
        os.chown(sasldb, pw.pw_uid, pw.pw_gid)
        sasldb.chmod(0o600)
        self.queue_dir.mkdir(exist_ok=True)
        self.queue_dir.chmod(0o755)
        self.data_dir.mkdir(exist_ok=True)
        os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)

    # -- lifecycle -----------------------------------------------------------------------------

    def _postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [str(POSTFIX_SBIN / "postfix"), "-c", str(self.config_dir), *args],
            capture_output=True,
            check=check,
            timeout=60,
        )

    def start(self, timeout: float = 30.0) -> PostfixNode:
        """Write the configuration, start the instance, wait until both smtpd ports answer."""
        if self._running:
            return self
        if not (self.config_dir / "main.cf").exists():
            self._write_config()
        proc = self._postfix("start", check=False)
        if proc.returncode != 0:
            raise RuntimeError(
                f"postfix start failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}"
                f"\n{self.log()}"
            )
        self._running = True
        deadline = time.monotonic() + timeout
        for port in (self.submission_port, self.relay_port):
            while True:
                try:
                    with socket.create_connection((self.host, port), timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        log = self.log()
                        self.close()
                        raise RuntimeError(f"postfix did not listen on {port}:\n{log}") from None
                    time.sleep(0.05)
        return self

    def master_pid(self) -> int | None:
        """The pid of this instance's master process (None when it is not running)."""
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def _children(self, pid: int) -> list[int]:
        out = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid == pid:
                    out.append(int(entry.name))
        return out

    def stop(self) -> None:
        """Stop the instance (the queue stays on disk; :meth:`start` again resumes it)."""
        if not self._running:
            return
        self._running = False
        master = self.master_pid()
        children = self._children(master) if master else []
        self._postfix("stop", check=False)
        deadline = time.monotonic() + 10
        pids = [p for p in [master, *children] if p]
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if Path(f"/proc/{p}").exists() and not _is_zombie(p)]
            if pids:
                time.sleep(0.05)
        for pid in pids:  # stragglers of this instance only, by pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        """Stop and delete the instance's directories."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostfixNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runtime -------------------------------------------------------------------------------

    def route(self, domain: str, port: int, *, reload: bool = True) -> None:
        """Send mail for ``domain`` to 127.0.0.1:``port`` (a provider, the inbound listener)."""
        with self._lock:
            self._routes[domain.lower()] = port
            if (self.config_dir / "main.cf").exists():
                (self.config_dir / "transport").write_text(self._transport())
                if reload and self._running:
                    self._postfix("reload")

    def relay_node(self, name: str = "postfix", *, submission: bool = True, **kw: Any) -> RelayNode:
        """A ``[[relay.nodes]]`` entry: the submission port (STARTTLS + AUTH) or the relay port."""
        fields: dict[str, Any] = {"name": name, "host": self.host}
        if submission:
            fields.update(
                port=self.submission_port,
                tls="starttls",
                username=self.user,
                password=self.password,
                ca_file=self.ca_pem_path,
            )
        else:
            fields.update(port=self.relay_port, tls="none")
        fields.update(kw)
        return RelayNode(**fields)

    def flush(self) -> None:
        """Retry every deferred message now (``postqueue -f``)."""
        subprocess.run(
            [str(POSTFIX_SBIN / "postqueue"), "-c", str(self.config_dir), "-f"],
            capture_output=True,
            check=True,
            timeout=30,
        )

    def queue_size(self) -> int:
        """Messages in the instance's queue (incoming, active, deferred, hold)."""
        total = 0
        for sub in ("incoming", "active", "deferred", "hold", "maildrop"):
            base = self.queue_dir / sub
            if base.exists():
                total += sum(len(files) for _, _, files in os.walk(base))
        return total

    def log(self) -> str:
        """Postfix's own log so far (for assertions and failure messages)."""
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"
