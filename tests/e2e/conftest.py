"""End-to-end fixtures: a real control plane, the kubelet stand-in, the operator process,
and a PostgreSQL database with the example shop's customers per test."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chunkwise.contract import API_GROUP, PLURAL
from tests.e2e.testenv.cluster import Cluster, running_cluster, write_kubeconfig
from tests.e2e.testenv.kubelet import Kubelet
from tests.support.pgserver import PgServer, free_port
from tests.support.shop import shop_env

REPO = Path(__file__).resolve().parents[2]
SHOP = REPO / "examples" / "shop"
RELEASE = "chunkwise"  # the chart's ServiceAccount is <release>-operator
OPERATOR_NAMESPACE = "chunkwise-system"
SHOP_IMAGE = "registry.example.com/shop:1.4.2"
LAB_IMAGE = "registry.example.com/chunkwise-lab:1"  # tests/labproject, for its mistakes
SEEDED = 20_000
_numbers = itertools.count(1)

pytestmark = pytest.mark.e2e


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome: Any = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session")
def k8s() -> Iterator[Cluster]:
    with running_cluster() as cluster:
        # the user's install: the chart (CRD, ServiceAccount, RBAC, Deployment). No
        # Deployment controller runs here, so its pod never starts; the operator runs as
        # a local process with the chart's ServiceAccount token instead (OperatorProcess)
        cluster.helm("install", RELEASE, str(REPO / "charts" / "chunkwise"), "--namespace",
                     OPERATOR_NAMESPACE, "--create-namespace")
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                        f"crd/{PLURAL}.{API_GROUP}")
        yield cluster


@pytest.fixture(scope="session")
def kubelet(k8s: Cluster) -> Iterator[Kubelet]:
    stand_in = Kubelet(k8s, {SHOP_IMAGE: SHOP, LAB_IMAGE: REPO / "tests" / "labproject"},
                       k8s.workdir / "pods")
    stand_in.start()
    yield stand_in
    stand_in.stop()


BUILDAH = ["buildah", "--storage-driver", "vfs"]  # as scripts/build-image stores it
CREDENTIALS = "/run/chunkwise-e2e"  # inside the operator's container (/var/run is a symlink)


@pytest.fixture(scope="session")
def operator_image() -> str:
    """The operator image built from the Dockerfile (scripts/build-image; cached)."""
    built = subprocess.run([str(REPO / "scripts" / "build-image")], capture_output=True,
                           text=True, check=True, timeout=1800)
    return built.stdout.strip().splitlines()[-1]


class OperatorProcess:
    """The operator from its image, run with buildah (chroot isolation, the host's
    network), as the image's non-root user and with the token of the chart's
    ServiceAccount, so a rule missing from the chart's RBAC fails a test."""

    def __init__(self, cluster: Cluster, image: str) -> None:
        self.cluster = cluster
        self.log = cluster.workdir / "operator.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.health = free_port()
        self.metrics = free_port()
        self.container = f"chunkwise-operator-e2e-{os.getpid()}"
        subprocess.run([*BUILDAH, "rm", self.container], capture_output=True)
        subprocess.run([*BUILDAH, "from", "--name", self.container, image],
                       capture_output=True, check=True, timeout=600)

    def _credentials(self) -> Path:
        """A kubeconfig with the chart ServiceAccount's token and the CA, readable by the
        image's non-root user, for a read-only mount at CREDENTIALS."""
        directory = self.cluster.workdir / "operator-credentials"
        directory.mkdir(mode=0o755, exist_ok=True)
        (directory / "ca.crt").write_bytes((self.cluster.pki / "ca.crt").read_bytes())
        token = self.cluster.token_for(OPERATOR_NAMESPACE, f"{RELEASE}-operator")
        write_kubeconfig(directory / "kubeconfig", self.cluster.server,
                         Path(CREDENTIALS) / "ca.crt", {"token": token})
        for path in (directory / "ca.crt", directory / "kubeconfig"):
            path.chmod(0o644)
        return directory

    def start(self) -> None:
        credentials = self._credentials()
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [*BUILDAH, "run", "--isolation", "chroot", "-v",
                 f"{credentials}:{CREDENTIALS}:ro", "--env", f"KUBECONFIG={CREDENTIALS}/kubeconfig",
                 "--env", "CHUNKWISE_OPERATOR_STALL_CHECK_INTERVAL=2s", self.container, "--",
                 "python3", "-m", "chunkwise.operator",
                 f"--liveness=http://127.0.0.1:{self.health}/healthz",
                 f"--metrics=127.0.0.1:{self.metrics}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.cluster.wait_for("operator liveness", self._alive, timeout=90)

    def scrape(self) -> str:
        """The operator's /metrics, as Prometheus would read it."""
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics",
                                    timeout=10) as answer:
            return str(answer.read().decode())

    def remove(self) -> None:
        subprocess.run([*BUILDAH, "rm", self.container], capture_output=True)

    def _alive(self) -> bool:
        import urllib.request

        assert self.process is not None and self.process.poll() is None, self.log.read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health}/healthz", timeout=2):
                return True
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)


