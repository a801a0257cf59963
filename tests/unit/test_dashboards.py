"""The Grafana dashboard and the Prometheus alerts load, and only name metrics /metrics serves;
promtool (Debian package prometheus, installed by scripts/bootstrap.sh) checks the rules, runs
their unit tests (docs/prometheus/alerts_test.yml) and checks the example prometheus.yml.

A metric name is checked against the samples the registry exposes (a counter ``x`` is served as
``x_total``; a histogram as ``x_bucket``/``x_sum``/``x_count``), and label matchers against the
metric's label names (plus ``le`` for buckets and the target labels Prometheus adds).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from engine import metrics
from engine.metrics import REGISTRY

DOCS = Path(__file__).resolve().parents[2] / "docs"
DASHBOARD = DOCS / "grafana" / "engine.json"
ALERTS = DOCS / "prometheus" / "alerts.yml"

TARGET_LABELS = {"instance", "job"}  # added by Prometheus at scrape time
NOT_ENGINE = {"up"}  # Prometheus' own series
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}
_METRIC = re.compile(r"\b((?:engine|process|python)_[a-z0-9_]+)\s*(\{[^}]*\})?")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)")


def exposed() -> dict[str, set[str]]:
    """Every sample name /metrics can serve → the label names it may carry."""
    labels = {
        m._name: set(m._labelnames)
        for m in vars(metrics).values()
        if isinstance(m, MetricWrapperBase)
    }
    out: dict[str, set[str]] = {}
    for family in REGISTRY.collect():
        for suffix in _SUFFIXES[family.type]:
            extra = {"le"} if suffix == "_bucket" else set()
            out[family.name + suffix] = labels.get(family.name, set()) | extra
    return out


def expressions_in_dashboard() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    for var in doc["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(var["definition"])
    return exprs


def expressions_in_alerts() -> list[str]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [str(rule["expr"]) for g in doc["groups"] for rule in g["rules"]]


def check(exprs: list[str]) -> set[str]:
    """Assert every engine metric and label matcher exists; return the metrics used."""
    served = exposed()
    used: set[str] = set()
    for expr in exprs:
        found = _METRIC.findall(expr)
        assert found or any(n in expr for n in NOT_ENGINE), f"no engine metric in {expr!r}"
        for name, selector in found:
            assert name in served, f"{name} (in {expr!r}) is not served by /metrics"
            for label, _ in _MATCHER.findall(selector):
                assert label in served[name] | TARGET_LABELS, f"{name} has no label {label!r}"
            used.add(name)
    return used


def test_suffixes_are_stripped_properly() -> None:
    served = exposed()
    assert "engine_messages_total" in served and "engine_messages" not in served
    assert "engine_relay_latency_seconds_bucket" in served
    assert "le" in served["engine_relay_latency_seconds_bucket"]
    assert "engine_relay_latency_seconds" not in served
    assert served["engine_queue_oldest_age_seconds"] == {"priority"}


def test_dashboard_metrics_exist() -> None:
    used = check(expressions_in_dashboard())
    wanted = {
        "engine_messages_total",  # throughput, outcomes, per node
        "engine_queue_depth",
        "engine_queue_oldest_age_seconds",
        "engine_relay_latency_seconds_bucket",
        "engine_relay_node_up",
        "engine_bounces_total",
        "engine_complaints_total",
        "engine_dkim_sign_seconds_bucket",
        "engine_reconciler_repairs_total",
        "engine_event_loop_lag_seconds",
    }
    assert wanted <= used, wanted - used


def test_dashboard_structure() -> None:
    doc = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for p in doc["panels"]:
        assert p["title"] and {"x", "y", "w", "h"} <= set(p["gridPos"])
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        for t in p.get("targets", []):
            assert t["datasource"]["uid"] == "${datasource}"


def test_alert_metrics_exist_and_rules_are_complete() -> None:
    used = check(expressions_in_alerts())
    assert {
        "engine_queue_oldest_age_seconds",
        "engine_relay_node_up",
        "engine_complaints_total",
        "engine_bounces_total",
        "engine_dkim_failures_total",
        "engine_reconciler_repairs_total",
    } <= used
    doc: dict[str, Any] = yaml.safe_load(ALERTS.read_text())
    runbooks = (DOCS / "operations.md").read_text().lower()
    names = []
    for rule in doc["groups"][0]["rules"]:
        names.append(rule["alert"])
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert f"### {anchor}" in runbooks, f"docs/operations.md has no runbook for {anchor}"
    assert len(names) == len(set(names))


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not on PATH (package prometheus); YAML and names checked above")
    return promtool


def _ok(*args: str | Path) -> None:
    proc = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_accepts_the_rules() -> None:
    _ok(_promtool(), "check", "rules", ALERTS)


def test_promtool_rule_unit_tests_pass() -> None:
    _ok(_promtool(), "test", "rules", ALERTS.parent / "alerts_test.yml")


def test_promtool_accepts_the_example_config(tmp_path: Path) -> None:
    # The credentials file it names must exist for promtool: point it at a scratch copy.
    token = tmp_path / "penguinmails-engine.token"
    token.write_text("x" * 32)
    text = (ALERTS.parent / "prometheus.yml").read_text()
    assert "/etc/prometheus/penguinmails-engine.token" in text
    (tmp_path / "prometheus.yml").write_text(
        text.replace("/etc/prometheus/penguinmails-engine.token", str(token))
    )
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    _ok(_promtool(), "check", "config", tmp_path / "prometheus.yml")


def test_queue_depth_is_not_summed_over_instances() -> None:
    # Every instance reports the same shared streams and oldest job: a sum multiplies them by
    # the number of instances.
    shared = ("engine_queue_depth", "engine_queue_oldest_age_seconds")
    for expr in expressions_in_dashboard() + expressions_in_alerts():
        if any(name in expr for name in shared):
            assert not re.search(r"\bsum\b", expr), expr


def test_operations_doc_lists_every_metric() -> None:
    text = (DOCS / "operations.md").read_text()
    for family in REGISTRY.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{name}`" in text, f"docs/operations.md does not describe {name}"
