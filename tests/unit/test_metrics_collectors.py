"""What /metrics serves besides the engine's own counters: build info, the process/platform/GC
collectors, and histogram buckets wide enough for what they measure."""

from __future__ import annotations

import platform

from engine import __version__, metrics


def test_build_info_and_standard_collectors_are_served() -> None:
    registry = metrics.scrape_registry()
    assert registry is metrics.REGISTRY  # a single process: in-memory values
    labels = {
        "version": __version__,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
    }
    assert registry.get_sample_value("engine_build_info", labels) == 1
    for name in (
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_start_time_seconds",
    ):
        value = registry.get_sample_value(name)
        assert value is not None and value > 0, name
    assert registry.get_sample_value("python_gc_collections_total", {"generation": "0"}) is not None
    names = {family.name for family in registry.collect()}
    assert "python_info" in names


def _top(histogram: object) -> float:
    return float(histogram._upper_bounds[-2])  # type: ignore[attr-defined]  # last before +Inf


def test_histogram_buckets_cover_what_they_measure() -> None:
    # A sign waits for a busy signer pool: waits of 400 ms happen, so buckets reach seconds.
    assert _top(metrics.DKIM_SIGN) >= 1
    # Deferred jobs are relayed up to [queue] max_age_s (3 days) after enqueue.
    assert _top(metrics.END_TO_END) >= 3 * 86400
    assert _top(metrics.LOOP_STALLS) >= 30  # the systemd watchdog's limit
    assert _top(metrics.INBOUND_PARSE_CPU) >= 1  # the parse budget may be raised
    assert _top(metrics.WEBHOOK_LATENCY) >= 10  # [events] webhook_timeout_s
    assert _top(metrics.RELAY_LATENCY) >= 30
    for histogram in (
        metrics.DKIM_SIGN,
        metrics.END_TO_END,
        metrics.LOOP_STALLS,
        metrics.INBOUND_PARSE_CPU,
        metrics.WEBHOOK_LATENCY,
        metrics.RELAY_LATENCY,
    ):
        bounds = histogram._upper_bounds  # type: ignore[attr-defined]
        assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds)
