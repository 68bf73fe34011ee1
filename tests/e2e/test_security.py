"""Security on the real control plane: the operator's ServiceAccount cannot read
Secrets, and the database password never shows up in anything a run leaves behind
(the DataMigration and its status, the Job, Events, the operator's and the worker's
logs, the operator's metrics)."""

from __future__ import annotations

import json
import secrets

import pytest

from tests.e2e.conftest import OPERATOR_NAMESPACE, RELEASE, SEEDED, OperatorDeployment, Shop
from tests.e2e.test_user_path import count_visit, visits
from tests.e2e.testenv.cluster import Cluster

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("verb", ["get", "list", "watch"])
def test_the_operator_cannot_read_secrets(shop: Shop, verb: str) -> None:
    account = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{RELEASE}-operator"
    for scope in (["-n", shop.namespace], ["--all-namespaces"]):
        answer = shop.k8s.kubectl("auth", "can-i", verb, "secrets", f"--as={account}", *scope,
                                  check=False)
        assert answer.stdout.strip() == "no", (verb, scope, answer.stdout)
    jobs = shop.k8s.kubectl("auth", "can-i", "create", "jobs", f"--as={account}", "-n",
                            shop.namespace, check=False)
    assert jobs.stdout.strip() == "yes"  # the check above can say yes, and it does here


def test_the_password_never_leaves_the_secret(shop: Shop, operator: OperatorDeployment) -> None:
    password = "pw-" + secrets.token_hex(12)
    env = [f"--from-literal={k}={v}" for k, v in shop.pg.env(shop.database).items()
           if k != "PGPASSWORD"] + [f"--from-literal=PGPASSWORD={password}"]
    shop.k8s.kubectl("create", "secret", "generic", "shop-db-pw", "-n", shop.namespace, *env)
    shop.apply(count_visit(rate=0).replace("name: shop-db}", "name: shop-db-pw}"))
    shop.wait_phase("count-visit", "Succeeded")
    assert visits(shop) == {1: SEEDED}  # the worker did connect with that Secret
    metrics = operator.scrape()
    artifacts = {
        "DataMigration": json.dumps(shop.dmig("count-visit")),
        "Jobs": json.dumps(shop.jobs()),
        "Events": shop.k8s.kubectl("get", "events", "-n", shop.namespace, "-o", "json").stdout,
        "operator log": operator.logs(),
        "worker logs": shop.pod_logs(),
        "operator metrics": metrics,
    }
    assert artifacts["worker logs"].strip() and artifacts["Events"].strip()
    leaked = [where for where, text in artifacts.items() if password in text]
    assert leaked == []


def test_the_operator_runs_in_a_restricted_namespace_with_in_cluster_config(
        k8s: Cluster, operator: OperatorDeployment) -> None:
    """The chart's pod passes the restricted Pod Security Standard, runs as the image's
    non-root UID on a read-only root, and logs in with the ServiceAccount token the
    kubelet projected (kopf's in-cluster login), through the kubernetes Service."""
    namespace = k8s.api("GET", f"/api/v1/namespaces/{OPERATOR_NAMESPACE}")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = operator.pod()
    assert pod["status"]["phase"] == "Running"
    assert pod["spec"]["securityContext"]["runAsUser"] == 65532
    [container] = pod["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["image"].startswith(f"{operator.node.registry.address}/")
    said = "with in-cluster configuration (the pod's ServiceAccount token)"
    line = k8s.wait_for("the operator's login line", lambda: next(
        (line for line in operator.logs().splitlines() if said in line), None), timeout=60)
    assert f"logged in to https://10.0.0.1:443 {said}" in line  # the kubernetes Service
