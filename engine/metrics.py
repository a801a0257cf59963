"""Every Prometheus metric the engine exports, defined in one place.

Cardinality-safe: no per-recipient or per-message labels; ``tenant`` only where the admin
``tenant_metrics`` switch allows (it is then passed explicitly by the caller).
"""

from __future__ import annotations

from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

REGISTRY = CollectorRegistry(auto_describe=True)

_M = TypeVar("_M", bound=MetricWrapperBase)
_children: dict[tuple[int, tuple[str, ...]], MetricWrapperBase] = {}


def labelled(metric: _M, *values: str) -> _M:
    """``metric.labels(*values)``, remembered: ``labels()`` checks the values, builds a tuple and
    takes a lock on every call, and the send path asks twice per message. The label sets are
    few by design (see above), so the memo stays small. Not for a metric that is ever
    ``clear()``-ed or has children removed: the memo would keep the old child."""
    key = (id(metric), values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return child  # type: ignore[return-value]


MESSAGES = Counter(
    "engine_messages_total",
    "Jobs handled by outcome (relayed, deferred, failed, suppressed, held), receiving provider"
    " (MX rollup; empty when shaping is off) and relay node.",
    ["outcome", "provider", "node"],
    registry=REGISTRY,
)
ENQUEUED = Counter("engine_jobs_enqueued_total", "Jobs accepted at enqueue.", registry=REGISTRY)
ENQUEUE_REJECTED = Counter(
    "engine_jobs_rejected_total", "Jobs refused at enqueue (validation).", registry=REGISTRY
)
QUEUE_DEPTH = Gauge(
    "engine_queue_depth", "Entries waiting on the Redis stream.", ["priority"], registry=REGISTRY
)
QUEUE_OLDEST_AGE = Gauge(
    "engine_queue_oldest_age_seconds",
    "Age of the oldest due job not yet relayed, by priority (0 when none is waiting).",
    ["priority"],
    registry=REGISTRY,
)
RELAY_LATENCY = Histogram(
    "engine_relay_latency_seconds",
    "Time to hand one message to a relay node (MAIL..DATA end).",
    ["node"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
END_TO_END = Histogram(
    "engine_enqueue_to_relay_seconds",
    "Time from enqueue to relayed.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
    registry=REGISTRY,
)
DKIM_SIGN = Histogram(
    "engine_dkim_sign_seconds",
    "Time to DKIM-sign one message.",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
    registry=REGISTRY,
)
DKIM_UNSIGNED = Counter(
    "engine_dkim_unsigned_total",
    "Messages sent unsigned because no key exists and [dkim] required = false.",
    registry=REGISTRY,
)
DKIM_FAILURES = Counter(
    "engine_dkim_failures_total",
    "Messages held because signing failed or a required key was missing.",
    registry=REGISTRY,
)
POOL_CONNECTIONS = Gauge(
    "engine_relay_connections",
    "Relay connections by node and state.",
    ["node", "state"],
    registry=REGISTRY,
)
SHAPING_DELAYS = Counter(
    "engine_shaping_delays_total",
    "Jobs held back by a shaping limit.",
    ["level"],
    registry=REGISTRY,
)
BOUNCES = Counter(
    "engine_bounces_total",
    "Inbound bounces by reason and hard/soft.",
    ["reason", "hard"],
    registry=REGISTRY,
)
COMPLAINTS = Counter(
    "engine_complaints_total",
    "Authenticated feedback-loop complaints by feedback type (RFC 5965 types, else other).",
    ["feedback_type"],
    registry=REGISTRY,
)
INBOUND_UNVERIFIED = Counter(
    "engine_inbound_unverified_total",
    "Complaints and bounces that proved nothing (no VERP, ENVID, own signature or authenticated"
    " reporter): stored, changed nothing.",
    ["kind"],  # complaint | bounce
    registry=REGISTRY,
)
INBOUND_REPLAYED = Counter(
    "engine_inbound_replayed_total",
    "Complaints and bounces already counted for the same job (replays, duplicates): ignored.",
    ["kind"],  # complaint | hard | soft
    registry=REGISTRY,
)
INBOUND_TRUST_DNS_ERRORS = Counter(
    "engine_inbound_trust_dns_errors_total",
    "DNS failures while authenticating a feedback-loop reporter (the report counts as unverified).",
    registry=REGISTRY,
)
RECONCILER_REPAIRS = Counter(
    "engine_reconciler_repairs_total",
    "Jobs the reconciler put back on the fast path (Redis lost them, leases expired, ...).",
    ["kind"],
    registry=REGISTRY,
)
TASK_RUNS = Counter(
    "engine_background_task_runs_total",
    "Calls of a declared background task (engine/periodic.py), failed ones included.",
    ["task"],
    registry=REGISTRY,
)
TASK_ERRORS = Counter(
    "engine_background_task_errors_total",
    "Calls of a declared background task that raised (logged; the task retries after a back-off).",
    ["task"],
    registry=REGISTRY,
)
TASK_DURATION = Gauge(
    "engine_background_task_last_duration_seconds",
    "How long the last call of a declared background task took.",
    ["task"],
    registry=REGISTRY,
)
LOOP_LAG = Gauge(
    "engine_event_loop_lag_seconds",
    "Worst event-loop lag of the last completed second (a 10 ms ticker's late wake-ups).",
    registry=REGISTRY,
)
LOOP_STALLS = Histogram(
    "engine_event_loop_stall_seconds",
    "Event-loop stalls of 5 ms or more (how late the 10 ms ticker woke).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
    registry=REGISTRY,
)
IN_FLIGHT = Gauge("engine_in_flight", "Jobs claimed and not yet written back.", registry=REGISTRY)

# -- operator surface (engine/admin): refreshed by the admin collector, not on the hot path ------
QUEUE_TENANT_PENDING = Gauge(
    "engine_queue_tenant_pending",
    "Jobs queued or deferred for the busiest tenants; exported only with [admin] tenant_metrics.",
    ["tenant"],
    registry=REGISTRY,
)
BACKLOG = Gauge(
    "engine_backlog_jobs",
    "Jobs waiting in PostgreSQL by state (queued, deferred, held) and priority. Exported by one"
    " instance at a time (see engine_backlog_leader), so a sum over instances is the truth.",
    ["state", "priority"],
    registry=REGISTRY,
)
BACKLOG_LEADER = Gauge(
    "engine_backlog_leader",
    "1 on the one instance that exports engine_backlog_jobs (it holds the Redis lease), else 0.",
    registry=REGISTRY,
)
RELAY_NODE_UP = Gauge(
    "engine_relay_node_up",
    "1 while the relay node is healthy (breaker closed, no failure since the last success).",
    ["node"],
    registry=REGISTRY,
)
DB_POOL_CONNECTIONS = Gauge(
    "engine_db_pool_connections",
    "PostgreSQL pool connections of this instance by state (open, idle, max).",
    ["state"],
    registry=REGISTRY,
)
ADMIN_REQUESTS = Counter(
    "engine_admin_requests_total",
    "Admin side-port requests by route pattern and HTTP status.",
    ["route", "status"],
    registry=REGISTRY,
)
DRAINING = Gauge(
    "engine_draining",
    "1 once a drain was requested (SIGTERM or POST /v1/drain): no new work is taken.",
    registry=REGISTRY,
)

# -- events and webhooks (engine/events): labels are bounded (kind, result), never per endpoint --
EVENTS_PUBLISHED = Counter(
    "engine_events_published_total",
    "Events published to the Redis event stream, by kind.",
    ["kind"],
    registry=REGISTRY,
)
EVENTS_PUBLISH_FAILURES = Counter(
    "engine_events_publish_failures_total",
    "Publisher rounds that could not XADD (Redis down); the events stay in oltp.events and are"
    " published once Redis answers.",
    registry=REGISTRY,
)
EVENTS_STREAM_LAG = Gauge(
    "engine_events_stream_lag_seconds",
    "Age of the newest event the publisher has put on the stream when it published it.",
    registry=REGISTRY,
)
WEBHOOK_DELIVERIES = Counter(
    "engine_webhook_deliveries_total",
    "Webhook POSTs by result (ok, failed, dead_letter, refused: URL no longer allow-listed).",
    ["result"],
    registry=REGISTRY,
)
WEBHOOK_EVENTS = Counter(
    "engine_webhook_events_total",
    "Events delivered to webhook endpoints (ok) or given up on (dead_letter).",
    ["result"],
    registry=REGISTRY,
)
WEBHOOK_LATENCY = Histogram(
    "engine_webhook_latency_seconds",
    "Time of one webhook POST, connect to response.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)

# -- inbound listener (engine/inbound): causes and reasons are fixed sets ------------------------
INBOUND_QUARANTINED = Counter(
    "engine_inbound_quarantined_total",
    "Inbound messages quarantined (never parsed again until `engine bounce requeue`), by cause:"
    " budget (CPU budget spent), crash (parse worker died twice), error (the parser raised),"
    " effects (applying it failed while PostgreSQL answered).",
    ["cause"],
    registry=REGISTRY,
)
INBOUND_PARSE_CPU = Histogram(
    "engine_inbound_parse_cpu_seconds",
    "CPU one inbound message took in its parse process (quarantined ones included).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
    registry=REGISTRY,
)
INBOUND_QUEUE_DEPTH = Gauge(
    "engine_inbound_queue_depth",
    "Inbound messages accepted and not yet applied or quarantined (bounded by [inbound]"
    " queue_max; full -> 421).",
    registry=REGISTRY,
)
INBOUND_REFUSED = Counter(
    "engine_inbound_refused_total",
    "Inbound SMTP refusals with 421 by cause: connections (global cap), ip_connections,"
    " ip_rate_minute, ip_messages_hour, ip_bytes_hour, queue_full, session_time (a session past"
    " [inbound] max_session_s).",
    ["cause"],
    registry=REGISTRY,
)
