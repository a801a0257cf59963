"""``engine nodes check`` and ``GET /v1/nodes/check``: does each relay node take what the engine
needs? (DESIGN §8: exit 1 when a node refuses it.)

A session is opened by :meth:`engine.relay.node.NodePool.open_session`, the daemon's own code
(same TLS mode, certificate checks, EHLO and AUTH), on a pool of its own so the daemon's
sessions and breakers are untouched. The report names what each step saw (EHLO keywords, TLS
version, cipher and certificate, AUTH mechanisms and result) and, on that session, dry-runs one
``MAIL FROM`` / ``RCPT TO`` / ``RSET`` for the VERP return path every message carries and for
each sender domain (config ``[[dkim.keys]]`` and ``oltp.senders``): nothing is ever sent. A
refusal comes with the MailU setting to change (:mod:`engine.nodes.report`).

The CLI and the admin route both call :func:`run_check`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime

import aiosmtplib
import asyncpg
import msgspec
from cryptography import x509

from engine.compose import verp
from engine.config import Config, RelayConfig, RelayNode, read_secret
from engine.errors import ComposeError, EngineError, UsageError
from engine.nodes import store
from engine.nodes.report import (
    CAPABILITIES,
    NO_DSN_NOTE,
    NO_PIPELINING_NOTE,
    CheckReport,
    NodeReport,
    Probe,
    TlsReport,
    connect_hint,
    refusal_hint,
)
from engine.nodes.store import SendingDomain
from engine.relay.node import NodePool
from engine.relay.observer import RelayObserver
from engine.relay.session import describe

__all__ = ["DEFAULT_RCPT", "check_nodes", "probe_domains", "run_check"]

log = logging.getLogger("engine.nodes")

#: The dry-run recipient: a provider the engine sends to; RFC 5321 §4.5.1 says postmaster exists.
#: RCPT TO is followed by RSET, so nothing is delivered.
DEFAULT_RCPT = "postmaster@gmail.com"
#: Sender domains probed per node at most (one transaction each, on one session).
DEFAULT_MAX_DOMAINS = 50
#: ENVID of the dry-run (RFC 3461 §4.4 xtext): proves the node takes the DSN parameters.
_ENVID = "nodes-check"


async def run_check(
    cfg: Config,
    pool: asyncpg.Pool | None,
    *,
    node: str | None = None,
    rcpt: str = DEFAULT_RCPT,
    timeout_s: float | None = None,
    max_domains: int = DEFAULT_MAX_DOMAINS,
    no_db: str = "no database: tenants' sender domains not probed",
) -> CheckReport:
    """Check ``node`` (or every configured node); ``pool`` gives the tenants' sender domains
    (None, or a database that does not answer, leaves them out with a note: ``no_db``)."""
    if max_domains < 0:
        raise UsageError(f"max domains {max_domains} is negative")
    notes: list[str] = []
    domains: list[SendingDomain] = []
    if pool is not None and max_domains:
        try:
            domains, total = await store.sending_domains(pool, max_domains)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            notes.append(f"database unavailable, tenants' sender domains not probed: {exc}")
        else:
            if total > len(domains):
                notes.append(
                    f"{total - len(domains)} more sender domains not probed "
                    f"(--max-domains {max_domains})"
                )
    elif pool is None:
        notes.append(no_db)
    return await check_nodes(
        cfg,
        probe_domains(cfg, domains),
        node=node,
        rcpt=rcpt,
        timeout_s=timeout_s,
        notes=notes,
    )


def probe_domains(cfg: Config, found: Sequence[SendingDomain]) -> list[SendingDomain]:
    """``found`` (from the database) plus the ``[[dkim.keys]]`` domains not among them."""
    out = list(found)
    seen = {d.domain for d in out}
    for key in cfg.dkim.keys:
        domain = key.domain.lower()
        if domain not in seen:
            seen.add(domain)
            out.append(SendingDomain(domain, f"nodes-check@{domain}"))
    return out


async def check_nodes(
    cfg: Config,
    domains: Sequence[SendingDomain],
    *,
    node: str | None = None,
    rcpt: str = DEFAULT_RCPT,
    timeout_s: float | None = None,
    notes: Sequence[str] = (),
) -> CheckReport:
    """Check the nodes (all, or the one named) concurrently; never raises for a node's trouble."""
    nodes = list(cfg.relay.nodes)
    if node is not None:
        nodes = [n for n in nodes if n.name == node]
        if not nodes:
            known = ", ".join(n.name for n in cfg.relay.nodes) or "none"
            raise UsageError(f"no relay node named {node!r} (configured: {known})")
    if not nodes:
        raise UsageError("no relay node configured", hint="add a [[relay.nodes]] table")
    if "@" not in rcpt or any(c in rcpt for c in "\r\n<> "):
        raise UsageError(f"--rcpt {rcpt!r} is not an address")
    relay = cfg.relay
    if timeout_s is not None:
        if timeout_s <= 0:
            raise UsageError("timeout must be positive")
        relay = msgspec.structs.replace(
            relay, connect_timeout_s=timeout_s, command_timeout_s=timeout_s
        )
    helo = relay.helo_name
    if helo is None:
        helo = await asyncio.to_thread(socket.getfqdn)
    probes = [("verp", None, None, _verp_address(cfg)), *_sender_probes(domains)]
    reports = await asyncio.gather(*(_check_node(n, relay, helo, probes, rcpt) for n in nodes))
    return CheckReport(
        ok=all(r.ok for r in reports), rcpt_to=rcpt, nodes=list(reports), notes=list(notes)
    )


