"""bench/apply_latency.py, with two applies, so it cannot rot: its timeline is in the
order things happen, and its report prints every step. Its figures are judged by reading
them (bench/), not here."""

from __future__ import annotations

import statistics

from bench.apply_latency import STEPS, measure, report

from tests.e2e.conftest import OperatorDeployment
from tests.e2e.testenv.cluster import Cluster
from tests.e2e.testenv.node import Node
from tests.support.pgserver import PgServer


def test_apply_to_first_batch_is_timed_step_by_step(
        k8s: Cluster, node: Node, pg: PgServer, shop_template: str,
        operator: OperatorDeployment) -> None:
    first, timed = measure(k8s, node, pg, shop_template, applies=2)
    assert len(timed) == 2
    for timeline in (first, *timed):
        # the operator creates the Job, then the kubelet runs its pod, then the worker
        # commits a batch: each watch or poll saw them in that order
        assert 0 < timeline.job_created < timeline.pod_running < timeline.first_batch, timeline
    # the report's p50 of each step is the median of what was measured
    lines = report(first, timed).splitlines()
    for i, step in enumerate(STEPS):
        [line] = [line for line in lines if line.startswith(step)]
        p50 = statistics.median(t.steps()[i] for t in timed)
        assert line.split()[len(step.split())] == f"{p50 * 1000:.0f}ms", line
