"""What ``engine nodes check`` found on a relay node, and what to change on MailU (sans-IO).

The structs are the report (``--json`` and ``GET /v1/nodes/check`` print them as they are);
:func:`refusal_hint` and :func:`connect_hint` turn a refusal into the MailU setting an operator
changes (docs/mailu.md); :func:`render` is the text form. No I/O here: the tests feed replies.
"""

from __future__ import annotations

import re

import msgspec

from engine.smtp.codes import parse_enhanced_status

__all__ = [
    "CAPABILITIES",
    "CheckReport",
    "NodeReport",
    "Probe",
    "TlsReport",
    "connect_hint",
    "refusal_hint",
    "render",
]

#: The EHLO keywords the report names one by one (RFC 2920, 3030, 3461, 1870, 6531, 6152, 2034).
CAPABILITIES: tuple[str, ...] = (
    "PIPELINING",
    "CHUNKING",
    "DSN",
    "SIZE",
    "SMTPUTF8",
    "8BITMIME",
    "ENHANCEDSTATUSCODES",
)

NO_DSN_NOTE = (
    "no DSN (RFC 3461): delivery feedback through this node is off — the engine learns of "
    "provider deferrals, delays and deliveries only when the node offers DSN (MailU's Postfix "
    "does on port 25; docs/mailu.md, 'Ports')"
)
NO_PIPELINING_NOTE = "no PIPELINING (RFC 2920): one round trip per command, slower relaying"


class TlsReport(msgspec.Struct, frozen=True):
    """The TLS session the engine got: protocol, cipher and the node's certificate."""

    version: str | None
    cipher: str | None
    verified: bool  # the chain and host name were checked (verify_tls = true) and passed
    subject: str | None = None
    issuer: str | None = None
    not_after: str | None = None  # ISO 8601, UTC
    days_left: int | None = None


class Probe(msgspec.Struct, frozen=True):
    """One dry-run transaction: MAIL FROM, RCPT TO, then RSET (nothing is sent)."""

    what: str  # "verp" (the return path every message carries) | "sender" (a tenant's domain)
    mail_from: str
    rcpt_to: str
    ok: bool
    tenant_id: str | None = None
    domain: str | None = None
    stage: str | None = None  # MAIL | RCPT: where it was refused
    reply_code: int | None = None
    reply: str | None = None
    hint: str | None = None


class NodeReport(msgspec.Struct, frozen=True):
    """Everything one node answered; ``ok`` is false when it refuses what the engine needs."""

    name: str
    host: str
    port: int
    tls_mode: str
    ok: bool
    failed_step: str | None = None  # connect | ehlo | starttls | auth | None
    error: str | None = None
    hint: str | None = None
    capabilities: dict[str, bool] = {}
    extensions: dict[str, str] = {}  # every EHLO keyword (upper case) → its parameters
    size_limit: int | None = None
    tls: TlsReport | None = None
    auth_mechanisms: list[str] = []
    auth: str = "not configured"  # ok | refused | not configured | not reached
    notes: list[str] = []
    probes: list[Probe] = []


class CheckReport(msgspec.Struct, frozen=True):
    """``engine nodes check``: every node checked; ``ok`` is the exit status (true: 0)."""

    ok: bool
    rcpt_to: str
    nodes: list[NodeReport]
    notes: list[str] = []


# -- hints ---------------------------------------------------------------------------------------

_LOGIN_MISMATCH = re.compile(r"not owned by|login mismatch|sender address rejected", re.I)
_RELAY_DENIED = re.compile(r"relay(ing)? (access )?denied|not permitted to relay|relay not", re.I)
_RATE = re.compile(r"rate.?limit|too many|exceeded|slow down|try again later", re.I)
_AUTH_NEEDED = re.compile(r"authentication required|must authenticate", re.I)

HINT_LOGIN = (
    "MailU checks that an authenticated sender owns the address (sender login mismatch): let "
    "the relay user send as any address of {domain} (MailU's per-user 'Allow the user to spoof "
    "the sender', or a sender login entry for @{domain}) or send from a host in RELAYNETS on "
    "port 25 without AUTH (docs/mailu.md, 'The relay user')"
)
HINT_RELAY = (
    "MailU refuses to relay for this client: add the engine's address to RELAYNETS in "
    "mailu.env (port 25, no AUTH) or authenticate as a MailU user (username/password_file in "
    "[[relay.nodes]]) (docs/mailu.md, 'The relay user')"
)
HINT_RATE = (
    "MailU's rate limit refused it: raise or disable MESSAGE_RATELIMIT for the relay "
    "(mailu.env; 200/day by default) — docs/mailu.md, 'Rate limits'"
)
HINT_AUTH_NEEDED = (
    "the node wants AUTH: set username and password_file on this [[relay.nodes]] entry (a "
    "MailU user), or put the engine's address in RELAYNETS and use port 25"
)