_ProbeSpec = tuple[str, str | None, str | None, str]  # what, tenant, domain, MAIL FROM


def _verp_address(cfg: Config) -> str:
    """A return path like every message's (``b-<job>-<hmac>@verp_domain``), for job 0."""
    inbound = cfg.inbound
    try:
        if inbound.verp_secret:
            return verp.encode(0, domain=inbound.verp_domain, secret=inbound.verp_secret)
    except ComposeError:
        pass
    return f"nodes-check@{inbound.verp_domain}"


def _sender_probes(domains: Sequence[SendingDomain]) -> list[_ProbeSpec]:
    return [("sender", d.tenant_id, d.domain, d.address) for d in domains]


class _Steps:
    """What opening the session saw, step by step (``NodePool.open_session``'s ``on_step``)."""

    def __init__(self) -> None:
        self.step = "connect"
        self.extensions: dict[str, str] = {}
        self.auth_methods: list[str] = []
        self.tls: TlsReport | None = None

    def __call__(self, step: str, smtp: aiosmtplib.SMTP) -> None:
        self.step = step
        self.seen(smtp)

    def seen(self, smtp: aiosmtplib.SMTP) -> None:
        if smtp.esmtp_extensions:
            self.extensions = {k.upper(): v for k, v in smtp.esmtp_extensions.items()}
            self.auth_methods = [m.upper() for m in smtp.server_auth_methods]
        tls = _tls_report(smtp)
        if tls is not None:
            self.tls = tls


async def _check_node(
    node: RelayNode, relay: RelayConfig, helo: str, probes: Sequence[_ProbeSpec], rcpt: str
) -> NodeReport:
    base = NodeReport(name=node.name, host=node.host, port=node.port, tls_mode=node.tls, ok=False)
    try:
        password = read_secret(
            node.password, node.password_file, f"relay node {node.name} password"
        )
    except EngineError as exc:
        return msgspec.structs.replace(
            base, failed_step="config", error=str(exc), hint=exc.hint, auth="not reached"
        )
    pool = NodePool(node, relay, helo_name=helo, password=password, observer=RelayObserver())
    steps = _Steps()
    try:
        try:
            smtp, proto = await pool.open_session(steps)
        except (aiosmtplib.SMTPException, OSError) as exc:
            return _failed(base, node, steps, exc)
        try:
            steps.seen(smtp)
            results = await _probe_all(smtp, steps.extensions, probes, rcpt)
        finally:
            await pool.end_session(smtp, proto)
    finally:
        await pool.close(timeout=1.0)
    return _opened(base, node, steps, results)


def _failed(base: NodeReport, node: RelayNode, steps: _Steps, exc: BaseException) -> NodeReport:
    error = describe(exc)
    auth = "refused" if steps.step == "auth" else "not reached"
    if node.username is None:
        auth = "not configured"
    log.info("node check failed", extra={"relay": node.name, "step": steps.step, "error": error})
    return msgspec.structs.replace(
        base,
        failed_step=steps.step,
        error=error,
        hint=connect_hint(steps.step, error, tls_mode=node.tls, port=node.port),
        **_session_fields(steps),
        auth=auth,
    )


