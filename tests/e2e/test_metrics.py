"""Metrics on a real Prometheus: it finds the operator's pod through the chart's metrics
Service's endpoints (as the chart's ServiceMonitor describes) and the worker pods by
their labels and port name (as the chart's PodMonitor does), by Kubernetes service
discovery on the real API server, and scrapes them at their pod IPs. The alert rules are
the chart's own, rendered by helm."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from chunkwise.contract import Label, Ports
from tests.e2e.conftest import (
    OPERATOR_NAMESPACE,
    RELEASE,
    REPO,
    SEEDED,
    OperatorDeployment,
    Shop,
)
from tests.e2e.test_user_path import count_visit, visits
from tests.e2e.testenv.cluster import Cluster
from tests.support.prometheus import PrometheusServer, running_prometheus

pytestmark = pytest.mark.e2e
DASHBOARD = REPO / "charts" / "chunkwise" / "files" / "dashboard.json"
RATE_INTERVAL = "15s"  # what Grafana's $__rate_interval becomes at a 1 s scrape interval


def chart_rules(k8s: Cluster) -> str:
    """The chart's PrometheusRule as a rule file, with the halted alert's `for` at 0s."""
    import yaml

    rendered = k8s.helm("template", "chunkwise", str(REPO / "charts" / "chunkwise"),
                        "--kube-version", "v1.36.3", "--show-only",
                        "templates/prometheusrule.yaml", "--set", "prometheusRule.enabled=true",
                        "--set", "prometheusRule.alerts.halted.for=0s").stdout
    return str(yaml.safe_dump({"groups": yaml.safe_load(rendered)["spec"]["groups"]}))


@pytest.fixture(scope="module")
def prometheus(k8s: Cluster, operator: OperatorDeployment) -> Iterator[PrometheusServer]:
    managed_by = "__meta_kubernetes_pod_label_" + "".join(
        c if c.isalnum() else "_" for c in Label.MANAGED_BY)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yaml"],
        "scrape_configs": [
            {   # what the chart's ServiceMonitor asks the Prometheus Operator to generate
                "job_name": "chunkwise-operator", "honor_labels": True,
                "kubernetes_sd_configs": [{"role": "endpoints",
                                           "kubeconfig_file": str(k8s.kubeconfig),
                                           "namespaces": {"names": [OPERATOR_NAMESPACE]}}],
                "relabel_configs": [
                    {"source_labels": ["__meta_kubernetes_service_name"],
                     "regex": f"{RELEASE}-metrics", "action": "keep"},
                    {"source_labels": ["__meta_kubernetes_endpoint_port_name"],
                     "regex": "metrics", "action": "keep"},
                ]},
            {   # what the chart's PodMonitor asks the Prometheus Operator to generate
                "job_name": "chunkwise-workers", "honor_labels": True,
                "kubernetes_sd_configs": [{"role": "pod",
                                           "kubeconfig_file": str(k8s.kubeconfig)}],
                "relabel_configs": [
                    {"source_labels": [managed_by], "regex": Label.MANAGER, "action": "keep"},
                    {"source_labels": ["__meta_kubernetes_pod_container_port_name"],
                     "regex": Ports.NAME, "action": "keep"},
                    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                ]},
        ],
    }
    with running_prometheus(config, {"rules.yaml": chart_rules(k8s)}) as server:
        yield server


def dashboard_queries(namespace: str, name: str) -> list[tuple[str, str, str, str]]:
    """(panel, unit, legend, PromQL) of every dashboard query, its variables filled in."""
    board = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in board["panels"]:
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        for target in panel.get("targets", []):
            expr = (target["expr"].replace("$namespace", namespace)
                    .replace("$migration", name).replace("$__rate_interval", RATE_INTERVAL))
            queries.append((panel["title"], unit, target.get("legendFormat", ""), expr))
    return queries


def hold_rows_until_waited(shop: Shop, low: int, high: int, seconds: float) -> threading.Thread:
    """Lock rows [low, high] in another session until a backend has waited ``seconds``
    for them (PostgreSQL's own pg_locks.waitstart says when), then let go."""
    locked = threading.Event()

    def hold() -> None:
        with psycopg.connect(shop.pg.dsn(shop.database)) as holder:
            holder.execute(f"SELECT id FROM shop_customer WHERE id BETWEEN {low} AND {high} "
                           "FOR UPDATE")
            locked.set()
            shop.k8s.wait_for("a batch waiting on the held rows", lambda: shop.query(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND waitstart < "
                f"now() - interval '{seconds} seconds'")[0][0] > 0, timeout=120, every=0.1)
            holder.rollback()

    thread = threading.Thread(target=hold, name="lock-holder", daemon=True)
    thread.start()
    assert locked.wait(30)
    return thread


def series_over(prometheus: PrometheusServer, expr: str, start: float) -> list[Any]:
    return prometheus.query_range(expr, start, time.time(), 1)


def peak(prometheus: PrometheusServer, expr: str, start: float) -> float:
    points = [float(v) for series in series_over(prometheus, expr, start)
              for _, v in series["values"]]
    return max(points, default=float("nan"))


def test_prometheus_sees_the_run_every_panel_has_data_and_rows_match(
        shop: Shop, prometheus: PrometheusServer) -> None:
    name, ns = "count-visit", shop.namespace
    picture = os.environ.get("CHUNKWISE_DASHBOARD_DUMP")  # a slower run draws more points
    started = time.time()
    holder = hold_rows_until_waited(shop, 6000, 6010, seconds=3.0)
    shop.apply(count_visit(name, rate=400 if picture else 1500).replace("stallAfter: 1h",
                                                    "stallAfter: 1h\n  timeouts: {lock: 20s}"))
    body = shop.wait_phase(name, "Succeeded", timeout=240)
    holder.join(timeout=10)
    assert visits(shop) == {1: SEEDED}
    selector = f'namespace="{ns}", migration="{name}"'

    # the worker pod was found by Kubernetes service discovery and scraped while it ran
    worker_rows = f"chunkwise_rows_processed_total{{{selector}}}"
    shop.k8s.wait_for("a scrape of the worker", lambda: series_over(
        prometheus, worker_rows, started), timeout=30)
    [worker] = series_over(prometheus, worker_rows, started)
    assert worker["metric"]["pod"].startswith(f"{name}-run1-")
    assert 0 < peak(prometheus, worker_rows, started) <= SEEDED

    # the operator's series cover the finished run: rows equal what the database changed
    final = f"chunkwise_migration_rows_processed_total{{{selector}}}"
    shop.k8s.wait_for("the operator's final figure", lambda: [
        s for s in prometheus.query(final) if float(s["value"][1]) == SEEDED], timeout=30)
    changed = shop.query("SELECT count(*) FROM shop_customer WHERE visits = 1")[0][0]
    assert changed == SEEDED == body["status"]["progress"]["rowsProcessed"]

    # the lock wait histogram counted the wait (the held rows: over 2.5 s)
    slow = (f"chunkwise_lock_wait_seconds_count{{{selector}}} - ignoring(le) "
            f'chunkwise_lock_wait_seconds_bucket{{{selector}, le="2.5"}}')
    shop.k8s.wait_for("a slow lock wait in the histogram",
                      lambda: peak(prometheus, slow, started) >= 1, timeout=30)
    assert float(prometheus.query(
        f"chunkwise_migration_lock_wait_seconds_total{{{selector}}}")[0]["value"][1]) >= 3.0

    # every dashboard query returns at least one series during or after the run
    queries = dashboard_queries(ns, name)
    empty: list[str] = []

    def all_have_data() -> bool:
        empty[:] = [expr for _, _, _, expr in queries
                    if not series_over(prometheus, expr, started)]
        return not empty

    try:
        shop.k8s.wait_for("every dashboard query to return data", all_have_data, timeout=30)
    except AssertionError:
        raise AssertionError(f"dashboard queries without data: {empty}") from None
    table = []
    for panel, unit, legend, expr in queries:
        result = series_over(prometheus, expr, started)
        last = [float(s["values"][-1][1]) for s in result]
        table.append({"panel": panel, "unit": unit, "legend": legend, "expr": expr,
                      "series": len(result), "last": last, "result": result})
    dump = {"start": started, "end": time.time(), "namespace": ns, "migration": name,
            "queries": table}
    (shop.k8s.workdir / "dashboard-data.json").write_text(json.dumps(dump))
    if picture:  # for scripts/dashboard-picture.py
        Path(picture).write_text(json.dumps(dump, indent=1))


def test_halted_alert_fires_and_a_deleted_migration_leaves_no_series(
        shop: Shop, prometheus: PrometheusServer, operator: OperatorDeployment) -> None:
    name, ns = "halting", shop.namespace
    # visits at the integer maximum: +1 overflows (SQLSTATE 22003), a row error
    shop.query("UPDATE shop_customer SET visits = 2147483647 WHERE id % 4000 = 7 RETURNING id")
    shop.apply(count_visit(name, rate=0, failed_rows=2))
    shop.wait_phase(name, "Halted")

    def firing() -> list[dict[str, Any]]:
        return [a for a in prometheus.alerts()
                if a["labels"].get("alertname") == "ChunkwiseMigrationHalted"
                and a["labels"].get("namespace") == ns and a["labels"].get("migration") == name
                and a["state"] == "firing"]

    [alert] = shop.k8s.wait_for("the halted alert to fire", firing, timeout=60)
    assert alert["labels"]["severity"] == "warning"
    assert alert["annotations"]["runbook_url"].endswith("/ChunkwiseMigrationHalted.md")
    assert f"DataMigration {ns}/{name} stopped" in alert["annotations"]["description"]
    assert f'migration="{name}"' in operator.scrape()

    shop.k8s.kubectl("delete", "dmig", name, "-n", ns)
    shop.k8s.wait_for("its series to disappear from the operator",
                      lambda: f'migration="{name}"' not in operator.scrape(),
                      timeout=30)
