"""A real Kubernetes node on this machine: containerd with runc and a CNI bridge, the
kubelet, kube-proxy, and a local OCI registry (CNCF distribution) that images are pushed
to and the node pulls from.

Built by ``build.sh`` and ``build-node.sh`` (cached); started here after the control
plane. Everything lives under the cluster's work directory (containerd's root and state,
the kubelet's root, the CNI IPAM store, the pods' network namespaces), and is stopped,
unmounted and removed afterwards: pods are deleted first so the CNI plugins undo their
links and NAT rules, then kube-proxy removes its rules.

The two settings this machine needs (CONTRIBUTING.md's test environment section says more):
containerd's ``restrict_oom_score_adj`` (runc's init may not lower oom_score_adj here)
and the kubelet's ``failCgroupV1: false`` (the machine has cgroup v1 only).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.images import BUILDAH
from tests.support.pgserver import free_port

from .cluster import Cluster, write_kubeconfig

HERE = Path(__file__).resolve().parent
NODE_NAME = "chunkwise-node"
POD_CIDR = "10.244.0.0/24"
BRIDGE = "chunkwise0"  # the CNI bridge; its address (.1) is the pods' gateway
CNI_BIN = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
RUNC = Path("/usr/bin/runc") if Path("/usr/bin/runc").exists() else Path("/usr/sbin/runc")
#: images that the tests' DataMigrations name, served by the local registry through
#: containerd's mirror configuration (certs.d/<host>/hosts.toml), as a pull-through
#: mirror would serve them in a real cluster
MIRRORED_HOSTS = ("registry.example.com",)
#: host settings the node changes, put back when it stops: forwarding (set here, first),
#: and what the kubelet sets for itself (protectKernelDefaults is off)
SYSCTLS = tuple(Path("/proc/sys") / name for name in (
    "net/ipv4/ip_forward", "net/ipv4/conf/all/route_localnet", "vm/overcommit_memory",
    "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops", "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes"))
#: the iptables tables the kubelet, kube-proxy and the CNI plugins write to
IPTABLES_TABLES = ("filter", "nat", "mangle")


def node_ip() -> str:
    """The address the machine reaches the world from: the node's InternalIP, where the
    API server and PostgreSQL listen for pods."""
    route = subprocess.run(["ip", "-4", "route", "get", "1.1.1.1"], capture_output=True,
                           text=True).stdout
    found = re.search(r"\bsrc (\d+\.\d+\.\d+\.\d+)", route)
    if found:
        return found.group(1)
    addresses = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                               capture_output=True, text=True).stdout
    found = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", addresses)
    if not found:
        raise RuntimeError("no global IPv4 address for the node (ip -4 addr shows none)")
    return found.group(1)


def build_node() -> tuple[Path, str]:
    """build-node.sh's bin directory, and the pause image in buildah's storage."""
    result = subprocess.run(["bash", str(HERE / "build-node.sh")], stdout=subprocess.PIPE,
                            text=True, check=True)
    bin_dir = Path(result.stdout.strip().splitlines()[-1])
    return bin_dir, (bin_dir.parent / "pause-image").read_text().strip()


def _mounts_under(prefix: Path) -> list[str]:
    mounts = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if target == str(prefix) or target.startswith(f"{prefix}/"):
            mounts.append(target)
    return mounts


def unmount_all(prefix: Path) -> list[str]:
    """Unmount everything mounted under ``prefix``, deepest first (the kubelet bind-mounts
    its pods' volumes, containerd its rootfs and network namespaces); what is left."""
    for _ in range(5):
        mounts = _mounts_under(prefix)
        if not mounts:
            return []
        for target in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True)
    return _mounts_under(prefix)


@dataclass
class Registry:
    """CNCF distribution on loopback, plain HTTP: buildah pushes with --tls-verify=false,
    containerd pulls through hosts.toml."""

    address: str

    def image(self, repository: str, tag: str) -> str:
        return f"{self.address}/{repository}:{tag}"

    def push(self, local_image: str, repository: str, tag: str) -> str:
        target = self.image(repository, tag)
        pushed = subprocess.run([*BUILDAH, "push", "--quiet", "--tls-verify=false",
                                 local_image, f"docker://{target}"], capture_output=True,
                                text=True, timeout=900)
        if pushed.returncode != 0:
            raise RuntimeError(f"buildah push {local_image} to {target}: {pushed.stderr}")
        return target


