"""Stands in for the scheduler and the kubelet, and for nothing else.

Binds pending pods to one registered Node; runs each pod's single container command
as a local process with the pod's resolved environment (the image name maps to a
directory of this repository, ``python`` to this virtualenv); projects a
ServiceAccount token for the pod like the kubelet does; writes pod status back
(Running, then Succeeded/Failed with the exit code) so the real Job controller does
retries and podFailurePolicy; on deletion sends SIGTERM, waits the grace period,
SIGKILLs, then deletes the pod. Each pod's output is kept in a file.

Pods share the host's network, so each gets its own loopback address (127.0.1.N) as its
pod IP, and its metrics server is told to bind there (``CHUNKWISE_METRICS_ADDRESS``):
two worker pods can both serve port 9102, and Prometheus's Kubernetes service discovery
finds each at podIP:9102 as it would in a cluster.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chunkwise.contract import Env

from .cluster import Cluster

NODE = "chunkwise-harness"
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
# the downward API's map fields, e.g. the Indexed Job's completion index annotation
_MAP_FIELD = re.compile(r"metadata\.(?P<map>annotations|labels)\['(?P<key>[^']+)'\]")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Running:
    process: subprocess.Popen[bytes]
    started_at: str
    namespace: str
    name: str
    uid: str
    container: str
    image: str
    ip: str
    term_sent_at: float | None = None
    reported: bool = False


class Kubelet:
    def __init__(self, cluster: Cluster, images: dict[str, Path], logs: Path,
                 python_bin: Path | None = None) -> None:
        self.cluster = cluster
        self.images = images
        self.logs = logs
        self.python_bin = python_bin or Path(sys.executable).parent
        self.running: dict[str, _Running] = {}  # by pod uid
        self.finished: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kubelet", daemon=True)
        self.errors: list[str] = []
        self._addresses = (f"127.0.{1 + n // 250}.{2 + n % 250}" for n in itertools.count())

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.cluster.api("POST", "/api/v1/nodes", {
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE},
            "status": {"conditions": [{"type": "Ready", "status": "True",
                                       "reason": "KubeletReady",
                                       "lastHeartbeatTime": _now()}]}})
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for pod in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pod.process.pid, signal.SIGKILL)

    def pod_log(self, namespace: str, name: str) -> str:
        path = self.logs / f"{namespace}_{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self, namespace: str, name: str, sig: int = signal.SIGKILL) -> bool:
        """Kill a pod's process as if its node lost it (the pod then fails)."""
        for pod in self.running.values():
            if (pod.namespace, pod.name) == (namespace, name):
                os.killpg(pod.process.pid, sig)
                return True
        return False

    # -- the loop -------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception as exc:  # keep serving; tests read .errors
                self.errors.append(repr(exc))
            self._stop.wait(0.2)

    def _sync(self) -> None:
        pods = self.cluster.api("GET", "/api/v1/pods")["items"]
        for pod in pods:
            meta, spec = pod["metadata"], pod["spec"]
            uid = meta["uid"]
            if meta.get("deletionTimestamp"):
                self._delete(pod)
            elif not spec.get("nodeName"):
                self._bind(pod)
            elif spec["nodeName"] == NODE and uid not in self.running \
                    and uid not in self.finished and pod["status"].get("phase") in (None,
                                                                                    "Pending"):
                self._run(pod)
        for uid, running in list(self.running.items()):
            code = running.process.poll()
            if code is not None and not running.reported:
                self._report_exit(running, code)
                running.reported = True
                self.finished.add(uid)
                del self.running[uid]

    def _bind(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        self.cluster.api("POST", f"/api/v1/namespaces/{meta['namespace']}/pods/"
                                 f"{meta['name']}/binding",
                         {"apiVersion": "v1", "kind": "Binding",
                          "metadata": {"name": meta["name"]},
                          "target": {"apiVersion": "v1", "kind": "Node", "name": NODE}})

    def _env(self, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
        namespace = pod["metadata"]["namespace"]
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            prefix = source.get("prefix", "")
            if "secretRef" in source:
                secret = self.cluster.api("GET", f"/api/v1/namespaces/{namespace}/secrets/"
                                                 f"{source['secretRef']['name']}") or {}
                import base64

                for key, value in secret.get("data", {}).items():
                    env[prefix + key] = base64.b64decode(value).decode()
            if "configMapRef" in source:
                config = self.cluster.api("GET", f"/api/v1/namespaces/{namespace}/configmaps/"
                                                 f"{source['configMapRef']['name']}") or {}
                for key, value in config.get("data", {}).items():
                    env[prefix + key] = value
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = _VAR.sub(lambda m: env.get(m.group(1), m.group(0)),
                                             item["value"])
                continue
            ref = item.get("valueFrom", {})
            if "secretKeyRef" in ref:
                value = self.cluster.secret_value(namespace, ref["secretKeyRef"]["name"],
                                                  ref["secretKeyRef"]["key"])
            elif "configMapKeyRef" in ref:
                config = self.cluster.api("GET", f"/api/v1/namespaces/{namespace}/configmaps/"
                                                 f"{ref['configMapKeyRef']['name']}") or {}
                value = config.get("data", {}).get(ref["configMapKeyRef"]["key"])
            elif "fieldRef" in ref:
                path = ref["fieldRef"]["fieldPath"]
                mapped = _MAP_FIELD.fullmatch(path)  # metadata.annotations['...'], labels
                if mapped:
                    value = pod["metadata"].get(mapped["map"], {}).get(mapped["key"])
                    if value is not None:
                        env[item["name"]] = value
                    continue
                value = {"metadata.name": pod["metadata"]["name"],
                         "metadata.namespace": namespace,
                         "metadata.uid": pod["metadata"]["uid"],
                         "spec.nodeName": NODE,
                         "spec.serviceAccountName": pod["spec"].get("serviceAccountName",
                                                                     "default")}.get(path)
            else:
                value = None
            if value is not None:
                env[item["name"]] = value
        return env

    def _project_token(self, pod: dict[str, Any]) -> Path | None:
        meta = pod["metadata"]
        account = pod["spec"].get("serviceAccountName") or "default"
        directory: Path = self.logs / "sa" / str(meta["uid"])
        try:
            token = self.cluster.token_for(meta["namespace"], account,
                                           bound_pod={"name": meta["name"], "uid": meta["uid"]})
        except Exception:  # no such account: the pod runs without a token
            return None
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "token").write_text(token)
        (directory / "ca.crt").write_bytes((self.cluster.pki / "ca.crt").read_bytes())
        (directory / "namespace").write_text(meta["namespace"])
        return directory

    def _run(self, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        container = spec["containers"][0]
        image = container["image"]
        workdir = self.images.get(image)
        log_path = self.logs / f"{meta['namespace']}_{meta['name']}.log"
        env = {"PATH": f"{self.python_bin}{os.pathsep}{os.environ.get('PATH', '')}",
               "HOSTNAME": meta["name"], "HOME": os.environ.get("HOME", "/tmp"),
               "KUBERNETES_SERVICE_HOST": "127.0.0.1",
               "KUBERNETES_SERVICE_PORT": str(self.cluster.port)}
        token_dir = self._project_token(pod)
        if token_dir is not None:
            env["CHUNKWISE_SERVICEACCOUNT_DIR"] = str(token_dir)
        env.update(self._env(pod, container))
        ip = next(self._addresses)
        env[Env.METRICS_ADDRESS] = ip  # the pod's own network namespace, emulated
        command = list(container.get("command", [])) + list(container.get("args", []))
        started = _now()
        if workdir is None:  # as the kubelet does when a registry has no such image
            self._cannot_pull(pod, container, image)
            return
        if not command:
            log_path.write_text(f"harness: no command for image {image!r}\n")
            process = subprocess.Popen(["false"])
        else:
            with open(log_path, "ab") as log:
                process = subprocess.Popen(command, cwd=workdir, env=env, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True)
        self.running[meta["uid"]] = _Running(process, started, meta["namespace"], meta["name"],
                                             meta["uid"], container["name"], image, ip)
        self._patch_status(meta["namespace"], meta["name"], {
            "phase": "Running", "startTime": started, "hostIP": "127.0.0.1",
            "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": t, "status": "True", "lastTransitionTime": started}
                           for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
            "containerStatuses": [{
                "name": container["name"], "image": image, "imageID": "", "ready": True,
                "started": True, "restartCount": 0,
                "state": {"running": {"startedAt": started}}}]})

    def _cannot_pull(self, pod: dict[str, Any], container: dict[str, Any], image: str) -> None:
        """The pod stays Pending with its container waiting in ImagePullBackOff; never
        started, it is never retried by the Job either (the real kubelet keeps backing off)."""
        meta = pod["metadata"]
        self.finished.add(meta["uid"])
        message = (f'Back-off pulling image "{image}": ErrImagePull: failed to resolve '
                   f"reference {image!r}: not found")
        self._patch_status(meta["namespace"], meta["name"], {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True",
                            "lastTransitionTime": _now()}],
            "containerStatuses": [{
                "name": container["name"], "image": image, "imageID": "", "ready": False,
                "started": False, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": message}}}]})

    def _report_exit(self, running: _Running, code: int) -> None:
        finished = _now()
        exit_code = code if code >= 0 else 128 - code  # killed by signal N: 128 + N
        self._patch_status(running.namespace, running.name, {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "conditions": [{"type": t, "status": "False", "lastTransitionTime": finished,
                            "reason": "PodCompleted"}
                           for t in ("ContainersReady", "Ready")],
            "containerStatuses": [{
                "name": running.container, "image": running.image, "imageID": "",
                "ready": False, "started": False, "restartCount": 0,
                "state": {"terminated": {
                    "exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                    "startedAt": running.started_at, "finishedAt": finished}}}]})

    def _patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        # strategic merge, as the kubelet does: conditions merge by type, so one that the
        # API server set (DisruptionTarget on an eviction) stays
        self.cluster.api("PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}/status",
                         {"status": status}, "application/strategic-merge-patch+json")

    def _delete(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        running = self.running.get(meta["uid"])
        if running is not None and running.process.poll() is None:
            if running.term_sent_at is None:
                running.term_sent_at = time.monotonic()
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(running.process.pid, signal.SIGTERM)
                return
            grace = float(meta.get("deletionGracePeriodSeconds") or 30)
            if time.monotonic() - running.term_sent_at < grace:
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(running.process.pid, signal.SIGKILL)
            running.process.wait()
        if running is not None and not running.reported:
            self._report_exit(running, running.process.wait())
            running.reported = True
            self.running.pop(meta["uid"], None)
            self.finished.add(meta["uid"])
        # the pod's own finalizers (the Job controller's tracking one) are not ours to touch
        with contextlib.suppress(RuntimeError):
            self.cluster.api("DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/"
                                       f"{meta['name']}", {"gracePeriodSeconds": 0})
