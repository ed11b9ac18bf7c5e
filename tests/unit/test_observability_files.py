"""The Grafana dashboard and the Prometheus alert rules only speak of metrics that exist.

A dashboard panel or an alert over a metric name that no code exports shows "No data" or never
fires, silently. Every herald_* name in deploy/grafana and deploy/prometheus must be one that
services/ or shared/ registers with prometheus_client; other names may come only from the
exporters we document (RabbitMQ's rabbitmq_prometheus plugin).
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

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "herald-dashboard.json"
ALERTS = REPO_ROOT / "deploy" / "prometheus" / "herald-alerts.yaml"

# Series of an exporter outside this repository, documented next to the panel or rule using it.
EXTERNAL_METRICS = {
    "rabbitmq_queue_messages_ready",
    "rabbitmq_queue_messages_unacked",
    "rabbitmq_queue_messages",
}
# Series prometheus_client derives from a Histogram (or Counter) registered under the base name.
DERIVED_SUFFIXES = ("_bucket", "_sum", "_count", "_created")
PROMQL_WORDS = {
    "sum", "by", "without", "rate", "irate", "increase", "delta", "max", "min", "avg", "count",
    "histogram_quantile", "clamp_min", "clamp_max", "and", "or", "unless", "on", "ignoring",
    "group_left", "group_right", "le", "bool", "offset", "abs", "time", "vector", "label_values",
}  # fmt: skip


def _defined_metrics() -> set[str]:
    """Names passed to Counter/Gauge/Histogram/Summary( in services/ and shared/."""
    pattern = re.compile(r"\b(?:Counter|Gauge|Histogram|Summary)\(\s*\"([a-z_:][a-z0-9_:]*)\"", re.S)
    names = set()
    for root in ("services", "shared"):
        for path in (REPO_ROOT / root).rglob("*.py"):
            names.update(pattern.findall(path.read_text(encoding="utf-8")))
    return names


def _metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names (inside {...} or by/without (...)) or string contents."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b", "", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        word = match.group(0)
        following = text[match.end() :].lstrip()
        if word in PROMQL_WORDS or following.startswith("("):
            continue
        names.add(word)
    return names


def _known(name: str, defined: set[str]) -> bool:
    if name in defined or name in EXTERNAL_METRICS:
        return True
    return any(name.endswith(suffix) and name[: -len(suffix)] in defined for suffix in DERIVED_SUFFIXES)


def _dashboard_exprs(node: Any) -> list[str]:
    found = []
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            found.append(node["expr"])
        for value in node.values():
            found += _dashboard_exprs(value)
    elif isinstance(node, list):
        for value in node:
            found += _dashboard_exprs(value)
    return found


@pytest.fixture(scope="module")
def defined() -> set[str]:
    names = _defined_metrics()
    assert "herald_sender_messages_total" in names, "metric definitions not found: the pattern is wrong"
    return names


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_metric_name_parser_finds_names_and_skips_labels_and_functions() -> None:
    expr = 'histogram_quantile(0.95, sum by (le, agent) (rate(x_seconds_bucket{agent=~"a|b"}[5m]))) / y_total > 1e-9'
    assert _metric_names(expr) == {"x_seconds_bucket", "y_total"}


def test_dashboard_parses_and_has_panels_with_queries() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["title"] and dashboard["uid"]
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert panels, "the dashboard has no panels"
    for panel in panels:
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["expr"].strip(), f"panel {panel['title']!r} has an empty query"


def test_dashboard_queries_only_metrics_that_exist(defined: set[str]) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = _dashboard_exprs(dashboard["panels"])
    used = set().union(*(_metric_names(expr) for expr in exprs))
    unknown = sorted(name for name in used if not _known(name, defined))
    assert not unknown, f"the dashboard queries metrics no code exports: {unknown}"


def test_dashboard_covers_what_an_operator_watches() -> None:
    text = DASHBOARD.read_text(encoding="utf-8")
    for needle in (
        "herald_sender_messages_total",  # rates by outcome
        "histogram_quantile",  # latencies
        "rabbitmq_queue_messages_ready",  # queue depth
        "herald_sender_dead_letters_total",
        "herald_sender_channel_breaker_state",
        "herald_sender_limit_waits_total",
        "herald_outbox_pending",
    ):
        assert needle in text, f"the dashboard shows nothing of {needle}"


def test_every_alert_rule_is_complete(rules: list[dict[str, Any]]) -> None:
    assert rules, "no alert rules"
    for rule in rules:
        name = rule.get("alert")
        assert name, f"a rule without an alert name: {rule}"
        assert str(rule.get("expr", "")).strip(), f"{name}: no expr"
        assert "for" in rule, f"{name}: no for"
        assert rule.get("labels", {}).get("severity") in {"critical", "warning", "info"}, f"{name}: severity"
        assert rule.get("annotations", {}).get("summary"), f"{name}: no annotations.summary"


def test_alert_rules_use_only_metrics_that_exist(rules: list[dict[str, Any]], defined: set[str]) -> None:
    for rule in rules:
        unknown = sorted(name for name in _metric_names(rule["expr"]) if not _known(name, defined))
        assert not unknown, f"{rule['alert']}: metrics no code exports: {unknown}"


def test_alerts_cover_outage_outbox_sending_and_dead_letters(rules: list[dict[str, Any]]) -> None:
    by_metric = {name for rule in rules for name in _metric_names(rule["expr"])}
    for metric in (
        "herald_sender_messages_total",
        "herald_outbox_pending",
        "herald_sender_reconciled_total",
        "herald_sender_dead_letters_total",
    ):
        assert metric in by_metric, f"no alert watches {metric}"
    outage = next(rule for rule in rules if "herald_sender_messages_total" in rule["expr"])
    window = re.search(r"\[(\d+)([sm])\]", outage["expr"])
    assert window, "the provider-outage rule has no rate window"
    seconds = int(window.group(1)) * (60 if window.group(2) == "m" else 1)
    pending = outage["for"]
    pending_seconds = int(pending[:-1]) * (60 if pending.endswith("m") else 1)
    assert seconds + pending_seconds <= 120, "a provider outage must show within about a minute"


def test_promtool_accepts_the_rules_file() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    result = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