@pytest.fixture(scope="session")
def operator(k8s: Cluster, kubelet: Kubelet, operator_image: str) -> Iterator[OperatorProcess]:
    process = OperatorProcess(k8s, operator_image)
    process.start()
    yield process
    process.stop()
    process.remove()


def pg_shop_env(server: PgServer, database: str) -> dict[str, str]:
    return shop_env(server.env(database))


@pytest.fixture(scope="session")
def shop_template(pg: PgServer) -> str:
    pg.sql("CREATE DATABASE shop_template")
    env = pg_shop_env(pg, "shop_template")
    for args in (["migrate", "-v0", "chunkwise"], ["migrate", "-v0", "shop", "0001"],
                 ["seed_customers", str(SEEDED)]):
        subprocess.run([sys.executable, str(SHOP / "manage.py"), *args], env=env, cwd=SHOP,
                       check=True, capture_output=True)
    return "shop_template"


@dataclass
class Shop:
    """One test's namespace (with the worker's RBAC and the DB Secret) and database."""

    k8s: Cluster
    kubelet: Kubelet
    pg: PgServer
    namespace: str
    database: str

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.pg.dsn(self.database), autocommit=True) as conn:
            return list(conn.execute(sql.encode()).fetchall())

    def apply(self, manifest: Path | str) -> None:
        text = manifest.read_text() if isinstance(manifest, Path) else manifest
        self.k8s.kubectl("apply", "-n", self.namespace, "-f", "-", input=text)

    def dmig(self, name: str) -> dict[str, Any]:
        body = self.k8s.api("GET", f"/apis/chunkwise.dev/v1alpha1/namespaces/{self.namespace}/"
                                   f"datamigrations/{name}")
        assert body is not None, f"no DataMigration {name}"
        return dict(body)

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.k8s.api("PATCH", f"/apis/chunkwise.dev/v1alpha1/namespaces/{self.namespace}/"
                              f"datamigrations/{name}", {"spec": spec},
                      "application/merge-patch+json")

    def wait_phase(self, name: str, phase: str, timeout: float = 180) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            body = self.dmig(name)
            return body if body.get("status", {}).get("phase") == phase else None
        try:
            return dict(self.k8s.wait_for(f"{name} phase {phase}", reached, timeout))
        except AssertionError:
            status = self.dmig(name).get("status")
            raise AssertionError(f"{name} did not reach {phase}; status: {status}") from None

    def jobs(self) -> list[dict[str, Any]]:
        return list(self.k8s.api("GET", f"/apis/batch/v1/namespaces/{self.namespace}/jobs")
                    ["items"])

    def pods(self) -> list[dict[str, Any]]:
        return list(self.k8s.api("GET", f"/api/v1/namespaces/{self.namespace}/pods")["items"])

    def events(self, name: str) -> list[str]:
        items = self.k8s.api("GET", f"/api/v1/namespaces/{self.namespace}/events")["items"]
        # in the order they were created (etcd's revision); names are random (kopf's)
        by_creation = sorted(items, key=lambda e: int(e["metadata"]["resourceVersion"]))
        return [e["reason"] for e in by_creation
                if e["involvedObject"]["name"] == name
                and e["involvedObject"]["kind"] == "DataMigration"]

    def pod_logs(self) -> str:
        return "\n".join(f"--- pod {p['metadata']['name']}\n"
                         + self.kubelet.pod_log(self.namespace, p["metadata"]["name"])
                         for p in self.pods())


@pytest.fixture
def shop(request: pytest.FixtureRequest, k8s: Cluster, kubelet: Kubelet,
         operator: OperatorProcess, pg: PgServer, shop_template: str) -> Iterator[Shop]:
    n = next(_numbers)
    namespace, database = f"shop-{n}", f"shop_e2e_{n}"
    pg.sql(f"CREATE DATABASE {database} TEMPLATE {shop_template}")
    k8s.kubectl("create", "namespace", namespace)
    k8s.kubectl("apply", "-n", namespace, "-f", str(REPO / "examples" / "k8s" /
                                                    "worker-rbac.yaml"))
    secret = [f"--from-literal={k}={v}" for k, v in pg.env(database).items()]
    k8s.kubectl("create", "secret", "generic", "shop-db", "-n", namespace, *secret)
    value = Shop(k8s, kubelet, pg, namespace, database)
    yield value
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        print(f"\n===== logs for {namespace}\n{value.pod_logs()}\n"
              f"--- operator.log\n{(k8s.workdir / 'operator.log').read_text()[-6000:]}\n"
              f"{k8s.log_tails(20)}\nkubelet errors: {kubelet.errors[-5:]}")
    k8s.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    time.sleep(0.1)
