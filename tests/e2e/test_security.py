"""Security on the real control plane: the operator's ServiceAccount cannot read
Secrets, and the database password never shows up in anything a run leaves behind
(the DataMigration and its status, the Job, Events, the operator's and the worker's
logs, the operator's metrics)."""

from __future__ import annotations

import json
import secrets
import urllib.request

import pytest

from tests.e2e.conftest import OPERATOR_NAMESPACE, RELEASE, SEEDED, OperatorProcess, Shop
from tests.e2e.test_user_path import count_visit, visits

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


def test_the_password_never_leaves_the_secret(shop: Shop, operator: OperatorProcess) -> None:
    password = "pw-" + secrets.token_hex(12)
    env = [f"--from-literal={k}={v}" for k, v in shop.pg.env(shop.database).items()
           if k != "PGPASSWORD"] + [f"--from-literal=PGPASSWORD={password}"]
    shop.k8s.kubectl("create", "secret", "generic", "shop-db-pw", "-n", shop.namespace, *env)
    shop.apply(count_visit(rate=0).replace("name: shop-db}", "name: shop-db-pw}"))
    shop.wait_phase("count-visit", "Succeeded")
    assert visits(shop) == {1: SEEDED}  # the worker did connect with that Secret
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics}/metrics",
                                timeout=10) as answer:
        metrics = answer.read().decode()
    artifacts = {
        "DataMigration": json.dumps(shop.dmig("count-visit")),
        "Jobs": json.dumps(shop.jobs()),
        "Events": shop.k8s.kubectl("get", "events", "-n", shop.namespace, "-o", "json").stdout,
        "operator log": (shop.k8s.workdir / "operator.log").read_text(errors="replace"),
        "worker logs": shop.pod_logs(),
        "operator metrics": metrics,
    }
    assert artifacts["worker logs"].strip() and artifacts["Events"].strip()
    leaked = [where for where, text in artifacts.items() if password in text]
    assert leaked == []
