"""From ``kubectl apply`` of a DataMigration to its first committed batch, on the real
node (kubelet, containerd, runc) with the operator as the chart's Deployment runs it.

Each apply gets a namespace and a copy of the seeded shop database of its own, and is
timed by watches opened before it (the API server's events as they arrive) and by
polling the checkpoint table every 5 ms:

    apply -> Job created        the operator's share
    apply -> pod Running        the Kubernetes Job's start latency (scheduler, kubelet,
                                containerd, runc), the operator's share included
    apply -> first batch        a batch committed in PostgreSQL: the worker's Django
                                start, its plan and the batch itself on top

One apply first, not counted, pulls the image onto the node. Each run is left to
finish before the next apply, so they do not overlap. Prints p50 and p99 of each.

    .venv/bin/python bench/apply_latency.py              # 20 applies, ~6 minutes
    .venv/bin/python bench/apply_latency.py --applies 5

Builds and starts what the e2e tests do (their fixtures): the control plane, the node,
the release in the node's registry, the shop's image and PostgreSQL.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.operator_scale import percentile  # noqa: E402
from tests.e2e.conftest import OperatorDeployment, Shop, new_shop  # noqa: E402
from tests.e2e.testenv.cluster import Cluster  # noqa: E402
from tests.e2e.testenv.node import Node  # noqa: E402
from tests.support.pgserver import PgServer  # noqa: E402

MANIFEST = REPO / "examples" / "k8s" / "customer-status.yaml"
APPLIES_ENV = "CHUNKWISE_BENCH_APPLIES"
STEPS = ("Job created", "pod Running", "first batch")


@dataclass(frozen=True)
class Timeline:
    """Seconds from the apply to each step, as this machine's monotonic clock saw it."""

    job_created: float
    pod_running: float
    first_batch: float

    def steps(self) -> tuple[float, float, float]:
        return (self.job_created, self.pod_running, self.first_batch)


class FirstSeen(threading.Thread):
    """When each namespace first had an object matching ``match``, from one watch over
    every namespace, opened before anything is applied."""

    def __init__(self, k8s: Cluster, path: str, match: Callable[[dict[str, Any]], bool]):
        super().__init__(daemon=True)
        self.k8s, self.path, self.match = k8s, path, match
        self.opened = threading.Event()
        self.at: dict[str, float] = {}

    def run(self) -> None:
        # one watch for the whole measurement (an hour at most); should the API server end
        # it early, a step not seen fails the apply's wait, saying which
        for event in self.k8s.watch(self.path, timeout=3600, opened=self.opened):
            seen = time.monotonic()
            if self.match(event["object"]):
                self.at.setdefault(event["object"]["metadata"]["namespace"], seen)


def _running(pod: dict[str, Any]) -> bool:
    return bool(pod.get("status", {}).get("phase") == "Running")


def _first_batch(shop: Shop, deadline: float) -> float:
    with psycopg.connect(shop.pg.dsn(shop.database), autocommit=True) as conn:
        while time.monotonic() < deadline:
            if conn.execute("SELECT 1 FROM chunkwise_checkpoint WHERE batches > 0").fetchone():
                return time.monotonic()
            time.sleep(0.005)
    raise AssertionError(f"no batch committed in {shop.namespace}: {shop.pod_logs()[-3000:]}")


def apply_once(shop: Shop, jobs: FirstSeen, pods: FirstSeen) -> Timeline:
    """Apply the shop's DataMigration, time it to its first batch, and let it finish."""
    manifest = yaml.safe_load(MANIFEST.read_text())
    name = manifest["metadata"]["name"]
    applied = time.monotonic()
    shop.k8s.api("POST", f"/apis/chunkwise.dev/v1alpha1/namespaces/{shop.namespace}/"
                         "datamigrations", manifest)
    first_batch = _first_batch(shop, applied + 300)
    shop.k8s.wait_for("the Job and the pod seen by the watches",
                      lambda: shop.namespace in jobs.at and shop.namespace in pods.at)
    shop.wait_phase(name, "Succeeded")
    return Timeline(jobs.at[shop.namespace] - applied, pods.at[shop.namespace] - applied,
                    first_batch - applied)


def measure(k8s: Cluster, node: Node, pg: PgServer, template: str,
            applies: int) -> tuple[Timeline, list[Timeline]]:
    """The first (image pull) apply, then ``applies`` timed ones."""
    jobs = FirstSeen(k8s, "/apis/batch/v1/jobs", lambda job: True)
    pods = FirstSeen(k8s, "/api/v1/pods", _running)
    for watch in (jobs, pods):
        watch.start()
        if not watch.opened.wait(30):
            raise AssertionError(f"the watch on {watch.path} did not open")
    timelines = []
    for _ in range(applies + 1):
        shop = new_shop(k8s, node, pg, template)
        timelines.append(apply_once(shop, jobs, pods))
        k8s.kubectl("delete", "namespace", shop.namespace, "--wait=false")
    return timelines[0], timelines[1:]


def report(first: Timeline, timed: list[Timeline]) -> str:
    lines = [f"apply to first batch: {len(timed)} applies after one that pulled the image, "
             f"{os.cpu_count()} cores, one node"
             + (" (with fewer than 100 applies, p99 is the slowest)" if len(timed) < 100
                else ""), "",
             f"{'from kubectl apply to':<24}{'p50':>9}{'p99':>9}{'max':>9}{'first':>9}"]
    for i, step in enumerate(STEPS):
        values = [t.steps()[i] for t in timed]
        lines.append(f"{step:<24}" + "".join(
            f"{v * 1000:>7.0f}ms" for v in (statistics.median(values),
                                             percentile(values, 0.99), max(values),
                                             first.steps()[i])))
    shares = [("operator (apply -> Job)", [t.job_created for t in timed]),
              ("Kubernetes (Job -> pod Running)", [t.pod_running - t.job_created for t in timed]),
              ("worker (Running -> first batch)", [t.first_batch - t.pod_running
                                                   for t in timed])]
    lines += ["", "median share of apply -> first batch:"]
    total = statistics.median(t.first_batch for t in timed)
    for label, values in shares:
        median = statistics.median(values)
        lines.append(f"  {label:<34}{median * 1000:>7.0f}ms  {median / total:>4.0%}")
    return "\n".join(lines)


def test_apply_to_first_batch(k8s: Cluster, node: Node, pg: PgServer, shop_template: str,
                              operator: OperatorDeployment) -> None:
    first, timed = measure(k8s, node, pg, shop_template, int(os.environ[APPLIES_ENV]))
    print("\n" + report(first, timed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--applies", type=int, default=20, help="timed applies")
    args = parser.parse_args()
    os.environ[APPLIES_ENV] = str(args.applies)
    # the e2e tests' fixtures, loaded as a plugin: their cluster, node, release and database
    sys.exit(pytest.main([__file__, "-q", "-s", "-p", "no:cacheprovider", "-p",
                          "tests.e2e.conftest", "--rootdir", str(REPO)]))


if __name__ == "__main__":
    main()
