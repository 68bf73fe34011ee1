"""The metrics module: what a worker counts from the engine's hooks, what the operator
computes from the status, and that the names are the ones the docs document."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from chunkwise.contract import Env, Ports
from chunkwise.engine import (
    BatchReport,
    CheckpointState,
    ErrorKind,
    ExitCode,
    Outcome,
    RateWindow,
    Tally,
)
from chunkwise.metrics import (
    BATCH_RESULTS,
    MetricsReporter,
    MigrationCollector,
    MigrationView,
    Name,
    RunLabels,
    WorkerMetrics,
)

REPO = Path(__file__).resolve().parents[2]
LABELS = {"namespace": "shop", "migration": "customer-status", "shard": "0"}


def state(rows: int, failed: int = 0) -> CheckpointState:
    return CheckpointState(rows, 10_000, 10_000, Tally(rows, failed, 0), rows // 100, 0.0, False)


def worker() -> tuple[CollectorRegistry, MetricsReporter]:
    registry = CollectorRegistry()
    reporter = MetricsReporter(WorkerMetrics(registry), RunLabels("shop", "customer-status"),
                               wall_clock=lambda: 1_700_000_000.0)
    return registry, reporter


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {**LABELS, **labels})


def test_worker_counts_batches_from_the_engine_hooks() -> None:
    registry, reporter = worker()
    reporter.started(state(0))
    reporter.batch_committed(BatchReport(500, 0, 0.2, 0.004, 800, state(500)))
    reporter.batch_committed(BatchReport(497, 3, 12.5, 3.0, 400, state(1000, failed=3)))
    reporter.retrying(ErrorKind.LOCK_TIMEOUT, 1, 0.1)
    reporter.retrying(ErrorKind.DEADLOCK, 1, 0.1)
    reporter.throttled("pace", 0.75)
    reporter.finished(Outcome(ExitCode.DONE, "Completed", "", state(1000)))
    assert value(registry, "chunkwise_rows_processed_total") == 997
    assert value(registry, "chunkwise_failed_rows_total") == 3
    assert value(registry, "chunkwise_batches_total", result="committed") == 1
    assert value(registry, "chunkwise_batches_total", result="isolated") == 1
    assert value(registry, "chunkwise_batch_duration_seconds_count") == 2
    assert value(registry, "chunkwise_batch_duration_seconds_bucket", le="10.0") == 1
    assert value(registry, "chunkwise_batch_duration_seconds_bucket", le="30.0") == 2
    assert value(registry, "chunkwise_lock_wait_seconds_sum") == pytest.approx(3.004)
    assert value(registry, "chunkwise_lock_wait_seconds_bucket", le="0.005") == 1
    assert value(registry, "chunkwise_lock_timeouts_total") == 1
    assert value(registry, "chunkwise_retries_total", reason="lock_timeout") == 1
    assert value(registry, "chunkwise_retries_total", reason="deadlock") == 1
    assert value(registry, "chunkwise_throttled_seconds_total", reason="pace") == 0.75
    assert value(registry, "chunkwise_batch_size_rows") == 400
    assert value(registry, "chunkwise_rows_estimated") == 10_000
    assert value(registry, "chunkwise_last_commit_timestamp_seconds") == 1_700_000_000.0


def test_every_reason_and_result_has_a_series_before_it_happens() -> None:
    registry, _ = worker()
    for result in BATCH_RESULTS:
        assert value(registry, "chunkwise_batches_total", result=result) == 0
    for kind in ErrorKind:
        expected = 0 if kind.retryable else None  # row errors are isolated, not retried
        assert value(registry, "chunkwise_retries_total", reason=kind.value) == expected
    assert value(registry, "chunkwise_throttled_seconds_total", reason="pace") == 0


def test_duration_buckets_reach_well_past_ten_seconds() -> None:
    registry, reporter = worker()
    reporter.batch_committed(BatchReport(1, 0, 0.1, 0.1, 1, state(1)))
    text = generate_latest(registry).decode()
    for family in ("chunkwise_batch_duration_seconds", "chunkwise_lock_wait_seconds"):
        bounds = [float(b) for b in re.findall(rf'{family}_bucket{{.*le="([0-9.]+)"', text)]
        assert max(bounds) >= 60, family


def test_rate_window_follows_the_last_minute_not_the_whole_run() -> None:
    window = RateWindow(seconds=60)
    assert window.rate() is None
    window.add(0, 0)
    for t in range(1, 121):  # 1000 rows/s for two minutes...
        window.add(t, 1000 * t)
    for t in range(121, 181):  # ...then 100 rows/s for one
        window.add(t, 120_000 + 100 * (t - 120))
    assert window.rate() == pytest.approx(100, rel=0.02)  # the whole run would say ~700


def views(*items: tuple[str, str, dict[str, Any]]) -> list[MigrationView]:
    return list(items)


RUNNING = {"phase": "Running", "progress": {
    "rowsProcessed": 2500, "rowsEstimated": 10_000, "rowsPerSecond": 800, "etaSeconds": 9,
    "failedRows": 2, "lockWaitSeconds": 1.5, "batches": 5,
    "lastCheckpointAt": "2026-11-22T10:00:00Z"}}


def test_operator_series_come_from_the_status_at_scrape_time() -> None:
    current = views(("shop", "a", RUNNING), ("shop", "b", {"phase": "Succeeded", "progress": {
        "rowsProcessed": 40, "rowsEstimated": 30, "rowsPerSecond": 10, "etaSeconds": None}}),
        ("other", "c", {}))
    registry = CollectorRegistry()
    registry.register(MigrationCollector(lambda: current))

    def get(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    a = {"namespace": "shop", "migration": "a"}
    assert get("chunkwise_migration_progress_ratio", **a) == 0.25
    assert get("chunkwise_migration_rows_processed_total", **a) == 2500
    assert get("chunkwise_migration_rows_estimated", **a) == 10_000
    assert get("chunkwise_migration_rows_per_second", **a) == 800
    assert get("chunkwise_migration_eta_seconds", **a) == 9
    assert get("chunkwise_migration_failed_rows_total", **a) == 2
    assert get("chunkwise_migration_lock_wait_seconds_total", **a) == 1.5
    assert get("chunkwise_migration_batches_total", **a) == 5
    assert get("chunkwise_migration_last_checkpoint_timestamp_seconds", **a) == 1795341600
    assert get("chunkwise_migration_status_phase", **a, phase="Running") == 1
    assert get("chunkwise_migration_status_phase", **a, phase="Halted") == 0
    b = {"namespace": "shop", "migration": "b"}
    assert get("chunkwise_migration_progress_ratio", **b) == 1.0
    assert get("chunkwise_migration_rows_estimated", **b) == 40  # never below processed
    assert get("chunkwise_migration_eta_seconds", **b) is None
    assert get("chunkwise_migrations", namespace="shop", phase="Running") == 1
    assert get("chunkwise_migrations", namespace="shop", phase="Succeeded") == 1
    assert get("chunkwise_migrations", namespace="shop", phase="Failed") == 0
    assert get("chunkwise_migrations", namespace="other", phase="Pending") == 1
    current.pop(0)  # deleted: its series go with it
    assert get("chunkwise_migration_progress_ratio", **a) is None
    assert get("chunkwise_migration_status_phase", **a, phase="Running") is None
    assert get("chunkwise_migrations", namespace="shop", phase="Running") == 0


def exported_names() -> set[str]:
    registry = CollectorRegistry()
    WorkerMetrics(registry)
    registry.register(MigrationCollector(lambda: views(("ns", "m", RUNNING))))
    names = set()
    for family in registry.collect():
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


def test_name_constants_are_the_exported_names() -> None:
    constants = {v for k, v in vars(Name).items() if k.isupper()}
    assert constants == exported_names()


def test_the_metrics_reference_lists_every_metric() -> None:
    """docs/reference/generated/metrics.md (written by scripts/docs-reference.py)."""
    table = (REPO / "docs" / "reference" / "generated" / "metrics.md").read_text()
    assert set(re.findall(r"`(chunkwise_[a-z_]+)`", table)) == exported_names()


def test_worker_job_declares_the_metrics_port_it_serves() -> None:
    from chunkwise.operator.jobs import worker_pod_spec

    spec = {"image": "shop:1", "migration": {"app": "shop", "name": "0002"}}
    worker = worker_pod_spec(spec, "shop", "m")["containers"][0]
    assert {"name": Ports.NAME, "containerPort": Ports.WORKER_METRICS,
            "protocol": "TCP"} in worker["ports"]
    assert {"name": Env.METRICS_PORT, "value": str(Ports.WORKER_METRICS)} in worker["env"]


def test_a_throttled_running_migration_has_a_throttled_series_with_its_reason() -> None:
    throttle = {"reason": "ReplicationLag", "message": "replication lag 12.3s > 5s",
                "since": "2026-11-22T10:00:00Z"}
    current = views(("shop", "a", {**RUNNING, "throttle": throttle}), ("shop", "b", RUNNING),
                    ("shop", "c", {"phase": "Halted", "throttle": throttle}))
    registry = CollectorRegistry()
    registry.register(MigrationCollector(lambda: current))
    assert registry.get_sample_value("chunkwise_migration_throttled", {
        "namespace": "shop", "migration": "a", "reason": "ReplicationLag"}) == 1
    throttled = [s for m in registry.collect() for s in m.samples
                 if s.name == "chunkwise_migration_throttled"]
    assert len(throttled) == 1  # b is not throttled; c has stopped, whatever it said last
