"""A DataMigration against MariaDB on the real node: the shop's image (PyMySQL, its pure
Python driver), a worker pod killed mid-run, lock waits in Prometheus, and a lagging real
replica shown as Throttled. The operator, the chart and the dashboard are unchanged: the
metrics are the same as on PostgreSQL."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.conftest import RESTRICTED, SEEDED, OperatorDeployment, Shop, seed_shop
from tests.e2e.test_metrics import prometheus  # noqa: F401  (the module's Prometheus)
from tests.e2e.test_user_path import count_visit, visits, wait_rows
from tests.e2e.testenv.cluster import Cluster
from tests.e2e.testenv.node import Node
from tests.support.mariaserver import (
    INNODB_VIEW_EVERY,
    MariaDbServer,
    running_mariadb,
    running_mariadb_replica,
)
from tests.support.pgserver import PgServer
from tests.support.prometheus import PrometheusServer
from tests.support.shop import SHOP, shop_env

pytestmark = [pytest.mark.e2e, pytest.mark.mariadb]
REPO_EXAMPLES = SHOP.parent / "k8s"
_numbers = itertools.count(1)


#: mariadbd's options for a server the worker pods reach: on every address (the node's
#: too), its root let in from anywhere (the pods' addresses are POD_CIDR's)
REACHABLE = {"bind-address": "0.0.0.0"}


def let_pods_in(server: MariaDbServer) -> None:
    server.sql("CREATE USER IF NOT EXISTS 'root'@'%'")
    server.sql("GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION")


def maria_env(server: MariaDbServer, database: str, host: str | None = None
              ) -> dict[str, str]:
    """What the shop's settings read (examples/shop/shop_project/settings.py); ``host``:
    the address the reader reaches the server at (a pod: the node's)."""
    return {"MYSQL_DATABASE": database, "MYSQL_HOST": host or server.host,
            "MYSQL_PORT": str(server.port), "MYSQL_USER": server.user, "MYSQL_PASSWORD": ""}


@pytest.fixture(scope="module")
def maria(control_plane: Cluster) -> Iterator[MariaDbServer]:
    """This module's MariaDB, where the worker pods reach it (as the e2e PostgreSQL is)."""
    with running_mariadb(REACHABLE) as server:
        let_pods_in(server)
        yield server


@pytest.fixture(scope="module")
def maria_shop_template(maria: MariaDbServer) -> str:
    maria.sql("CREATE DATABASE shop_template")
    seed_shop(shop_env(maria_env(maria, "shop_template")))
    return "shop_template"


@dataclass
class MariaShop(Shop):
    """A shop namespace whose DB Secret points the worker at a MariaDB database."""

    maria: MariaDbServer | None = None
    #: where the pods reach the servers
    address: str = ""

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        assert self.maria is not None
        return [tuple(row) for row in self.maria.sql(sql, self.database)]


@pytest.fixture
def maria_shop(request: pytest.FixtureRequest, k8s: Cluster, node: Node,
               operator: OperatorDeployment, pg: PgServer, maria: MariaDbServer,
               maria_shop_template: str) -> Iterator[MariaShop]:
    n = next(_numbers)
    namespace, database = f"maria-shop-{n}", f"maria_shop_{n}"
    maria.clone_database(maria_shop_template, database)
    k8s.kubectl("create", "namespace", namespace)
    k8s.kubectl("label", "namespace", namespace, RESTRICTED)
    k8s.kubectl("apply", "-n", namespace, "-f", str(REPO_EXAMPLES / "worker-rbac.yaml"))
    shop = MariaShop(k8s, node, pg, namespace, database, maria=maria,
                     address=k8s.address)
    shop.set_secret(maria_env(maria, database, k8s.address))
    try:
        yield shop
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(f"\n===== logs for {namespace}\n{shop.pod_logs()}\n"
                  f"--- operator\n{operator.logs()[-6000:]}")
        k8s.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_a_killed_worker_resumes_on_mariadb_and_its_lock_waits_reach_prometheus(
        maria_shop: MariaShop, prometheus: PrometheusServer) -> None:  # noqa: F811
    shop = maria_shop
    assert shop.maria is not None
    holder = shop.maria.connect(shop.database)
    holder.autocommit(False)
    holder.cursor().execute("SELECT id FROM shop_customer WHERE id BETWEEN 15000 AND 15010 "
                            "FOR UPDATE")
    released = threading.Event()

    def release_once_waited() -> None:
        shop.k8s.wait_for("a batch waiting on the held rows", lambda: shop.query(
            "SELECT count(*) FROM information_schema.INNODB_LOCK_WAITS")[0][0] > 0,
            timeout=180, every=INNODB_VIEW_EVERY)
        shop.k8s.wait_for("three seconds of waiting", lambda: shop.query(
            "SELECT count(*) FROM information_schema.INNODB_TRX WHERE trx_state = "
            "'LOCK WAIT' AND trx_wait_started < NOW() - INTERVAL 3 SECOND")[0][0] > 0,
            timeout=60, every=INNODB_VIEW_EVERY)
        holder.rollback()
        released.set()

    waiter = threading.Thread(target=release_once_waited, daemon=True)
    waiter.start()
    shop.apply(count_visit(rate=3000).replace("stallAfter: 1h",
                                              "stallAfter: 1h\n  timeouts: {lock: 20s}"))
    wait_rows(shop, "count-visit", 2000)
    [pod] = [p for p in shop.pods() if p["status"].get("phase") == "Running"]
    shop.kill(pod)
    body = shop.wait_phase("count-visit", "Succeeded", timeout=300)
    waiter.join(timeout=30)
    holder.close()
    assert released.is_set()
    assert visits(shop) == {1: SEEDED}  # every row exactly once across the crash
    assert body["status"]["progress"]["rowsProcessed"] == SEEDED
    log = shop.pod_logs()
    assert "MariaDB 10.11" in log and "through PyMySQL" in log
    assert "resuming after key" in log
    [job] = shop.jobs()
    assert job["status"].get("failed") == 1 and job["status"].get("succeeded") == 1
    selector = f'namespace="{shop.namespace}", migration="count-visit"'
    shop.k8s.wait_for("the lock wait in Prometheus", lambda: [
        s for s in prometheus.query(f"chunkwise_migration_lock_wait_seconds_total{{{selector}}}")
        if float(s["value"][1]) >= 3.0], timeout=60)


def test_a_lagging_replica_shows_throttled_naming_the_lag(maria_shop: MariaShop) -> None:
    shop = maria_shop
    assert shop.maria is not None
    with running_mariadb_replica(shop.maria, REACHABLE) as replica:
        replica.catch_up(shop.maria, timeout=180)  # root@'%' came over with the binlog
        shop.set_secret({**maria_env(shop.maria, shop.database, shop.address),
                         "MYSQL_REPLICA_HOST": shop.address,
                         "MYSQL_REPLICA_PORT": str(replica.port)})
        blocker = replica.connect(shop.database)
        blocker.cursor().execute("LOCK TABLES shop_customer READ")  # its replay waits
        shop.apply(count_visit(rate=2000).replace(
            "  stallAfter: 1h\n", "  stallAfter: 1h\n  throttle: {replicationLag: 2s, "
            "checkInterval: 500ms}\n"))

        def throttled() -> dict[str, Any] | None:
            conditions = shop.dmig("count-visit").get("status", {}).get("conditions", [])
            return next((c for c in conditions if c["type"] == "Throttled"
                         and c["status"] == "True"), None)

        try:
            condition = shop.k8s.wait_for("Throttled=True", throttled, timeout=180, every=0.2)
        finally:
            blocker.cursor().execute("UNLOCK TABLES")
            blocker.close()
        assert condition["reason"] == "ReplicationLag"
        assert condition["message"].startswith("replication lag ")
        assert "> 2s (throttle.replicationLag)" in condition["message"]
        shop.wait_phase("count-visit", "Succeeded", timeout=240)
    assert visits(shop) == {1: SEEDED}
    events = shop.events("count-visit")
    assert events.index("Throttled") < events.index("Unthrottled") < events.index("Succeeded")
