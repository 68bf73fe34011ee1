"""End-to-end fixtures: a real control plane and a real node (kubelet, containerd, runc,
a CNI bridge, kube-proxy, a local registry), the operator as the chart's Deployment runs
it, and a PostgreSQL database with the example shop's customers per test, reached by
the worker pods over the pod network."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chunkwise.contract import API_GROUP, PLURAL, Ports
from tests.e2e.testenv.cluster import Cluster, running_cluster
from tests.e2e.testenv.node import POD_CIDR, Node, node_ip, running_node
from tests.support.images import BUILDAH, build_image
from tests.support.pgserver import PgServer, running_server
from tests.support.shop import shop_env

REPO = Path(__file__).resolve().parents[2]
SHOP = REPO / "examples" / "shop"
RELEASE = "chunkwise"  # the chart's ServiceAccount is <release>-operator
OPERATOR_NAMESPACE = "chunkwise-system"
OPERATOR_SELECTOR = f"app.kubernetes.io/name=chunkwise,app.kubernetes.io/instance={RELEASE}"
#: the application images the DataMigrations name; the node pulls them from the local
#: registry, which containerd mirrors registry.example.com to
SHOP_IMAGE = "registry.example.com/shop:1.4.2"
LAB_IMAGE = "registry.example.com/chunkwise-lab:1"  # tests/labproject, for its mistakes
SEEDED = 20_000
#: every namespace of the tests enforces it: the operator's and the workers' pods must pass
RESTRICTED = "pod-security.kubernetes.io/enforce=restricted"
_numbers = itertools.count(1)

pytestmark = pytest.mark.e2e


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome: Any = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[Cluster]:
    with running_cluster(node_ip()) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def node(control_plane: Cluster) -> Iterator[Node]:
    with running_node(control_plane, control_plane.bin, control_plane.address) as started:
        yield started


@pytest.fixture(scope="session")
def pg(control_plane: Cluster) -> Iterator[PgServer]:
    """Listening on the node's address too, where worker pods reach it from the pod
    network (their source addresses are in POD_CIDR, let in by pg_hba)."""
    with running_server(address=control_plane.address, clients=[POD_CIDR]) as server:
        yield server


def _buildah(*args: str) -> str:
    done = subprocess.run([*BUILDAH, *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"buildah {' '.join(args)}: {done.stderr[-2000:]}"
    return done.stdout.strip()


def lab_image(shop_image: str) -> str:
    """The test project on top of the shop's image (same Python and chunkwise), so the
    worker can run the lab's deliberately wrong operations."""
    lab = REPO / "tests" / "labproject"
    sources = hashlib.sha256(shop_image.encode())
    for path in sorted(p for p in lab.rglob("*.py") if "__pycache__" not in p.parts):
        sources.update(str(path.relative_to(lab)).encode() + path.read_bytes())
    name = f"localhost/chunkwise-lab:{sources.hexdigest()[:12]}"
    if subprocess.run([*BUILDAH, "inspect", "--type", "image", name],
                      capture_output=True).returncode != 0:
        container = _buildah("from", shop_image)
        _buildah("copy", "--chown", "65532:65532", container, str(lab), "/lab")
        _buildah("config", "--workingdir", "/lab", container)
        _buildah("commit", "--rm", "--quiet", container, name)
    return name


@dataclass(frozen=True)
class Release:
    """What scripts/release made and pushed to the node's registry."""

    version: str
    registry: str  # host:port/path, plain HTTP
    output: str  # what scripts/release printed
    dist: Path

    @property
    def chart(self) -> str:
        return f"oci://{self.registry}/charts/chunkwise"

    @property
    def image_repository(self) -> str:
        return f"{self.registry}/chunkwise"


def make_release(registry: str, checkout: Path = REPO,
                 env: dict[str, str] | None = None) -> Release:
    """scripts/release of ``checkout``'s version against ``registry`` (plain HTTP)."""
    version = subprocess.run([sys.executable, "-c", "import chunkwise; print("
                              "chunkwise.__version__)"], capture_output=True, text=True,
                             check=True, env={"PYTHONPATH": str(checkout / "operator")}
                             ).stdout.strip()
    made = subprocess.run([str(checkout / "scripts" / "release"), version, "--registry",
                           registry, "--plain-http"], capture_output=True, text=True,
                          timeout=1800, env={**os.environ, **(env or {})})
    assert made.returncode == 0, made.stderr[-4000:]
    return Release(version, registry, made.stdout, checkout / "dist" / version)


@pytest.fixture(scope="session")
def release(node: Node) -> Release:
    """The maintainer's release (scripts/release), with the node's registry as its
    registry: the wheel and sdist in dist/, the operator image and the chart pushed."""
    return make_release(f"{node.registry.address}/chunkwise")