class Node:
    def __init__(self, cluster: Cluster, bin_dir: Path, node_bin: Path, address: str) -> None:
        self.cluster = cluster
        self.bin = bin_dir
        self.node_bin = node_bin
        self.address = address
        self.root = cluster.workdir / "node"
        self.socket = self.root / "containerd" / "containerd.sock"
        self.registry = Registry(f"127.0.0.1:{free_port()}")
        self._saved: dict[str | Path, str] = {}  # host state to put back: sysctls, iptables

    # -- clients --------------------------------------------------------------------------

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(self.node_bin / "ctr"), "--address", str(self.socket),
                               "--namespace", "k8s.io", *args], capture_output=True, text=True,
                              timeout=60)
        if check and done.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)}: {done.stderr}")
        return done

    def kill_container(self, container_id: str, sig: int = signal.SIGKILL) -> None:
        """Kill a container's process the way a node loses it: its task, not the pod."""
        self.ctr("tasks", "kill", "--signal", signal.Signals(sig).name,
                 container_id.split("://")[-1])

    # -- start ----------------------------------------------------------------------------

    def start(self, pause_image: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._save_host_state()
        self._start_registry()
        sandbox = self.registry.push(pause_image, "pause", "chunkwise")
        self._start_containerd(sandbox)
        self._start_kubelet()
        self._start_kube_proxy()
        self.cluster.wait_for("the node to be Ready", self._ready, timeout=120)

    def _save_host_state(self) -> None:
        """What the node changes on the host, saved to be put back by ``stop``: the
        kubelet, kube-proxy and the CNI plugins add iptables chains and rules, and pods'
        traffic needs IP forwarding."""
        for sysctl in SYSCTLS:
            self._saved[sysctl] = sysctl.read_text()
        for save in ("iptables-save", "ip6tables-save"):
            dump = subprocess.run([save], capture_output=True, text=True)
            if dump.returncode == 0:
                self._saved[save] = dump.stdout
        SYSCTLS[0].write_text("1\n")

    def _start_registry(self) -> None:
        config = self.root / "registry.yaml"
        config.write_text(json.dumps({  # YAML is a superset of JSON
            "version": 0.1, "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.root / "registry")},
                        "delete": {"enabled": True}},
            "http": {"addr": self.registry.address}}))
        self.cluster.start_process("registry", [str(self.node_bin / "registry"), "serve",
                                                str(config)],
                                   env={**os.environ, "OTEL_TRACES_EXPORTER": "none"})
        self.cluster.wait_for("the registry", self._registry_answers, timeout=30)

    def _registry_answers(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://{self.registry.address}/v2/", timeout=2):
                return True
        except OSError:
            return False

    def _start_containerd(self, sandbox_image: str) -> None:
        base = self.root / "containerd"
        certs = base / "certs.d"
        for host in (self.registry.address, *MIRRORED_HOSTS):
            hosts = certs / host
            hosts.mkdir(parents=True, exist_ok=True)
            (hosts / "hosts.toml").write_text(
                f'server = "http://{self.registry.address}"\n'
                f'[host."http://{self.registry.address}"]\n'
                '  capabilities = ["pull", "resolve"]\n')
        cni = self.root / "cni"
        (cni / "net.d").mkdir(parents=True, exist_ok=True)
        (cni / "net.d" / "10-chunkwise.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": "chunkwise", "plugins": [
                {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": True,
                 "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]],
                          "routes": [{"dst": "0.0.0.0/0"}],
                          "dataDir": str(cni / "ipam")}},
                {"type": "portmap", "capabilities": {"portMappings": True}}]}, indent=1))
        runtime = "plugins.'io.containerd.cri.v1.runtime'"
        images = "plugins.'io.containerd.cri.v1.images'"
        (base / "config.toml").write_text(f"""version = 3
root = "{base / 'root'}"
state = "{base / 'state'}"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[{images}]
  snapshotter = "overlayfs"
[{images}.pinned_images]
  sandbox = "{sandbox_image}"
[{images}.registry]
  config_path = "{certs}"
[{runtime}]
  # runc's init cannot lower oom_score_adj on this machine: without this every sandbox
  # fails with "can't get final child's PID from pipe: EOF"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
[{runtime}.cni]
  bin_dirs = ["{CNI_BIN}"]
  conf_dir = "{cni / 'net.d'}"
[{runtime}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{runtime}.containerd.runtimes.runc.options]
  BinaryName = "{RUNC}"
""")
        env_path = f"{self.node_bin}{os.pathsep}{os.environ.get('PATH', '')}"  # the shim
        self.cluster.start_process("containerd", [str(self.node_bin / "containerd"), "--config",
                                                  str(base / "config.toml"), "--log-level",
                                                  "warn"], env={**os.environ, "PATH": env_path})
        self.cluster.wait_for("containerd's socket", lambda: self.ctr(
            "version", check=False).returncode == 0, timeout=60)

    def _start_kubelet(self) -> None:
        pki = self.cluster.pki
        kubelet = self.root / "kubelet"
        kubelet.mkdir(exist_ok=True)
        port, health = free_port(), free_port()
        (self.root / "kubelet.yaml").write_text(json.dumps({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "failCgroupV1": False,  # this machine has cgroup v1 only
            "cgroupDriver": "cgroupfs", "failSwapOn": False, "cgroupsPerQOS": False,
            "enforceNodeAllocatable": [], "localStorageCapacityIsolation": False,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "podCIDR": POD_CIDR, "address": self.address, "port": port,
            "healthzBindAddress": "127.0.0.1", "healthzPort": health, "readOnlyPort": 0,
            "authentication": {"anonymous": {"enabled": False},
                               "webhook": {"enabled": False},
                               "x509": {"clientCAFile": str(pki / "ca.crt")}},
            "authorization": {"mode": "AlwaysAllow"},  # only the API server has a client cert
            "serializeImagePulls": False, "resolvConf": "/etc/resolv.conf",
            # a full disk must not evict the tests' pods, nor image GC remove their images
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "containerLogMaxSize": "50Mi",
        }, indent=1))
        write_kubeconfig(self.root / "kubelet.kubeconfig", self.cluster.server,
                         pki / "ca.crt", {"client-certificate": str(pki / "admin.crt"),
                                          "client-key": str(pki / "admin.key")})
        self.cluster.start_process("kubelet", [
            str(self.bin / "kubelet"), "--config", str(self.root / "kubelet.yaml"),
            "--kubeconfig", str(self.root / "kubelet.kubeconfig"), "--root-dir", str(kubelet),
            "--cert-dir", str(kubelet / "pki"), "--hostname-override", NODE_NAME,
            "--node-ip", self.address, "--v", "1"])

    def _start_kube_proxy(self) -> None:
        (self.root / "kube-proxy.yaml").write_text(json.dumps({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.root / "kubelet.kubeconfig")},
            "mode": "iptables", "clusterCIDR": POD_CIDR, "hostnameOverride": NODE_NAME,
            "healthzBindAddress": f"127.0.0.1:{free_port()}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            # no NodePorts on 127.0.0.1, so the host's route_localnet stays as it is
            "iptables": {"localhostNodePorts": False},
            # leave the machine's conntrack table sizes as they are (setting them is refused)
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                          "tcpCloseWaitTimeout": "0s"}}, indent=1))
        self.cluster.start_process("kube-proxy", [
            str(self.bin / "kube-proxy"), "--config", str(self.root / "kube-proxy.yaml"),
            "--v", "1"])

    def _ready(self) -> bool:
        node = self.cluster.api("GET", f"/api/v1/nodes/{NODE_NAME}")
        if not node:
            return False
        return any(c["type"] == "Ready" and c["status"] == "True"
                   for c in node["status"].get("conditions", []))

    # -- stop -----------------------------------------------------------------------------

    def delete_all_pods(self, timeout: float = 60) -> None:
        """Let the kubelet stop every pod, so the CNI plugins remove their links, addresses
        and NAT rules (a killed containerd would leave them behind). Cordoned first, so
        no controller's replacement pod starts meanwhile."""
        self.cluster.kubectl("cordon", NODE_NAME, check=False)
        self.cluster.kubectl("delete", "pods", "--all", "--all-namespaces", "--wait=false",
                             "--grace-period=1", check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._running_tasks():
            time.sleep(0.5)

    def _running_tasks(self) -> list[tuple[str, int]]:
        """(container id, its init's host PID) of every running container."""
        listed = self.ctr("tasks", "list", check=False)
        if listed.returncode != 0:
            raise RuntimeError(f"ctr tasks list failed: {listed.stderr}")
        return [(fields[0], int(fields[1])) for fields in
                (line.split() for line in listed.stdout.splitlines()[1:])
                if len(fields) >= 3 and fields[2] == "RUNNING"]

    def kill_leftover_containers(self) -> None:
        """Whatever the kubelet did not stop: its init process is killed (the rest of its
        PID namespace goes with it), so nothing outlives containerd and its shims."""
        for _, pid in self._running_tasks():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        """After the control plane's own processes are stopped: what is left on the host."""
        with contextlib.suppress(Exception):
            subprocess.run([str(self.bin / "kube-proxy"), "--cleanup"], capture_output=True,
                           timeout=60)
        subprocess.run(["pkill", "-KILL", "-f", f"containerd-shim-runc-v2 .*{self.socket}"],
                       capture_output=True)
        left = unmount_all(self.root)
        ports = subprocess.run(["ip", "-o", "link", "show", "master", BRIDGE],
                               capture_output=True, text=True).stdout
        for veth in re.findall(r"^\d+: ([^@:]+)", ports, re.MULTILINE):
            subprocess.run(["ip", "link", "delete", veth], capture_output=True)
        subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True)
        for save in ("iptables-save", "ip6tables-save"):
            if save in self._saved:
                # a table missing from the dump was empty: restoring it empty flushes the
                # chains and rules the node added there
                dump = self._saved[save] + "".join(
                    f"*{table}\nCOMMIT\n" for table in IPTABLES_TABLES
                    if f"*{table}\n" not in self._saved[save])
                subprocess.run([save.replace("-save", "-restore")], input=dump, text=True,
                               capture_output=True)
        for sysctl in SYSCTLS:
            if sysctl in self._saved:
                sysctl.write_text(self._saved[sysctl])
        if left:
            raise RuntimeError(f"still mounted under {self.root} after the node stopped: {left}")


@contextlib.contextmanager
def running_node(cluster: Cluster, bin_dir: Path, address: str) -> Iterator[Node]:
    node_bin, pause_image = build_node()
    node = Node(cluster, bin_dir, node_bin, address)
    try:
        node.start(pause_image)
        yield node
    finally:
        with contextlib.suppress(Exception):
            node.delete_all_pods()
        with contextlib.suppress(Exception):
            node.kill_leftover_containers()
        cluster.stop_processes(("kube-proxy", "kubelet", "containerd", "registry"))
        node.stop()
