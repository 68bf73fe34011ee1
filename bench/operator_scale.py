"""The operator at scale, on the real control plane (etcd, kube-apiserver, the Job
controller) with the chart's RBAC: many DataMigrations, most of them finished, some
running with fake workers that patch their status as real ones do.

Prints: the operator's peak and final RSS; apply-to-Job-created latency (p50, p99) of
DataMigrations applied while the others exist; status writes per migration per 2 s while
the running ones report. Not a test: run it and read the figures (medians and
percentiles; these machines are noisy).

    .venv/bin/python bench/operator_scale.py            # 1000 migrations, 20 running
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.e2e.testenv.cluster import ApiError, Cluster, running_cluster  # noqa: E402
from tests.support.pgserver import free_port  # noqa: E402

from chunkwise.contract import API_GROUP, API_VERSION, PLURAL  # noqa: E402

NAMESPACE = "scale"
RELEASE, OPERATOR_NAMESPACE = "chunkwise", "chunkwise-system"
MIGRATIONS = f"/apis/{API_GROUP}/{API_VERSION}/namespaces/{NAMESPACE}/{PLURAL}"
JOBS = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
MERGE = "application/merge-patch+json"


def manifest(name: str, suspend: bool) -> dict[str, Any]:
    return {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": "DataMigration",
            "metadata": {"name": name},
            "spec": {"image": "registry.example.com/shop:1.4.2", "suspend": suspend,
                     "migration": {"app": "shop", "name": "0002_customer_status"}}}


def call(k8s: Cluster, method: str, path: str, body: Any = None,
         content_type: str = "application/json") -> Any:
    """``k8s.api`` retried as client-go retries: a dropped connection, a timeout, 429 and
    5xx are tried again with backoff (0.2 s doubling to 5 s, for up to 2 minutes). A
    create that raced its own lost reply (409 on a retry) counts as done."""
    delay, deadline, attempt = 0.2, time.monotonic() + 120, 0
    while True:
        attempt += 1
        try:
            return k8s.api(method, path, body, content_type)
        except ApiError as error:
            if error.code == 409 and method == "POST" and attempt > 1:
                return None
            if not (error.code == 429 or error.code >= 500) or time.monotonic() > deadline:
                raise
            retry_because = f"HTTP {error.code}"
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError,
                TimeoutError) as error:
            if time.monotonic() > deadline:
                raise
            retry_because = f"{type(error).__name__}: {error}"
        print(f"[scale] {method} {path}: {retry_because}; retrying in {delay:.1f}s",
              file=sys.stderr, flush=True)
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rss_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


class Operator:
    """``python -m chunkwise.operator`` with the chart ServiceAccount's token."""

    def __init__(self, k8s: Cluster) -> None:
        env = {**os.environ, "KUBECONFIG": str(k8s.kubeconfig_for(OPERATOR_NAMESPACE,
                                                                  f"{RELEASE}-operator")),
               "PYTHONPATH": str(REPO / "operator")}
        self.log = open(k8s.workdir / "operator-scale.log", "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "chunkwise.operator", "--liveness=",
             f"--metrics=127.0.0.1:{free_port()}"], env=env, stdout=self.log,
            stderr=subprocess.STDOUT)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        self.log.close()


class JobWatch(threading.Thread):
    """When each Job of the namespace was first seen (a watch, not polling)."""

    def __init__(self, k8s: Cluster) -> None:
        super().__init__(daemon=True)
        self.k8s, self.stopped = k8s, False
        self.seen: dict[str, float] = {}
        self.restarts = 0

    def run(self) -> None:
        kubectl = [str(self.k8s.bin / "kubectl"), "--kubeconfig", str(self.k8s.kubeconfig),
                   "get", "jobs", "-n", NAMESPACE, "--watch", "-o",
                   "jsonpath={.metadata.name}{\"\\n\"}"]
        # a watch ends when the API server closes it (its request timeout) or the
        # connection drops; it is started again, listing every Job first, so none is missed
        while not self.stopped:
            with subprocess.Popen(kubectl, stdout=subprocess.PIPE, text=True) as watch:
                assert watch.stdout is not None
                for line in watch.stdout:
                    self.seen.setdefault(line.strip(), time.monotonic())
                    if self.stopped:
                        watch.terminate()
            if not self.stopped:
                self.restarts += 1
                print(f"[scale] the Job watch ended (kubectl exit {watch.returncode}); "
                      "watching again in 0.5 s", file=sys.stderr, flush=True)
                time.sleep(0.5)


def status_writes(k8s: Cluster, seconds: float) -> Counter[str]:
    """Status changes per DataMigration over ``seconds``, from a watch of them."""
    kubectl = [str(k8s.bin / "kubectl"), "--kubeconfig", str(k8s.kubeconfig), "get", PLURAL,
               "-n", NAMESPACE, "--watch-only", "-o", "json"]
    writes: Counter[str] = Counter()
    with subprocess.Popen(kubectl, stdout=subprocess.PIPE, text=True) as watch:
        timer = threading.Timer(seconds, watch.terminate)
        timer.start()
        decoder, buffer = json.JSONDecoder(), ""
        assert watch.stdout is not None
        for chunk in watch.stdout:
            buffer += chunk
            while buffer.strip():
                try:
                    body, end = decoder.raw_decode(buffer.lstrip())
                except ValueError:
                    break
                buffer = buffer.lstrip()[end:]
                writes[body["metadata"]["name"]] += 1
        timer.cancel()
    return writes