@pytest.fixture(scope="session")
def app_images(node: Node) -> None:
    """The application's images, built with buildah and pushed to the node's registry."""
    shop = build_image("examples/shop/Dockerfile", "shop")
    node.registry.push(shop, "shop", SHOP_IMAGE.rsplit(":", 1)[1])
    node.registry.push(lab_image(shop), "chunkwise-lab", LAB_IMAGE.rsplit(":", 1)[1])


@pytest.fixture(scope="session")
def k8s(control_plane: Cluster, node: Node, release: Release, app_images: None) -> Cluster:
    """The user's install: the released chart from the registry (CRD, ServiceAccount,
    RBAC, the operator's Deployment, its image from the same registry), into a namespace
    that enforces the restricted Pod Security Standard."""
    control_plane.kubectl("create", "namespace", OPERATOR_NAMESPACE)
    control_plane.kubectl("label", "namespace", OPERATOR_NAMESPACE, RESTRICTED)
    control_plane.helm("install", RELEASE, release.chart, "--version", release.version,
                       "--plain-http", "--namespace", OPERATOR_NAMESPACE,
                       "--set", f"image.repository={release.image_repository}",
                       "--set", "operator.stallCheckInterval=2s")
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                          f"crd/{PLURAL}.{API_GROUP}")
    return control_plane


class OperatorDeployment:
    """The operator as the chart runs it: the Deployment's pod on the node, with the
    chart's ServiceAccount (so a rule missing from the chart's RBAC fails a test), its
    probes, security context and in-cluster configuration."""

    deployment = f"deployment/{RELEASE}-operator"

    def __init__(self, cluster: Cluster, node: Node) -> None:
        self.cluster = cluster
        self.node = node
        self.earlier_logs: list[str] = []  # of pods that were stopped

    def pods(self) -> list[dict[str, Any]]:
        return list(self.cluster.api(
            "GET", f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/pods?labelSelector="
                   + OPERATOR_SELECTOR.replace("=", "%3D").replace(",", "%2C"))["items"])

    def live_pods(self) -> list[dict[str, Any]]:
        """The Deployment's pods that are not being deleted."""
        return [p for p in self.pods() if not p["metadata"].get("deletionTimestamp")]

    def pod(self) -> dict[str, Any]:
        live = self.live_pods()
        assert len(live) == 1, [p["metadata"]["name"] for p in live]
        return live[0]

    def url(self, port_name: str, path: str, pod: dict[str, Any] | None = None) -> str:
        """``path`` on the pod's IP, at its container port named ``port_name``."""
        pod = pod or self.pod()
        [port] = [p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]
                  if p["name"] == port_name]
        return f"http://{pod['status']['podIP']}:{port}{path}"

    def _serving(self) -> bool:
        live = self.live_pods()
        if len(live) != 1 or not _ready(live[0]):
            return False
        try:
            with urllib.request.urlopen(self.url("health", "/healthz", live[0]), timeout=2):
                return True
        except OSError:
            return False

    def wait_ready(self, timeout: float = 120) -> None:
        try:
            self.cluster.wait_for("the operator's pod Ready and serving /healthz",
                                  self._serving, timeout=timeout)
        except AssertionError:
            raise AssertionError(f"operator not ready: {json.dumps(self.pods())[-3000:]}\n"
                                 f"{self.cluster.log_tails(20)}") from None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kill the container's process (as the node loses it); the kubelet restarts it."""
        pod = self.pod()
        [status] = pod["status"]["containerStatuses"]
        self.node.kill_container(status["containerID"], sig)
        restarts = status["restartCount"]
        self.cluster.wait_for("the operator's container restarted", lambda: any(
            s["restartCount"] > restarts for s in self.pod()["status"]["containerStatuses"]),
            timeout=120)
        self.wait_ready()

    def stop(self, sig: int = signal.SIGKILL) -> None:
        """Kill the container's process, and keep the operator down (replicas 0)."""
        pod = self.pod()
        self.earlier_logs.append(self.logs())
        [status] = pod["status"]["containerStatuses"]
        if status.get("containerID") and "running" in status.get("state", {}):
            self.node.kill_container(status["containerID"], sig)
        self.cluster.kubectl("scale", self.deployment, "-n", OPERATOR_NAMESPACE,
                             "--replicas=0")
        self.cluster.wait_for("the operator's pod gone", lambda: not self.pods(), timeout=120)

    def start(self) -> None:
        self.cluster.kubectl("scale", self.deployment, "-n", OPERATOR_NAMESPACE,
                             "--replicas=1")
        self.wait_ready()

    def scrape(self) -> str:
        """The operator's /metrics, as Prometheus reads it: at the pod's IP."""
        with urllib.request.urlopen(self.url(Ports.NAME, "/metrics"), timeout=10) as answer:
            return str(answer.read().decode())

    def logs(self) -> str:
        """The current pod's log (``kubectl logs``), after those of stopped pods."""
        current = self.cluster.kubectl("logs", self.deployment, "-n", OPERATOR_NAMESPACE,
                                       "--all-containers", "--tail=-1", check=False).stdout
        return "\n".join([*self.earlier_logs, current])


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in pod.get("status", {}).get("conditions", []))