def refusal_hint(code: int | None, text: str, domain: str | None = None) -> str:
    """The MailU setting to change for a refused MAIL FROM or RCPT TO."""
    status = parse_enhanced_status(text) or ""
    if _LOGIN_MISMATCH.search(text):
        return HINT_LOGIN.format(domain=domain or "your-domain")
    if _RELAY_DENIED.search(text):
        return HINT_RELAY
    if code == 530 or _AUTH_NEEDED.search(text):
        return HINT_AUTH_NEEDED
    if status.startswith("4.7.") or (code is not None and 400 <= code < 500 and _RATE.search(text)):
        return HINT_RATE
    if code is not None and 400 <= code < 500:
        return "a temporary refusal: run the check again; if it persists, read the node's log"
    return "the node refused it: read the reply above and the node's mail log"


def connect_hint(step: str, error: str, *, tls_mode: str, port: int) -> str:
    """What to check when opening the session failed at ``step``."""
    low = error.lower()
    if step == "connect":
        if "refused" in low:
            return (
                f"nothing listens on port {port}: is the node up and the port published "
                "(25 relay, 587 STARTTLS, 465 implicit TLS)?"
            )
        if "timed out" in low or "timeout" in low:
            return (
                "no answer in time: a firewall dropping the connection, a wrong host, or a "
                "node too busy to greet; try a larger --timeout"
            )
        if "certificate" in low or "ssl" in low or "tls" in low:
            return _tls_hint(tls_mode, port)
        return "check host and port of this [[relay.nodes]] entry"
    if step == "starttls":
        if "not supported" in low or ("starttls" in low and "extension" in low):
            return (
                "the node does not offer STARTTLS on this port: use port 587 with "
                'tls = "starttls", or 465 with tls = "implicit"'
            )
        return _tls_hint(tls_mode, port)
    if step == "auth":
        if "not supported" in low or "no suitable" in low:
            return (
                "the node offers no AUTH here (MailU's Postfix on port 25 does not): use "
                "port 587/465 for AUTH, or drop username and use RELAYNETS on port 25"
            )
        return (
            "AUTH refused: check username and password_file of this [[relay.nodes]] entry "
            "against the MailU user (a relay user with a wildcard sender; docs/mailu.md)"
        )
    return "the node broke off the session: read its log"


def _tls_hint(tls_mode: str, port: int) -> str:
    return (
        "TLS failed: the certificate must be valid for the host name in [[relay.nodes]] host "
        "(MailU's TLS_FLAVOR letsencrypt or cert), or name its CA in ca_file; "
        f'tls = "{tls_mode}" on port {port} must match what the port speaks '
        "(587 STARTTLS, 465 implicit TLS)"
    )


# -- text form -----------------------------------------------------------------------------------


def render(report: CheckReport) -> str:
    """The report for a terminal, one node after the other."""
    lines: list[str] = []
    for node in report.nodes:
        lines.extend(_render_node(node, report.rcpt_to))
    lines.extend(f"note: {n}" for n in report.notes)
    failed = [n.name for n in report.nodes if not n.ok]
    lines.append(
        "verdict: every node takes what the engine needs"
        if report.ok
        else f"verdict: {', '.join(failed)} refuse(s) what the engine needs"
    )
    return "\n".join(lines)


def _render_node(node: NodeReport, rcpt: str) -> list[str]:
    verdict = "OK" if node.ok else "FAILED"
    out = [f"node {node.name} {node.host}:{node.port} tls={node.tls_mode}: {verdict}"]
    if node.failed_step is not None:
        out.append(f"  failed at {node.failed_step}: {node.error}")
    if node.capabilities:
        caps = " ".join(f"{k}{'' if v else ' (no)'}" for k, v in node.capabilities.items())
        size = f", SIZE limit {node.size_limit} bytes" if node.size_limit else ""
        out.append(f"  capabilities: {caps}{size}")
    if node.tls is not None:
        t = node.tls
        verified = "verified" if t.verified else "NOT verified (verify_tls = false)"
        out.append(f"  tls: {t.version} {t.cipher}, certificate {verified}")
        if t.subject:
            left = f", {t.days_left} days left" if t.days_left is not None else ""
            out.append(
                f"       subject {t.subject}; issuer {t.issuer}; expires {t.not_after}{left}"
            )
    mechs = " ".join(node.auth_mechanisms) or "none offered"
    out.append(f"  auth: {node.auth} (mechanisms: {mechs})")
    for p in node.probes:
        where = f"tenant {p.tenant_id} " if p.tenant_id else ""
        head = f"  {p.what} {where}MAIL FROM:<{p.mail_from}> RCPT TO:<{rcpt}>"
        if p.ok:
            out.append(f"{head}: accepted")
        else:
            out.append(f"{head}: REFUSED at {p.stage}: {p.reply_code} {p.reply}")
    if node.hint:
        out.append(f"  fix: {node.hint}")
    hints = sorted({p.hint for p in node.probes if p.hint})
    out.extend(f"  fix: {h}" for h in hints)
    out.extend(f"  note: {n}" for n in node.notes)
    return out