def fake_workers(k8s: Cluster, names: list[str], stop: threading.Event) -> None:
    """Each patches its DataMigration's status every 2 s, as a worker's StatusReporter."""
    rows = dict.fromkeys(names, 0)
    while not stop.wait(2.0):
        for name in names:
            rows[name] += 5000
            call(k8s, "PATCH", f"{MIGRATIONS}/{name}/status", {"status": {
                "progress": {"rowsProcessed": rows[name], "rowsEstimated": 10**7,
                             "percent": rows[name] * 100 // 10**7},
                "shards": {"0": {"index": 0, "rowsProcessed": rows[name]}}}}, MERGE)


def log(text: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--total", type=int, default=1000, help="DataMigrations in all")
    parser.add_argument("--running", type=int, default=20, help="of them Running")
    parser.add_argument("--probe", type=int, default=100,
                        help="of them applied one by one last, timed until their Job exists")
    parser.add_argument("--watch-seconds", type=float, default=60.0)
    args = parser.parse_args()
    finished = args.total - args.running - args.probe
    with running_cluster() as k8s:
        k8s.helm("install", RELEASE, str(REPO / "charts" / "chunkwise"), "--namespace",
                 OPERATOR_NAMESPACE, "--create-namespace")
        k8s.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    f"crd/{PLURAL}.{API_GROUP}")
        k8s.kubectl("create", "namespace", NAMESPACE)
        operator = Operator(k8s)
        jobs = JobWatch(k8s)
        jobs.start()
        try:
            log(f"{finished} finished migrations (created suspended, then marked Succeeded)")
            for i in range(finished):
                call(k8s, "POST", MIGRATIONS, manifest(f"done-{i:04d}", suspend=True))
            k8s.wait_for("every finished one's Job", lambda: sum(
                1 for n in jobs.seen if n.startswith("done-")) >= finished, timeout=1800,
                every=1.0)
            done = {"phase": "Succeeded", "conditions": [
                {"type": "Succeeded", "status": "True", "reason": "Completed",
                 "message": "every row was processed", "lastTransitionTime":
                 "2026-01-01T00:00:00Z"}]}
            for i in range(finished):
                call(k8s, "PATCH", f"{MIGRATIONS}/done-{i:04d}/status", {"status": done},
                     MERGE)
            # finished runs' Jobs are gone (a TTL, or cleaned up): none is left suspended
            # for the operator to read back as the migration's state
            k8s.kubectl("delete", "jobs", "--all", "-n", NAMESPACE, "--wait=false")
            log(f"{args.running} running migrations with fake workers")
            running = [f"run-{i:03d}" for i in range(args.running)]
            for name in running:
                call(k8s, "POST", MIGRATIONS, manifest(name, suspend=False))
            stop = threading.Event()
            workers = threading.Thread(target=fake_workers, args=(k8s, running, stop),
                                       daemon=True)
            workers.start()
            log(f"{args.probe} more, applied one by one: apply to Job created")
            latencies = []
            for i in range(args.probe):
                name = f"probe-{i:03d}"
                applied = time.monotonic()
                call(k8s, "POST", MIGRATIONS, manifest(name, suspend=True))
                try:
                    k8s.wait_for(f"Job of {name}", lambda n=name: f"{n}-run1" in jobs.seen,
                                 timeout=120, every=0.01)
                except AssertionError:
                    operator.log.flush()
                    print(k8s.log_tails(60), file=sys.stderr)
                    print(f"Job watch restarts: {jobs.restarts}", file=sys.stderr)
                    raise
                latencies.append(jobs.seen[f"{name}-run1"] - applied)
            log(f"status writes over {args.watch_seconds:.0f}s")
            writes = status_writes(k8s, args.watch_seconds)
            stop.set()
            workers.join(timeout=30)
            pid = operator.process.pid
            peak, now = rss_mb(pid, "VmHWM"), rss_mb(pid, "VmRSS")
        finally:
            jobs.stopped = True
            operator.stop()
    per_2s = {name: writes[name] / (args.watch_seconds / 2) for name in running}
    idle = sum(writes[n] for n in writes if n.startswith("done-"))
    print(f"\noperator at scale: {args.total} DataMigrations ({finished} Succeeded, "
          f"{args.running} Running with fake workers, {args.probe} applied last), "
          f"{os.cpu_count()} cores\n")
    print(f"operator RSS: peak {peak:.0f} MB, at the end {now:.0f} MB")
    print(f"apply to Job created: p50 {statistics.median(latencies) * 1000:.0f} ms, "
          f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms")
    print(f"status writes per Running migration per 2 s: median "
          f"{statistics.median(per_2s.values()):.2f}, max {max(per_2s.values()):.2f}; "
          f"writes to the finished ones meanwhile: {idle}")
    targets = [("operator RSS < 200 MB", peak < 200),
               ("apply to Job p50 < 1 s", statistics.median(latencies) < 1.0),
               ("apply to Job p99 < 5 s", percentile(latencies, 0.99) < 5.0),
               ("<= 1 status write per 2 s per migration", max(per_2s.values()) <= 1.0)]
    print("\ntargets")
    for text, met in targets:
        print(f"  {'met ' if met else 'MISS'}  {text}")


if __name__ == "__main__":
    main()