@pytest.fixture(scope="session")
def operator(k8s: Cluster, node: Node) -> OperatorDeployment:
    deployment = OperatorDeployment(k8s, node)
    deployment.wait_ready(timeout=300)  # its first start pulls the image
    return deployment


def pg_shop_env(server: PgServer, database: str) -> dict[str, str]:
    return shop_env(server.env(database))


def seed_shop(env: dict[str, str]) -> None:
    """The shop's tables (chunkwise's, and shop 0001) and SEEDED customers, in the
    database ``env`` points the shop at."""
    for args in (["migrate", "-v0", "chunkwise"], ["migrate", "-v0", "shop", "0001"],
                 ["seed_customers", str(SEEDED)]):
        subprocess.run([sys.executable, str(SHOP / "manage.py"), *args], env=env, cwd=SHOP,
                       check=True, capture_output=True)


@pytest.fixture(scope="session")
def shop_template(pg: PgServer) -> str:
    pg.sql("CREATE DATABASE shop_template")
    seed_shop(pg_shop_env(pg, "shop_template"))
    return "shop_template"


@dataclass
class Shop:
    """One test's namespace (with the worker's RBAC and the DB Secret) and database."""

    k8s: Cluster
    node: Node
    pg: PgServer
    namespace: str
    database: str

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.pg.dsn(self.database), autocommit=True) as conn:
            return list(conn.execute(sql.encode()).fetchall())

    def set_secret(self, values: dict[str, str]) -> None:
        """The worker's DB Secret (``shop-db``): made, or replaced by ``values``."""
        literals = [f"--from-literal={k}={v}" for k, v in values.items()]
        made = self.k8s.kubectl("create", "secret", "generic", "shop-db", "-n", self.namespace,
                                *literals, "--dry-run=client", "-o", "yaml").stdout
        self.k8s.kubectl("apply", "-n", self.namespace, "-f", "-", input=made)

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

    def pod_log(self, name: str) -> str:
        """``kubectl logs`` of one pod (every container)."""
        return self.k8s.kubectl("logs", name, "-n", self.namespace, "--all-containers",
                                "--tail=-1", check=False).stdout

    def pod_logs(self) -> str:
        return "\n".join(f"--- pod {p['metadata']['name']}\n"
                         + self.pod_log(p["metadata"]["name"]) for p in self.pods())

    def delete_pod_watching(self, name: str) -> dict[str, Any]:
        """``kubectl delete pod`` (SIGTERM, then the grace period), and the pod as the last
        watch event showed it: its container's final state, which goes with the pod."""
        events = self.k8s.watch(f"/api/v1/namespaces/{self.namespace}/pods"
                                f"?fieldSelector=metadata.name%3D{name}", timeout=180)
        first = next(events)  # the watch is open before the deletion starts
        self.k8s.kubectl("delete", "pod", name, "-n", self.namespace, "--wait=false")
        last = first["object"]
        for event in events:
            last = event["object"]
            if event["type"] == "DELETED":
                return dict(last)
        raise AssertionError(f"pod {name} was not deleted; last seen: {last.get('status')}")

    def kill(self, pod: dict[str, Any], sig: int = signal.SIGKILL) -> None:
        """Kill a worker container's process the way a node fails: its task, through
        containerd (the pod then fails, and the Job retries it)."""
        [status] = [s for s in pod["status"]["containerStatuses"] if s["name"] == "worker"]
        self.node.kill_container(status["containerID"], sig)


def new_shop(k8s: Cluster, node: Node, pg: PgServer, template: str) -> Shop:
    """A namespace of its own (restricted, the worker's RBAC, the DB Secret) and a copy
    of the seeded database ``template``."""
    n = next(_numbers)
    namespace, database = f"shop-{n}", f"shop_e2e_{n}"
    pg.sql(f"CREATE DATABASE {database} TEMPLATE {template}")
    k8s.kubectl("create", "namespace", namespace)
    k8s.kubectl("label", "namespace", namespace, RESTRICTED)
    k8s.kubectl("apply", "-n", namespace, "-f", str(REPO / "examples" / "k8s" /
                                                    "worker-rbac.yaml"))
    shop = Shop(k8s, node, pg, namespace, database)
    shop.set_secret(pg.env(database))
    return shop


@pytest.fixture
def shop(request: pytest.FixtureRequest, k8s: Cluster, node: Node,
         operator: OperatorDeployment, pg: PgServer, shop_template: str) -> Iterator[Shop]:
    value = new_shop(k8s, node, pg, shop_template)
    namespace = value.namespace
    yield value
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        print(f"\n===== logs for {namespace}\n{value.pod_logs()}\n"
              f"--- operator\n{operator.logs()[-6000:]}\n{k8s.log_tails(20)}")
    k8s.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    time.sleep(0.1)
