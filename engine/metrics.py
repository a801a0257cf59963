"""Every Prometheus metric the engine exports, defined in one place.

Cardinality-safe: no per-recipient or per-message labels; ``tenant`` only where the admin
``tenant_metrics`` switch allows (it is then passed explicitly by the caller).

With ``engine run --workers N`` the supervisor gives every worker the same fresh directory in
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode): each worker writes its
values to memory-mapped files there and worker 0's ``/metrics`` reads them all
(:func:`scrape_registry`). Counters and histograms add up over the workers, dead ones included,
so they never go backwards when a worker is restarted. Each gauge says how its workers' values
combine (``multiprocess_mode``): ``livesum`` for what each worker holds (jobs in flight,
connections), ``livemax``/``livemin`` for worst-of (loop lag, node up), ``livemostrecent`` for a
shared fact every worker measures alike (stream depth, oldest job); ``live*`` modes drop a worker
once it is gone (:func:`forget_worker`). A single process keeps plain in-memory values. Either
way the scrape adds ``process_*`` (per worker, ``pid`` label, in multiprocess mode), the
platform, GC (single process only: prometheus_client has no cross-process GC figures) and
``engine_build_info``.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    multiprocess,
)
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from engine import __version__

#: The environment variable that switches prometheus_client to multiprocess mode; it must be set
#: before the first import of prometheus_client (the supervisor sets it for its workers).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MULTIPROCESS = bool(os.environ.get(MULTIPROC_ENV))

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
ENQUEUED = Counter(
    "engine_jobs_enqueued_total",
    "Jobs committed to queue.jobs by any path (SQL, client, CLI, admin API); each counted by one"
    " instance only (engine/queue/tally.py), so the sum over instances is the total.",
    registry=REGISTRY,
)
ENQUEUE_REJECTED = Counter(
    "engine_jobs_rejected_total", "Jobs refused at enqueue (validation).", registry=REGISTRY
)
QUEUE_DEPTH = Gauge(
    "engine_queue_depth",
    "Entries waiting on the Redis stream.",
    ["priority"],
    multiprocess_mode="livemostrecent",
    registry=REGISTRY,
)
OLAP_OUTBOX_ROWS = Gauge(
    "engine_olap_outbox_rows",
    "Count batches waiting in queue.olap_outbox for the olap server ([database.olap] on another"
    " server only; grows while that server is down).",
    multiprocess_mode="livemostrecent",
    registry=REGISTRY,
)
OLAP_OUTBOX_OLDEST_AGE = Gauge(
    "engine_olap_outbox_oldest_age_seconds",
    "Age of the oldest batch waiting in queue.olap_outbox: how far the olap counts lag.",
    multiprocess_mode="livemostrecent",
    registry=REGISTRY,
)
QUEUE_OLDEST_AGE = Gauge(
    "engine_queue_oldest_age_seconds",
    "Age of the oldest due job not yet relayed, by priority (0 when none is waiting).",
    ["priority"],
    multiprocess_mode="livemostrecent",
    registry=REGISTRY,
)
RELAY_LATENCY = Histogram(
    "engine_relay_latency_seconds",
    "Time to hand one message to a relay node (MAIL..DATA end).",
    ["node"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
# Deferred jobs are retried for up to [queue] max_age_s (3 days by default).
_END_TO_END_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900,
    3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400,
)  # fmt: skip
END_TO_END = Histogram(
    "engine_enqueue_to_relay_seconds",
    "Time from enqueue to relayed.",
    buckets=_END_TO_END_BUCKETS,
    registry=REGISTRY,
)
DELIVERED = Histogram(
    "engine_enqueue_to_delivered_seconds",
    "Time from enqueue to a provider's acceptance reported by a relay node's success DSN"
    " (sampled jobs, [relay] dsn_success_fraction), by provider.",
    ["provider"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
    registry=REGISTRY,
)
# RSA signing takes about a millisecond; a wait for a busy signer pool reaches seconds.
_DKIM_SIGN_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1, 2.5, 5,
)  # fmt: skip
DKIM_SIGN = Histogram(
    "engine_dkim_sign_seconds",
    "Time to DKIM-sign one message, waiting for a free signer included.",
    buckets=_DKIM_SIGN_BUCKETS,
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
TEMPLATE_RENDER_FAILURES = Counter(
    "engine_template_render_failures_total",
    "Templated jobs failed because their campaign template could not be rendered for them.",
    registry=REGISTRY,
)
POOL_CONNECTIONS = Gauge(
    "engine_relay_connections",
    "Relay connections by node and state.",
    ["node", "state"],
    multiprocess_mode="livesum",
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
INBOUND_WAITING = Counter(
    "engine_inbound_waiting_total",
    "Reports about a job whose relay outcome was not written yet: left for the next sweep.",
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
    multiprocess_mode="livemax",
    registry=REGISTRY,
)
LOOP_LAG = Gauge(
    "engine_event_loop_lag_seconds",
    "Worst event-loop lag of the last completed second (a 10 ms ticker's late wake-ups),"
    " less the time the loop's thread waited for a CPU.",
    multiprocess_mode="livemax",
    registry=REGISTRY,
)
LOOP_CPU_WAIT = Gauge(
    "engine_event_loop_cpu_wait_seconds",
    "Worst time one 10 ms tick of the event loop waited for a CPU in the last completed second"
    " (the host is short of CPU).",
    multiprocess_mode="livemax",
    registry=REGISTRY,
)
LOOP_STALLS = Histogram(
    "engine_event_loop_stall_seconds",
    "Event-loop stalls of 5 ms or more (how late the 10 ms ticker woke, less CPU wait).",
    # The watchdog kills a loop blocked for 30 s (WatchdogSec).
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30),
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "engine_in_flight",
    "Jobs claimed and not yet written back.",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)

# -- operator surface (engine/admin): refreshed by the admin collector, not on the hot path ------
QUEUE_TENANT_PENDING = Gauge(
    "engine_queue_tenant_pending",
    "Jobs queued or deferred for the busiest tenants; exported only with [admin] tenant_metrics.",
    ["tenant"],
    multiprocess_mode="livemostrecent",
    registry=REGISTRY,
)
BACKLOG = Gauge(
    "engine_backlog_jobs",
    "Jobs waiting in PostgreSQL by state (queued, deferred, held) and priority. Exported by one"
    " instance at a time (see engine_backlog_leader), so a sum over instances is the truth.",
    ["state", "priority"],
    multiprocess_mode="livesum",  # one worker holds the lease, the others hold zeros
    registry=REGISTRY,
)
BACKLOG_LEADER = Gauge(
    "engine_backlog_leader",
    "1 on the one instance that exports engine_backlog_jobs (it holds the Redis lease), else 0.",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
RELAY_NODE_UP = Gauge(
    "engine_relay_node_up",
    "1 while the relay node is healthy (breaker closed, no failure since the last success).",
    ["node"],
    multiprocess_mode="livemin",
    registry=REGISTRY,
)
DB_POOL_CONNECTIONS = Gauge(
    "engine_db_pool_connections",
    "PostgreSQL pool connections of this instance by state (open, idle, max).",
    ["state"],
    multiprocess_mode="livesum",
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
    multiprocess_mode="livemax",
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
    multiprocess_mode="livemostrecent",
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
    # [events] webhook_timeout_s (10 s by default) bounds it; 30 and 60 for a raised timeout.
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
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
    # [inbound] parse_cpu_budget_ms may be raised above its 250 ms default.
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
INBOUND_QUEUE_DEPTH = Gauge(
    "engine_inbound_queue_depth",
    "Inbound messages accepted and not yet applied or quarantined (bounded by [inbound]"
    " queue_max; full -> 421).",
    multiprocess_mode="livesum",
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

BUILD_INFO = Gauge(
    "engine_build_info",
    "Always 1; the labels say what runs: engine version, Python implementation and version.",
    ["version", "python", "implementation"],
    multiprocess_mode="livemax",
    registry=REGISTRY,
)
BUILD_INFO.labels(__version__, platform.python_version(), platform.python_implementation()).set(1)

if not MULTIPROCESS:
    # The default registry's collectors, on ours: process_* (CPU, memory, open fds, start time),
    # python_info and python_gc_*.
    for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        REGISTRY.register(_collector)


def _constant(pid: int) -> Callable[[], int]:
    return lambda: pid


class _WorkerProcesses(Collector):
    """``process_*`` of every live worker, labelled with its ``pid``: the multiprocess files
    carry no process figures, and the serving worker's alone would understate the instance."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)

    def _pids(self) -> list[int]:
        pids = {os.getpid()}
        for path in self.directory.glob("gauge_live*_*.db"):
            tail = path.stem.rsplit("_", 1)[-1]
            if tail.isdigit():
                pids.add(int(tail))
        return sorted(pid for pid in pids if Path(f"/proc/{pid}").exists())

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        for pid in self._pids():
            for metric in ProcessCollector(pid=_constant(pid), registry=None).collect():
                into = merged.setdefault(
                    metric.name, Metric(metric.name, metric.documentation, metric.type)
                )
                for sample in metric.samples:
                    labels = {**sample.labels, "pid": str(pid)}
                    into.add_sample(sample.name, labels, sample.value)
        return list(merged.values())


def scrape_registry() -> CollectorRegistry:
    """What ``/metrics`` serves: this process's registry, or in multiprocess mode every
    worker's values merged from the shared directory, plus process and platform collectors."""
    if not MULTIPROCESS:
        return REGISTRY
    directory = os.environ[MULTIPROC_ENV]
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    registry.register(_WorkerProcesses(directory))
    registry.register(PLATFORM_COLLECTOR)
    return registry


def forget_worker(directory: str | os.PathLike[str], pid: int) -> None:
    """A worker exited: drop its ``live*`` gauge files (its counters and histograms stay, so the
    sums do not go backwards). Called by the supervisor, which never imports prometheus_client
    in multiprocess mode itself."""
    for path in Path(directory).glob(f"gauge_live*_{pid}.db"):
        path.unlink(missing_ok=True)
