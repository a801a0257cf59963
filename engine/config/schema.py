"""The configuration tree: every section as a frozen msgspec struct, with its defaults."""

from __future__ import annotations

from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import msgspec

DEFAULT_CONFIG_PATH = Path("/etc/penguinmails-engine/engine.toml")
ENV_PREFIX = "ENGINE_"
#: Where an operator's copy of a data file (providers.toml, bounce_patterns.toml) overrides the
#: one shipped in the package.
SYSTEM_DATA_DIR = DEFAULT_CONFIG_PATH.parent


def packaged_data_file(name: str) -> Path:
    """A data file shipped inside the package (``engine/data/NAME``), in a checkout or a wheel."""
    return Path(str(resources.files("engine").joinpath("data", name)))


def data_file_candidates(name: str) -> tuple[Path, ...]:
    """Where data file ``name`` is looked for, first match wins: the operator's copy in
    ``/etc/penguinmails-engine/``, then the packaged one."""
    return (SYSTEM_DATA_DIR / name, packaged_data_file(name))


def data_file(name: str) -> Path:
    """The data file ``name`` to read (see :func:`data_file_candidates`)."""
    candidates = data_file_candidates(name)
    return next((p for p in candidates if p.exists()), candidates[-1])


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class TierDatabaseConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[database.queue]``, ``.oltp``, ``.content``, ``.olap``: a tier on its own server."""

    dsn: str | None = None  # unset: [database] dsn
    replica_dsn: str | None = None  # unset: [database] replica_dsn


class DatabaseConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Several hosts, tried in order, with the primary found by target_session_attrs:
    # "postgresql://u@h1:5432,h2:5432/db?target_session_attrs=read-write" (docs/operations.md).
    dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    # A streaming replica for read-only queries (status, backlog, searches, metrics); unset or
    # down: they go to the primary.
    replica_dsn: str | None = None
    # How often a replica marked down is tried again.
    replica_retry_s: float = 5.0
    pool_min: int = 2
    pool_max: int = 10
    command_timeout_s: float = 30.0
    # A connection attempt that hangs (e.g. into a server that is restarting) is abandoned and
    # retried after this, instead of asyncpg's default 60 s during which nothing is sent.
    connect_timeout_s: float = 10.0
    statement_cache_size: int = 256
    # The role every pooled connection takes (SET ROLE at connect) under the database's tenant
    # rules: "engine_worker" for the daemon (docs/security.md, "The database enforces it").
    # Unset: the DSN's login role. Migrations always run as the login role (owner).
    role: str | None = None
    # Each tier may get its own server (DESIGN §2/§8): content and olap may live apart; queue
    # and oltp stay with [database] (docs/scaling.md, "Tiers on separate servers").
    queue: TierDatabaseConfig = TierDatabaseConfig()
    oltp: TierDatabaseConfig = TierDatabaseConfig()
    content: TierDatabaseConfig = TierDatabaseConfig()
    olap: TierDatabaseConfig = TierDatabaseConfig()

    def apart(self, tier: str) -> bool:
        """Whether ``tier`` lives on another server than ``dsn``."""
        own = getattr(self, tier).dsn
        return own is not None and own != self.dsn

    def for_tier(self, tier: str) -> DatabaseConfig:
        """The settings of ``tier``'s server: this one when the tier is not apart; else its DSN
        and its own replica (none when unset: [database]'s replica copies another server)."""
        if not self.apart(tier):
            return self
        own = getattr(self, tier)
        return msgspec.structs.replace(
            self,
            dsn=own.dsn,
            replica_dsn=own.replica_dsn,
            queue=TierDatabaseConfig(),
            oltp=TierDatabaseConfig(),
            content=TierDatabaseConfig(),
            olap=TierDatabaseConfig(),
        )

    @property
    def servers(self) -> list[str]:
        """Every distinct server DSN, [database]'s first (what ``engine migrate`` migrates)."""
        found = [self.dsn] + [self.for_tier(t).dsn for t in ("content", "olap")]
        return list(dict.fromkeys(found))


class RedisConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    url: str = "redis://127.0.0.1:6379/0"
    # Every key the engine writes starts with this; lets tests and several engines share a server.
    prefix: str = "pm"
    socket_timeout_s: float = 10.0
    # "single": one server at `url`; "cluster": Redis Cluster, `url` names any node (the
    # others are discovered); "sentinel": the master of `service_name` as the `sentinels`
    # ("host:port") report it, followed across failovers (`url` then supplies db/password).
    mode: Literal["single", "cluster", "sentinel"] = "single"
    sentinels: list[str] = []
    service_name: str = "mymaster"
    # The sentinels' own password (their `requirepass`, which may differ from the master's in
    # `url`), read from a private file (0600); unset: the sentinels ask for none.
    sentinel_password_file: str | None = None
    # Shards per priority stream, each in its own hash slot so a cluster spreads the queue over
    # its masters. 0: automatic (1 in single/sentinel mode, 8 in cluster mode). Every engine
    # sharing a Redis must use the same number.
    stream_shards: int = 0


class QueueConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    batch_size: int = 256  # stream entries read per XREADGROUP
    max_in_flight: int = 512  # jobs claimed and not yet written back, per daemon
    lease_s: float = 120.0  # a claimed job whose owner died is retried after this
    max_age_s: float = 3 * 86400.0  # deferred jobs older than this fail as expired
    retry_base_s: float = 60.0
    retry_max_s: float = 3600.0
    retry_jitter: float = 0.2
    reconcile_interval_s: float = 15.0
    reconcile_after_s: float = 300.0  # a pushed job still queued after this is pushed again
    feeder_interval_s: float = 1.0
    feeder_batch: int = 5000
    # The feeder stops pushing while the streams hold this many entries: a few seconds of work,
    # so Redis stays small with millions queued and tenants' turns (fair feeding) stay short.
    stream_high_water: int = 4000
    # ...and, below that, keeps at most this many seconds of work unread on each priority's
    # streams, at the send rate measured across every engine: a job pushed now (another
    # tenant's, a high-priority one) waits behind about this much. 0: no time cap.
    stream_backlog_s: float = 0.5
    # The time cap never goes below this many unread entries per priority (start-up, slow rates).
    stream_backlog_min: int = 64
    # Each dispatcher holds at most this many seconds of its measured finishing rate in flight
    # (never fewer than in_flight_min jobs, never more than max_in_flight): jobs in flight are
    # ahead of every job read after them. 0: always max_in_flight.
    in_flight_s: float = 0.5
    in_flight_min: int = 128
    outcome_flush_ms: float = 20.0
    outcome_batch: int = 500
    max_message_bytes: int = 25 * 1024 * 1024
    # Composed message bodies kept per daemon (least recently used out): enough for every
    # campaign in flight, or each job rebuilds its MIME on the event loop.
    body_cache_mb: int = 64
    consumer_name: str = ""  # default: <hostname>-w<worker>, stable across restarts
    # Stream entries read per round from high, normal, low: high is preferred, low never starves.
    weights: list[int] = msgspec.field(default_factory=lambda: [8, 4, 1])


class RelayNode(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    host: str
    port: int = 587
    tls: Literal["none", "starttls", "implicit"] = "starttls"
    username: str | None = None
    password: str | None = None
    password_file: str | None = None
    max_connections: int = 8
    weight: int = 1
    verify_tls: bool = True
    ca_file: str | None = None
    max_messages_per_connection: int = 1000
    # Tenant pools (docs/compliance.md): a node naming tenants is dedicated to them; other
    # tenants never use it, and those tenants use only their dedicated nodes unless one of
    # them sets fallback_shared = true (then shared nodes follow when the dedicated are down).
    tenants: list[str] = []
    fallback_shared: bool = False
    # IP warm-up of a new node: a daily cap growing over ~30 days from warmup_started (ISO
    # date, UTC); a warming node past today's cap is skipped like a node that is down.
    warmup: bool = False
    warmup_started: str | None = None


class RelayConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    nodes: list[RelayNode] = []
    helo_name: str | None = None
    connect_timeout_s: float = 10.0
    command_timeout_s: float = 60.0
    breaker_failures: int = 5
    breaker_cooldown_s: float = 30.0
    health_interval_s: float = 10.0
    # RFC 3461 DSN on every relay transaction the node offers DSN for (docs/relay.md, "DSN"):
    # NOTIFY=FAILURE,DELAY always; this share of jobs (0-1, chosen by job id) also gets
    # NOTIFY=SUCCESS, whose notices become `delivered` events.
    dsn: bool = True
    dsn_success_fraction: float = 0.01


class DkimKey(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    domain: str
    selector: str
    algorithm: Literal["rsa-sha256", "ed25519-sha256"] = "rsa-sha256"
    private_key_file: str
    # The tenant whose mail this key signs (its domain and subdomains), and no other tenant's;
    # the platform's own keys name the platform's tenant. Unset: a legacy shared key (any
    # tenant's mail from exactly this domain or a subdomain: docs/security.md).
    tenant: str | None = None


class DkimConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = True
    required: bool = False
    keys: list[DkimKey] = []
    # AES-256-GCM key (base64, 32 bytes) for private keys stored in the oltp tier.
    master_key: str | None = None
    master_key_file: str | None = None
    # At start, look up each [[dkim.keys]] TXT record and drop keys whose record is missing or
    # publishes another key (with required = true their mail is then held, never signed with a
    # key receivers cannot verify). Off by default: tests, demo and benchmarks run offline.
    check_dns: bool = False
    # Where the daemon signs: "process" (worker processes fed over pipes, off the daemon's GIL:
    # more msg/s, one interpreter's memory each) or "thread" (threads in the daemon's own
    # process: least memory). docs/dkim.md and bench/README.md have the figures.
    signer: Literal["process", "thread"] = "process"
    # How many signer processes (or threads); 0: one per core.
    signer_workers: int = 0


class ShapingProvider(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    mx_suffixes: list[str] = []
    rate_per_s: float = 10.0
    max_connections: int = 10
    max_messages_per_connection: int = 100
    # Recipient domains known to be the provider's (gmail.com, …): the Postfix transport map
    # `engine mailu overrides` renders, so a MailU node paces them as one provider.
    domains: list[str] = []


class ShapingConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = True
    default_rate_per_s: float = 5.0
    warmup: bool = True
    providers: list[ShapingProvider] = []
    providers_file: str | None = None  # default: config.data_file("providers.toml")
    complaint_pause_rate: float = 0.003
    hard_bounce_pause_rate: float = 0.05
    reputation_window_s: float = 86400.0
    min_rate_per_s: float = 0.05
    # Below: added by engine/shaping (docs/shaping.md). A rate of 0 means "no limit at this level".
    tenant_rate_per_s: float = 0.0  # per tenant, unless oltp.shaping_tenant_quotas says otherwise
    sender_domain_rate_per_s: float = 0.0
    sender_rate_per_s: float = 0.0
    node_rate_per_s: float = 0.0
    burst_s: float = 1.0  # every bucket may burst this many seconds' worth of its rate (>= 1 msg)
    pause_min_sample: int = 100  # no auto-pause before this many messages in the window
    paused_retry_s: float = 300.0  # a paused sender's jobs are re-queued this far out
    aimd_increase: float = 0.05  # fraction of the ceiling gained per `rate` clean deliveries
    aimd_decrease: float = 0.5  # factor applied on 421 / 4.7.x throttling
    aimd_cooldown_s: float = 2.0  # at most one decrease per sender x provider in this time
    aimd_initial: float = 1.0  # a new sender x provider starts at this fraction of the ceiling
    # Daily cap per sender x provider, one stage per clean day, no cap past the last stage;
    # empty means the built-in 30-day plan (engine/shaping/warmup.py: 50, 100, 200, ... 500000).
    warmup_plan: list[int] = []
    warmup_max_bounce_rate: float = 0.02  # above: hold the stage; above twice this: step back
    warmup_max_complaint_rate: float = 0.001
    warmup_min_sample: int = 20  # a day with fewer messages sent holds the stage


class DnsConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    overrides: dict[str, list[str]] = {}
    # TXT answers by name (e.g. "sel._domainkey.fbl.example" or an SPF domain), answered before
    # the resolver is asked: tests and offline setups (inbound trust: reporter DKIM keys, SPF).
    txt_overrides: dict[str, list[str]] = {}
    timeout_s: float = 3.0
    cache_ttl_s: float = 3600.0
    negative_ttl_s: float = 300.0


# --- VERP / unsubscribe secrets (engine/compose/verp_keys.py, docs/operations.md "Secrets") ---
#: The HMAC key of b-/u- addresses and one-click tokens must be at least this long: it is all
#: that stops anyone minting a valid bounce or unsubscribe address for a sequential job id.
MIN_VERP_SECRET_BYTES = 32
#: Values that were or are shown in examples/defaults (config/engine.toml, old defaults, the old
#: demo): public, so refused whatever their length.
EXAMPLE_VERP_SECRETS = frozenset(
    {
        "change-me",
        "change-me-to-a-long-random-string",
        "demo-secret",
        "replace-me-with-the-output-of-openssl-rand-hex-32",
    }
)
#: Fewer distinct characters than this is a placeholder ("xxxx...", "0000..."), not a random key.
MIN_VERP_SECRET_DISTINCT = 8
#: What to do about a missing or guessable VERP secret (every refusal says it).
VERP_SECRET_HINT = (
    "generate one with: openssl rand -hex 32 > /etc/penguinmails-engine/verp.secret;"
    " chmod 600 it and set [inbound] verp_secret_file to its path"
)
#: A guessable old secret is never accepted again, not even for a rotation window.
_DROP_PREVIOUS = "remove this entry: addresses signed with a guessable secret cannot be trusted"


class VerpPreviousSecret(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A VERP secret being rotated out: still accepted when decoding until ``until``."""

    secret: str = ""  # inline, or
    secret_file: str | None = None  # from a 0600 file (read at load); exactly one of the two
    until: Annotated[datetime, msgspec.Meta(tz=True)]  # RFC 3339 with a zone, e.g. ...T00:00:00Z


# --- end of the VERP secrets block ---


class FblReporter(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A feedback-loop reporter whose complaints are believed once it authenticates.

    ``require``: ``dkim`` (the report carries a valid DKIM signature with d= equal to or under
    ``domain``, body included), ``spf`` (the SMTP MAIL FROM domain is under ``domain`` and SPF
    passes for the connecting IP), or ``dkim_or_spf``. ``addresses``: the only senders its
    reports come from (dkim: the signed From; spf: the MAIL FROM); empty: any address under
    ``domain``, which for a mailbox provider includes every one of its users.
    """

    domain: str
    require: Literal["dkim", "spf", "dkim_or_spf"] = "dkim"
    addresses: list[str] = []


class InboundConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = True
    listen: str = "127.0.0.1:2525"
    verp_domain: str = "bounces.localhost"
    # --- VERP / unsubscribe secrets: a contiguous block (see VerpPreviousSecret above) ---
    # The HMAC key of every b-/u- address and one-click token the engine makes: >= 32 bytes,
    # not an example value (refused at load); unset ("") is refused when the daemon starts.
    # Inline (or ENGINE_INBOUND__VERP_SECRET), or verp_secret_file (a 0600 file, read at load,
    # its value replaces verp_secret in the loaded tree); never both.
    verp_secret: str = ""
    verp_secret_file: str | None = None
    # Rotation: secrets still accepted (never used to sign) until each one's `until`.
    verp_previous: list[VerpPreviousSecret] = []
    # --- end of the VERP secrets block ---
    fbl_addresses: list[str] = []
    max_message_bytes: int = 10 * 1024 * 1024
    max_connections_per_ip: int = 20
    max_messages_per_minute_per_ip: int = 600
    # All clients together: over it a new connection gets 421 before the greeting.
    max_connections: int = 200
    # Per client IP over a sliding hour (421 4.7.0 beyond). A big provider's outbound MX sends a
    # few thousand bounces an hour at most (a 1% bounce rate on 100k messages/hour to it, spread
    # over its many IPs); DSNs are 5-50 kB.
    max_messages_per_hour_per_ip: int = 10_000
    max_bytes_per_hour_per_ip: int = 1 << 30  # 1 GiB
    # The queue in front of the parser (messages and raw bytes): full -> 421 4.3.2 at DATA.
    queue_max: int = 1000
    queue_max_bytes: int = 256 * 1024 * 1024
    parse_workers: int = 1  # parse processes (each uses up to one core while mail arrives)
    # CPU one message may take in its parse process; beyond it the process is killed and the
    # message quarantined (stored, never parsed again until `engine bounce requeue ID`).
    parse_cpu_budget_ms: float = 250.0
    # Stored messages not queued (start-up recovery, requeued ones) are read this often.
    sweep_interval_s: float = 5.0
    timeout_s: float = 60.0  # idle SMTP session timeout
    # Longest SMTP session, busy or not (then 421 and closed): a NOOP now and then keeps a
    # session from being idle, and a few IPs could hold every connection slot for good.
    max_session_s: float = 600.0
    tls_cert_file: str | None = None  # offer STARTTLS when both are set
    tls_key_file: str | None = None
    # Public https base of the one-click unsubscribe route (served by the admin side-port under
    # /v1/unsubscribe/<token>, usually behind a reverse proxy). Unset: mailto unsubscribes only.
    unsubscribe_url: str | None = None
    soft_bounce_limit: int = 3  # soft bounces of one address within the window before it is
    soft_bounce_window_days: int = 7  # suppressed for soft_bounce_suppress_days
    soft_bounce_suppress_days: int = 30
    retention_days: int = 30
    # Complaints act only when authenticated: our own DKIM signature in the quoted original, or
    # one of these reporters authenticated by DKIM and/or SPF. Anything else is counted as
    # unverified and changes nothing.
    fbl_reporters: list[FblReporter] = []


class EventsConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Event stream and webhooks (engine/events, docs/events.md)."""

    stream_maxlen: int = 1_000_000  # approximate MAXLEN of the Redis event stream
    publish_interval_ms: float = 100.0  # the publisher polls oltp.events this often
    publish_batch: int = 1000  # events per XADD pipeline
    webhook_batch: int = 100  # events per POST, at most
    webhook_flush_ms: float = 500.0  # new events wait this long to fill a batch
    webhook_timeout_s: float = 10.0  # total time of one POST
    webhook_max_age_s: float = 3 * 86400.0  # a batch failing this long goes to the dead letters
    webhook_retry_base_s: float = 5.0  # first retry delay; doubles per failure, with jitter
    webhook_retry_max_s: float = 3600.0
    webhook_concurrency: int = 32  # endpoints delivered to at once
    # Host patterns (fnmatch: "*.hooks.example.com") webhook URLs may name. Whatever the name,
    # every address it resolves to must be global unicast (no loopback, private, link-local,
    # CGNAT, multicast, metadata or reserved address: engine/events/ssrf.py) unless it lies in
    # one of webhook_allow_cidrs; the port must be one of webhook_ports.
    webhook_allow: list[str] = msgspec.field(default_factory=lambda: ["*"])
    webhook_allow_cidrs: list[str] = []  # e.g. ["10.20.0.0/16"]: internal receivers you trust
    webhook_ports: list[int] = msgspec.field(default_factory=lambda: [80, 443])


class AdminConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = True
    listen: str = "127.0.0.1:8025"
    token: str | None = None
    token_file: str | None = None
    tenant_metrics: bool = False
    # Per tenant API key, on POST /v1/messages (engine/keys/ratelimit.py): jobs per second and
    # the bucket size (a full batch of 10,000 fits). The operator token is not limited.
    key_enqueue_rate_per_s: float = 500.0
    key_enqueue_burst: int = 10_000


class ComplianceConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Sender compliance check (engine/compliance, docs/compliance.md)."""

    # Public IPs the relay nodes send from: SPF must allow them, their PTR must forward-confirm.
    relay_ips: list[str] = []
    # Check sender domains from the daemon: new ones at their first use (within poll_s of the
    # first enqueue), each known one again once per check_interval_s.
    # Off by default: it queries public DNS, which test and demo hosts must not do.
    auto_check: bool = False
    # What a failing sender domain gets: "warn" (recorded and logged), "throttle" (a per-sender
    # domain rate ceiling of throttle_rate_per_s msg/s that shaping applies), "block" (its senders
    # are paused with the reason).
    on_fail: Literal["warn", "throttle", "block"] = "warn"
    throttle_rate_per_s: float = 0.1
    check_interval_s: float = 86400.0  # re-check a domain this long after its last check
    # How often the daemon looks for new sender domains (checked at their first use), stale
    # verdicts and new addresses of blocked domains.
    poll_s: float = 60.0
    dns_timeout_s: float = 3.0


class RetentionConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How long each tier keeps rows (engine/retention.py); 0 keeps them forever."""

    content_days: int = 30  # bodies/attachments no unfinished job needs
    inbound_days: int | None = None  # raw bounces and complaints; None: [inbound] retention_days
    events_days: int = 90
    jobs_days: int = 30  # finished jobs (relayed, bounced, failed, ...)
    audit_days: int = 0  # the operator audit log
    batch_size: int = 5000  # rows deleted per statement (short locks)


class SecurityConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Tenant isolation at enqueue (docs/security.md)."""

    # On: a job's From (and a raw message's From/Sender) must be under one of its tenant's
    # verified sending domains (engine domains). Off: only tenants that registered a domain are
    # held to their domains, the others send as before (the upgrade path of existing installs).
    enforce_sender_domains: bool = True
    # Trace/authentication fields (Received, Return-Path, Authentication-Results, ARC-*,
    # DKIM-Signature, Received-SPF) in a raw message: "refuse" the job, or "strip" them.
    raw_trace_headers: Literal["refuse", "strip"] = "refuse"


class LogConfig(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


class Config(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    database: DatabaseConfig = DatabaseConfig()
    redis: RedisConfig = RedisConfig()
    queue: QueueConfig = QueueConfig()
    relay: RelayConfig = RelayConfig()
    dkim: DkimConfig = DkimConfig()
    shaping: ShapingConfig = ShapingConfig()
    dns: DnsConfig = DnsConfig()
    inbound: InboundConfig = InboundConfig()
    events: EventsConfig = EventsConfig()
    admin: AdminConfig = AdminConfig()
    log: LogConfig = LogConfig()
    compliance: ComplianceConfig = ComplianceConfig()
    retention: RetentionConfig = RetentionConfig()
    security: SecurityConfig = SecurityConfig()
