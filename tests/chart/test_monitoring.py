"""The chart's monitoring: the metrics Service, ServiceMonitor, PodMonitor, dashboard
ConfigMap and PrometheusRule behind their flags; the alerts checked and unit-tested with
promtool (built with Prometheus by tests/e2e/testenv/build-prometheus.sh); every metric the
rules and the dashboard name is one the metrics module exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from chunkwise.contract import Ports
from tests.chart.test_chart import CHART, REPO, deployment, helm, kinds, manifests
from tests.support.prometheus import prometheus_binaries
from tests.unit.test_metrics import exported_names

__all__ = ["helm"]  # the fixture, shared with test_chart

ALERTS_TEST = Path(__file__).with_name("alerts_test.yaml")
RUNBOOKS = REPO / "docs" / "runbooks"


@pytest.fixture(scope="module")
def promtool() -> str:
    return str(prometheus_binaries() / "promtool")


def rules_file(helm: Path, directory: Path, *args: str) -> Path:
    """The chart's PrometheusRule as a plain Prometheus rule file."""
    (rule,) = kinds(manifests(helm, "--set", "prometheusRule.enabled=true", *args),
                    "PrometheusRule")
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path


def alert_rules(helm: Path, tmp_path: Path) -> list[dict[str, Any]]:
    groups = yaml.safe_load(rules_file(helm, tmp_path).read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def metric_names(promql: str) -> set[str]:
    names = set(re.findall(r"\bchunkwise_[a-z_]+", promql))
    return {re.sub(r"_(bucket|sum|count)$", "", name) for name in names}


def test_monitoring_is_off_by_default_except_the_metrics_service(helm: Path) -> None:
    docs = manifests(helm)
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"):
        assert list(kinds(docs, kind)) == [], kind
    (service,) = kinds(docs, "Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": Ports.OPERATOR_METRICS,
                                         "targetPort": "metrics", "protocol": "TCP"}]
    container = deployment(docs)["spec"]["template"]["spec"]["containers"][0]
    assert f"--metrics=0.0.0.0:{Ports.OPERATOR_METRICS}" in container["args"]
    assert {"name": "metrics", "containerPort": Ports.OPERATOR_METRICS} in container["ports"]
    off = manifests(helm, "--set", "metrics.enabled=false")
    assert list(kinds(off, "Service")) == []
    assert "--metrics=" in deployment(off)["spec"]["template"]["spec"]["containers"][0]["args"]


def test_monitors_scrape_the_operator_and_every_worker_pod(helm: Path) -> None:
    docs = manifests(helm, "--set", "metrics.serviceMonitor.enabled=true",
                     "--set", "metrics.podMonitor.enabled=true",
                     "--set", "metrics.serviceMonitor.labels.release=kps")
    (service_monitor,) = kinds(docs, "ServiceMonitor")
    assert service_monitor["metadata"]["labels"]["release"] == "kps"
    (endpoint,) = service_monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["honorLabels"] is True
    (service,) = kinds(docs, "Service")
    assert service_monitor["spec"]["selector"]["matchLabels"].items() <= \
        service["metadata"]["labels"].items()
    (pod_monitor,) = kinds(docs, "PodMonitor")
    assert pod_monitor["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/managed-by": "chunkwise"}  # what the operator puts on its Jobs' pods
    assert pod_monitor["spec"]["namespaceSelector"] == {"any": True}
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == Ports.NAME
    scoped = manifests(helm, "--set", "metrics.podMonitor.enabled=true",
                       "--set", "rbac.namespaces={shop}")
    (scoped_monitor,) = kinds(scoped, "PodMonitor")
    assert scoped_monitor["spec"]["namespaceSelector"] == {"matchNames": ["shop"]}


def test_dashboard_configmap_carries_the_sidecar_label(helm: Path) -> None:
    (default,) = kinds(manifests(helm, "--set", "dashboards.enabled=true"), "ConfigMap")
    assert default["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert default["metadata"]["namespace"] == "chunkwise-system"
    dashboard = json.loads(default["data"]["chunkwise.json"])
    assert dashboard["uid"] == "chunkwise"
    (moved,) = kinds(manifests(helm, "--set", "dashboards.enabled=true",
                               "--set", "dashboards.label=dash", "--set",
                               "dashboards.labelValue=yes", "--set",
                               "dashboards.namespace=monitoring"), "ConfigMap")
    assert moved["metadata"]["labels"]["dash"] == "yes"
    assert moved["metadata"]["namespace"] == "monitoring"


def test_promtool_checks_the_rules(helm: Path, promtool: str, tmp_path: Path) -> None:
    result = subprocess.run([promtool, "check", "rules", str(rules_file(helm, tmp_path))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


def test_promtool_unit_tests_show_each_alert_firing_and_not(helm: Path, promtool: str,
                                                             tmp_path: Path) -> None:
    rules_file(helm, tmp_path)
    shutil.copy(ALERTS_TEST, tmp_path)
    result = subprocess.run([promtool, "test", "rules", ALERTS_TEST.name], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", ALERTS_TEST.read_text()))
    assert tested == {rule["alert"] for rule in alert_rules(helm, tmp_path)}


def test_the_values_set_the_thresholds(helm: Path, promtool: str, tmp_path: Path) -> None:
    """The same unit tests fail when a threshold moves: they test the rendered rules."""
    rules_file(helm, tmp_path, "--set-json", "prometheusRule.alerts.failureRate.threshold=0.1")
    shutil.copy(ALERTS_TEST, tmp_path)
    result = subprocess.run([promtool, "test", "rules", ALERTS_TEST.name], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "ChunkwiseFailureRateHigh" in result.stdout + result.stderr


def test_every_alert_has_severity_summary_description_and_a_runbook(helm: Path,
                                                                     tmp_path: Path) -> None:
    for rule in alert_rules(helm, tmp_path):
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        url = rule["annotations"]["runbook_url"]
        assert url.endswith(f"/docs/runbooks/{name}.md"), url
        runbook = (RUNBOOKS / f"{name}.md").read_text()
        assert runbook.startswith(f"# {name}\n"), name
        assert metric_names(rule["expr"]) <= exported_names(), name


def test_dashboard_queries_name_only_exported_metrics() -> None:
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text())
    used: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            used |= metric_names(target["expr"])
    for variable in dashboard["templating"]["list"]:
        used |= metric_names(str(variable.get("query", "")))
    assert used and used <= exported_names()


def test_dashboard_json_is_what_the_script_builds() -> None:
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "dashboard.py"), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_dashboard_is_templated_by_datasource_namespace_and_migration() -> None:
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text())
    assert [v["name"] for v in dashboard["templating"]["list"]] == [
        "datasource", "namespace", "migration"]
    targets = [t for p in dashboard["panels"] for t in p.get("targets", [])]
    assert targets and all(t["datasource"]["uid"] == "${datasource}" for t in targets)
    selected = [t["expr"] for t in targets if "chunkwise_migrations" not in t["expr"]]
    assert all('migration=~"$migration"' in expr for expr in selected)
