"""A real Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager (every
controller a cluster runs by default) and kube-scheduler.

Built from upstream Go modules by ``build.sh`` (cached); started here envtest-style on
free ports, with a tiny test CA, RBAC on and TokenRequest working. The API server
listens on every address and advertises the node's, so pods reach it through the
``kubernetes`` Service (``node.py`` starts the node). Component logs go to files.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.pgserver import free_port

HERE = Path(__file__).resolve().parent


def build_binaries() -> Path:
    """Run build.sh (instant with a warm cache; ~7 minutes and ~2 GB RSS when cold)."""
    result = subprocess.run(["bash", str(HERE / "build.sh")], stdout=subprocess.PIPE, text=True,
                            check=True)
    return Path(result.stdout.strip().splitlines()[-1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(pki: Path, address: str) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.crt", "-days", "2", "-subj", "/CN=chunkwise-test-ca", cwd=pki)
    (pki / "serving.ext").write_text(
        "subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        f"DNS:kubernetes.default.svc,IP:127.0.0.1,IP:10.0.0.1,IP:{address}\n"
        "extendedKeyUsage=serverAuth\n")
    (pki / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, subject, ext in (("serving", "/CN=kube-apiserver", "serving.ext"),
                               ("admin", "/O=system:masters/CN=chunkwise-test-admin",
                                "client.ext")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", subject, cwd=pki)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", ext,
                 cwd=pki)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def write_kubeconfig(path: Path, server: str, ca: Path, user: dict[str, str]) -> None:
    """kubectl reads JSON kubeconfigs as well as YAML; JSON needs no YAML library."""
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": server,
                                                  "certificate-authority": str(ca)}}],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "user"}}],
        "current-context": "test",
    }, indent=1))


class ApiError(RuntimeError):
    """An HTTP error from the API server other than 404; ``code`` is its status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Cluster:
    bin: Path
    workdir: Path
    port: int
    #: the node's InternalIP: the API server advertises it (the kubernetes Service's
    #: endpoint), PostgreSQL listens on it for pods
    address: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    def log(self, component: str) -> Path:
        return self.workdir / f"{component}.log"

    def log_tails(self, lines: int = 40) -> str:
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name} (last {len(tail)} lines)\n" + "\n".join(tail))
        return "\n".join(parts)

    # -- clients ----------------------------------------------------------------------

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        context.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return context

    def api(self, method: str, path: str, body: Any = None,
            content_type: str = "application/json", token: str | None = None) -> Any:
        """Admin (system:masters) call, or with ``token``; returns parsed JSON, None on 404."""
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        context = self._context()
        if token:
            headers["Authorization"] = f"Bearer {token}"
            context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.server + path, data=data, method=method,
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, context=context, timeout=30) as response:
                text = response.read()
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise ApiError(f"{method} {path}: {error.code} {error.read()[:500]!r}",
                           error.code) from None
        return json.loads(text) if text else None

    def watch(self, path: str, timeout: float = 120,
              opened: threading.Event | None = None) -> Iterator[dict[str, Any]]:
        """The API server's watch events on ``path`` (a list URL), one dict per line,
        until the caller stops or ``timeout`` seconds pass. ``opened`` is set once the
        API server has answered: from then on no event is missed."""
        separator = "&" if "?" in path else "?"
        request = urllib.request.Request(
            f"{self.server}{path}{separator}watch=1&timeoutSeconds={int(timeout)}",
            headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, context=self._context(),
                                    timeout=timeout + 10) as stream:
            if opened is not None:
                opened.set()
            for line in stream:
                if line.strip():
                    yield json.loads(line)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(self.bin / "kubectl"), "--kubeconfig",
                                 str(kubeconfig or self.kubeconfig), *args], input=input,
                                capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(self.bin / "helm"), "--kubeconfig", str(self.kubeconfig),
                                 *args], capture_output=True, text=True, timeout=300)
        if check and result.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)} failed:\n{result.stderr}")
        return result

    def token_for(self, namespace: str, service_account: str, seconds: int = 7200,
                  bound_pod: dict[str, str] | None = None) -> str:
        spec: dict[str, Any] = {"expirationSeconds": seconds}
        if bound_pod:
            spec["boundObjectRef"] = {"kind": "Pod", "apiVersion": "v1", **bound_pod}
        answer = self.api("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/"
                                  f"{service_account}/token", {"spec": spec})
        if answer is None:
            raise RuntimeError(f"no ServiceAccount {namespace}/{service_account}")
        return str(answer["status"]["token"])

    def kubeconfig_for(self, namespace: str, service_account: str) -> Path:
        path = self.workdir / f"{namespace}-{service_account}.kubeconfig"
        write_kubeconfig(path, self.server, self.pki / "ca.crt",
                         {"token": self.token_for(namespace, service_account)})
        return path

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}):\n{self.log_tails()}")
            try:
                request = urllib.request.Request(self.server + "/readyz")
                with urllib.request.urlopen(request, context=self._context(), timeout=5) as r:
                    if r.status == 200:
                        return
            except Exception as exc:  # not up yet
                last = exc
            time.sleep(0.5)
        raise RuntimeError(f"kube-apiserver not ready: {last}\n{self.log_tails()}")

    def wait_for(self, what: str, check: Any, timeout: float = 120, every: float = 0.5) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(every)

    def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        secret = self.api("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")
        if not secret or key not in secret.get("data", {}):
            return None
        return base64.b64decode(secret["data"][key]).decode()


    def start_process(self, name: str, args: list[str],
                      env: dict[str, str] | None = None) -> None:
        log = open(self.log(name), "wb")  # closed with the process
        self.processes[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True, env=env)

    def stop_processes(self, names: Iterable[str] | None = None) -> None:
        """SIGTERM, then SIGKILL after 10 s; in the order given (default: last started
        first)."""
        order = list(names) if names is not None else list(reversed(self.processes))
        stopping = [(name, self.processes.pop(name)) for name in order
                    if name in self.processes]
        for _, proc in stopping:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for _, proc in stopping:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextlib.contextmanager
