"""The chart's life on a real control plane of its own: install watching one namespace,
upgrade with changed values, uninstall leaving the CRD and the users' DataMigrations."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from chunkwise.contract import API_GROUP, GROUP_VERSION, KIND, PLURAL
from tests.e2e.testenv.cluster import Cluster, running_cluster

pytestmark = pytest.mark.e2e
CHART = str(Path(__file__).resolve().parents[2] / "charts" / "chunkwise")
CRD = f"customresourcedefinition/{PLURAL}.{API_GROUP}"
NAME = "cw-chunkwise"  # release "cw" of chart "chunkwise"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Not the session's cluster: this test uninstalls the chart."""
    with running_cluster() as fresh:
        yield fresh


def exists(cluster: Cluster, *what: str) -> bool:
    return cluster.kubectl("get", *what, check=False).returncode == 0


def test_install_upgrade_uninstall(cluster: Cluster) -> None:
    for namespace in ("ops", "shop", "billing"):
        cluster.kubectl("create", "namespace", namespace)
    cluster.helm("install", "cw", CHART, "-n", "ops", "--set", "rbac.namespaces={shop}")
    assert exists(cluster, "role", NAME, "-n", "shop")
    assert not exists(cluster, "role", NAME, "-n", "billing")
    assert not exists(cluster, "clusterrole", NAME)  # namespaced: no cluster-wide rules
    crd = json.loads(cluster.kubectl("get", CRD, "-o", "json").stdout)
    # a release resource (not crds/), so `helm upgrade` applies a new schema
    assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == "cw"
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    cluster.kubectl("wait", "--for=condition=Established", CRD, "--timeout=60s")
    cluster.kubectl("apply", "-n", "shop", "-f", "-", input=json.dumps({
        "apiVersion": GROUP_VERSION, "kind": KIND, "metadata": {"name": "kept"},
        "spec": {"image": "shop:1", "migration": {"app": "shop", "name": "0002"}}}))

    cluster.helm("upgrade", "cw", CHART, "-n", "ops", "--set", "rbac.namespaces={shop,billing}",
                 "--set", "operator.stallCheckInterval=10s")
    assert exists(cluster, "role", NAME, "-n", "billing")
    deployment = json.loads(cluster.kubectl("get", "deployment", f"{NAME}-operator", "-n", "ops",
                                            "-o", "json").stdout)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "CHUNKWISE_OPERATOR_STALL_CHECK_INTERVAL", "value": "10s"} in \
        container["env"]
    assert "--namespace=billing" in container["args"]

    bad = cluster.helm("upgrade", "cw", CHART, "-n", "ops", "--set", "replicaCount=3",
                       check=False)
    assert bad.returncode != 0 and "at '/replicaCount': maximum: got 3, want 1" in bad.stderr

    uninstalled = cluster.helm("uninstall", "cw", "-n", "ops")
    assert "kept due to the resource policy" in uninstalled.stdout + uninstalled.stderr
    assert exists(cluster, CRD)
    assert exists(cluster, PLURAL, "kept", "-n", "shop")  # the user's DataMigration stays
    assert not exists(cluster, "deployment", f"{NAME}-operator", "-n", "ops")
    assert not exists(cluster, "serviceaccount", f"{NAME}-operator", "-n", "ops")
    assert not exists(cluster, "role", NAME, "-n", "shop")
    assert not exists(cluster, "clusterrole", f"{NAME}-crds")