def _opened(base: NodeReport, node: RelayNode, steps: _Steps, probes: list[Probe]) -> NodeReport:
    fields = _session_fields(steps)
    ext = steps.extensions
    notes: list[str] = []
    if "DSN" not in ext:
        notes.append(NO_DSN_NOTE)
    if "PIPELINING" not in ext:
        notes.append(NO_PIPELINING_NOTE)
    if "CHUNKING" not in ext:
        notes.append("no CHUNKING (RFC 3030): messages go with DATA, one more round trip each")
    if node.tls == "none":
        notes.append(
            'tls = "none": mail and any AUTH cross the network in clear; only for port 25 '
            "from RELAYNETS on a private network"
        )
    if steps.tls is not None and steps.tls.days_left is not None and steps.tls.days_left < 14:
        notes.append(f"the node's certificate expires in {steps.tls.days_left} days")
    return msgspec.structs.replace(
        base,
        ok=all(p.ok for p in probes),
        auth="ok" if node.username is not None else "not configured",
        notes=notes,
        probes=probes,
        **fields,
    )


def _session_fields(steps: _Steps) -> dict[str, object]:
    ext = steps.extensions
    size = ext.get("SIZE", "")
    return {
        "capabilities": {c: c in ext for c in CAPABILITIES} if ext else {},
        "extensions": ext,
        "size_limit": int(size) if size.isascii() and size.isdigit() else None,
        "tls": steps.tls,
        "auth_mechanisms": steps.auth_methods,
    }


async def _probe_all(
    smtp: aiosmtplib.SMTP, ext: dict[str, str], probes: Sequence[_ProbeSpec], rcpt: str
) -> list[Probe]:
    dsn = "DSN" in ext
    mail_options = ["RET=HDRS", f"ENVID={_ENVID}"] if dsn else []
    rcpt_options = ["NOTIFY=FAILURE,DELAY"] if dsn else []
    encoding = "utf-8" if "SMTPUTF8" in ext else "ascii"
    out: list[Probe] = []
    for what, tenant, domain, mail_from in probes:
        probe = Probe(what, mail_from, rcpt, ok=False, tenant_id=tenant, domain=domain)
        if not smtp.is_connected:
            out.append(
                msgspec.structs.replace(
                    probe, reply="not probed: the node closed the session", hint=None
                )
            )
            continue
        out.append(await _probe(smtp, probe, mail_options, rcpt_options, encoding))
    return out


async def _probe(
    smtp: aiosmtplib.SMTP,
    probe: Probe,
    mail_options: list[str],
    rcpt_options: list[str],
    encoding: str,
) -> Probe:
    stage = "MAIL"
    try:
        await smtp.mail(probe.mail_from, options=mail_options, encoding=encoding)
        stage = "RCPT"
        await smtp.rcpt(probe.rcpt_to, options=rcpt_options, encoding=encoding)
    except aiosmtplib.SMTPResponseException as exc:
        result = msgspec.structs.replace(
            probe,
            stage=stage,
            reply_code=exc.code,
            reply=exc.message,
            hint=refusal_hint(exc.code, exc.message, probe.domain or _domain(probe.mail_from)),
        )
    except (aiosmtplib.SMTPException, OSError) as exc:  # timeout, drop
        smtp.close()
        return msgspec.structs.replace(probe, stage=stage, reply=describe(exc))
    except (ValueError, UnicodeError) as exc:
        result = msgspec.structs.replace(probe, stage=stage, reply=f"cannot send: {exc}")
    else:
        result = msgspec.structs.replace(probe, ok=True)
    if smtp.is_connected:
        try:
            await smtp.rset()
        except (aiosmtplib.SMTPException, OSError):
            smtp.close()
    return result


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def _tls_report(smtp: aiosmtplib.SMTP) -> TlsReport | None:
    """The TLS session of a connected client, if it has one."""
    with contextlib.suppress(aiosmtplib.SMTPException):
        obj = smtp.get_transport_info("ssl_object")
        if isinstance(obj, ssl.SSLObject | ssl.SSLSocket):
            return _describe_tls(obj)
    return None


def _describe_tls(obj: ssl.SSLObject | ssl.SSLSocket) -> TlsReport:
    cipher = obj.cipher()
    verified = obj.context.verify_mode == ssl.CERT_REQUIRED
    der = obj.getpeercert(binary_form=True)
    report = TlsReport(
        version=obj.version(), cipher=cipher[0] if cipher else None, verified=verified
    )
    if not der:
        return report
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return report
    expires = cert.not_valid_after_utc
    return msgspec.structs.replace(
        report,
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_after=expires.isoformat(),
        days_left=(expires - datetime.now(UTC)).days,
    )