def running_cluster(address: str = "127.0.0.1",
                    bin_dir: Path | None = None) -> Iterator[Cluster]:
    """``address``: the node's InternalIP when a node joins (node.py), else loopback."""
    bin_dir = bin_dir or build_binaries()
    workdir = Path(tempfile.mkdtemp(prefix="chunkwise-k8s-"))
    cluster = Cluster(bin_dir, workdir, free_port(), address)
    try:
        make_pki(cluster.pki, address)
        pki = cluster.pki
        etcd_client, etcd_peer = free_port(), free_port()
        cluster.start_process("etcd", [
            str(bin_dir / "etcd"), "--data-dir", str(workdir / "etcd"), "--name", "test",
            "--listen-client-urls", f"http://127.0.0.1:{etcd_client}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_client}",
            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-cluster", f"test=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync", "--log-level", "warn"])
        cluster.start_process("kube-apiserver", [
            str(bin_dir / "kube-apiserver"),
            "--etcd-servers", f"http://127.0.0.1:{etcd_client}",
            "--secure-port", str(cluster.port), "--bind-address", "0.0.0.0",
            "--advertise-address", address, "--cert-dir", str(workdir / "certs"),
            "--tls-cert-file", str(pki / "serving.crt"),
            "--tls-private-key-file", str(pki / "serving.key"),
            "--client-ca-file", str(pki / "ca.crt"),
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", str(pki / "sa.pub"),
            "--service-account-signing-key-file", str(pki / "sa.key"),
            "--authorization-mode", "RBAC", "--service-cluster-ip-range", "10.0.0.0/24",
            "--allow-privileged=true",
            # kubectl logs: the kubelet's address is its InternalIP, and it trusts the
            # test CA's admin certificate
            "--kubelet-preferred-address-types", "InternalIP",
            "--kubelet-client-certificate", str(pki / "admin.crt"),
            "--kubelet-client-key", str(pki / "admin.key"),
            # API Priority and Fairness on, as in every cluster: test_api_faults.py gives
            # the workers' ServiceAccount a FlowSchema whose level rejects (HTTP 429)
            "--v", "1"])
        write_kubeconfig(cluster.kubeconfig, cluster.server, pki / "ca.crt",
                         {"client-certificate": str(pki / "admin.crt"),
                          "client-key": str(pki / "admin.key")})
        cluster.wait_ready()
        cluster.start_process("kube-controller-manager", [
            str(bin_dir / "kube-controller-manager"), "--kubeconfig", str(cluster.kubeconfig),
            "--controllers", "*",  # what a cluster runs by default
            "--service-account-private-key-file", str(pki / "sa.key"),
            "--root-ca-file", str(pki / "ca.crt"), "--leader-elect=false",
            "--secure-port", "0", "--use-service-account-credentials=false", "--v", "1"])
        cluster.start_process("kube-scheduler", [
            str(bin_dir / "kube-scheduler"), "--kubeconfig", str(cluster.kubeconfig),
            "--leader-elect=false", "--secure-port", "0", "--v", "1"])
        yield cluster
    finally:
        cluster.stop_processes()
        if os.environ.get("CHUNKWISE_KEEP_TESTENV"):
            print(f"control plane files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
