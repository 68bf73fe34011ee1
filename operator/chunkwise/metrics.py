"""Every Prometheus metric chunkwise exports, defined once.

Two sources, one naming scheme (prefix ``chunkwise_``, base units, counters end in
``_total``, labels bounded to ``namespace``, ``migration``, ``shard`` and small enums;
never keys or batch ids):

- a **worker** (a Job's pod, or a local ``chunkwise_run``/``migrate``) counts its own
  batches live, through :class:`MetricsReporter` on the engine's reporting hooks, and
  serves them while it runs (:func:`serve_worker_metrics`);
- the **operator** computes per-DataMigration series at scrape time from each
  resource's status (:class:`MigrationCollector`), so a finished run's totals stay
  visible after its pod is gone, and a deleted DataMigration's series disappear.

These names are the contract with the dashboard (``scripts/dashboard.py``) and the
alerts (the chart's PrometheusRule); the docs' metrics reference is generated from
this module (scripts/docs-reference.py) and checked fresh by a test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from chunkwise.contract import Phase, parse_utc, throttle_of
from chunkwise.engine import (
    THROTTLE_REASONS,
    BatchReport,
    CheckpointState,
    ErrorKind,
    Outcome,
    Throttle,
)

__all__ = [
    "BATCH_RESULTS", "MigrationCollector", "MetricsReporter", "Name", "RunLabels",
    "WorkerMetrics", "serve_worker_metrics",
]

RUN_LABELS: Final = ("namespace", "migration", "shard")
MIGRATION_LABELS: Final = ("namespace", "migration")
#: a batch committed every row it took, or some rows failed, were isolated and recorded
BATCH_RESULTS: Final = ("committed", "isolated")
#: seconds; a batch aims at batch.targetDuration (default 1 s), a slow one can take minutes
DURATION_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                           120.0, 300.0)
#: seconds; an uncontended lock step waits microseconds, a blocked one up to lock_timeout
LOCK_WAIT_BUCKETS: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                            30.0, 60.0, 120.0)


class Name:
    """Metric family names as Prometheus stores them (histograms add _bucket/_sum/_count)."""

    # a worker's live series (labels: namespace, migration, shard)
    ROWS_PROCESSED: Final = "chunkwise_rows_processed_total"
    FAILED_ROWS: Final = "chunkwise_failed_rows_total"
    BATCHES: Final = "chunkwise_batches_total"
    BATCH_DURATION: Final = "chunkwise_batch_duration_seconds"
    LOCK_WAIT: Final = "chunkwise_lock_wait_seconds"
    LOCK_TIMEOUTS: Final = "chunkwise_lock_timeouts_total"
    RETRIES: Final = "chunkwise_retries_total"
    THROTTLED: Final = "chunkwise_throttled_seconds_total"
    BATCH_SIZE: Final = "chunkwise_batch_size_rows"
    ROWS_ESTIMATED: Final = "chunkwise_rows_estimated"
    LAST_COMMIT: Final = "chunkwise_last_commit_timestamp_seconds"
    # the operator's series, one per DataMigration (labels: namespace, migration)
    MIGRATIONS: Final = "chunkwise_migrations"
    PHASE: Final = "chunkwise_migration_status_phase"
    PROGRESS: Final = "chunkwise_migration_progress_ratio"
    MIGRATION_ROWS_PROCESSED: Final = "chunkwise_migration_rows_processed_total"
    MIGRATION_ROWS_ESTIMATED: Final = "chunkwise_migration_rows_estimated"
    ROWS_PER_SECOND: Final = "chunkwise_migration_rows_per_second"
    ETA: Final = "chunkwise_migration_eta_seconds"
    MIGRATION_FAILED_ROWS: Final = "chunkwise_migration_failed_rows_total"
    MIGRATION_LOCK_WAIT: Final = "chunkwise_migration_lock_wait_seconds_total"
    MIGRATION_BATCHES: Final = "chunkwise_migration_batches_total"
    LAST_CHECKPOINT: Final = "chunkwise_migration_last_checkpoint_timestamp_seconds"
    MIGRATION_THROTTLED: Final = "chunkwise_migration_throttled"


# -- the worker -----------------------------------------------------------------------------

@dataclass(frozen=True)
class RunLabels:
    """Whose run this is: the DataMigration's namespace and name in a Job; outside
    Kubernetes an empty namespace and the operation's name (``shop.0002_status[1]``)."""

    namespace: str
    migration: str
    shard: int = 0

    def values(self) -> tuple[str, str, str]:
        return self.namespace, self.migration, str(self.shard)


class WorkerMetrics:
    """A worker's metrics, registered on ``registry`` (tests pass a fresh one)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        labels = RUN_LABELS
        self.rows_processed = Counter(
            Name.ROWS_PROCESSED, "Rows committed by this worker's batches (failed rows not "
            "included).", labels, registry=registry)
        self.failed_rows = Counter(
            Name.FAILED_ROWS, "Rows that failed in user code or the database, isolated, "
            "recorded and skipped.", labels, registry=registry)
        self.batches = Counter(
            Name.BATCHES, "Batches committed, by result: committed (every row) or isolated "
            "(failing rows split out and recorded).", (*labels, "result"), registry=registry)
        self.batch_duration = Histogram(
            Name.BATCH_DURATION, "Wall time of one committed batch: lock step, work, "
            "checkpoint and commit, including retries of it.", labels,
            buckets=DURATION_BUCKETS, registry=registry)
        self.lock_wait = Histogram(
            Name.LOCK_WAIT, "Time one batch spent waiting for its row locks (the timed "
            "lock step; 0 for a batch that read its rows unlocked), including lock steps "
            "and writes that timed out and were retried.", labels,
            buckets=LOCK_WAIT_BUCKETS, registry=registry)
        self.lock_timeouts = Counter(
            Name.LOCK_TIMEOUTS, "Batches that hit timeouts.lock (SQLSTATE 55P03) and were "
            "retried.", labels, registry=registry)
        self.retries = Counter(
            Name.RETRIES, "Batch retries, by reason (lock_timeout, statement_timeout, "
            "deadlock, serialization, shutdown, connection).", (*labels, "reason"),
            registry=registry)
        self.throttled = Counter(
            Name.THROTTLED, "Seconds the worker waited instead of running the next batch, by "
            "reason (pace: batch.pause and batch.maxRowsPerSecond; the database's health: "
            "replication_lag, transaction_age, active_backends, history_list_length, "
            "autovacuum, throttle_query).",
            (*labels, "reason"), registry=registry)
        self.batch_size = Gauge(
            Name.BATCH_SIZE, "Rows the next batch will take (the tuner's current size).",
            labels, registry=registry)
        self.rows_estimated = Gauge(
            Name.ROWS_ESTIMATED, "Rows the run expects in total, estimated when it was "
            "planned.", labels, registry=registry)
        self.last_commit = Gauge(
            Name.LAST_COMMIT, "Unix time of this worker's last committed batch.", labels,
            registry=registry)


class MetricsReporter:
    """Counts a run's batches into :class:`WorkerMetrics` (a Reporter on the engine's hooks)."""

    def __init__(self, metrics: WorkerMetrics, labels: RunLabels,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._metrics = metrics
        self._labels = run = labels.values()
        self._wall_clock = wall_clock
        m = metrics
        # this run's children, looked up once rather than on every batch; every known
        # label value exists from the start (at 0), so rate() and the dashboard's panels
        # see a series before the first retry or throttle
        self._rows = m.rows_processed.labels(*run)
        self._failed = m.failed_rows.labels(*run)
        self._batches = {result: m.batches.labels(*run, result) for result in BATCH_RESULTS}
        self._duration = m.batch_duration.labels(*run)
        self._lock_wait = m.lock_wait.labels(*run)
        self._lock_timeouts = m.lock_timeouts.labels(*run)
        self._size = m.batch_size.labels(*run)
        self._estimated = m.rows_estimated.labels(*run)
        self._last_commit = m.last_commit.labels(*run)
        for kind in ErrorKind:
            if kind.retryable:
                m.retries.labels(*run, kind.value)
        for reason in THROTTLE_REASONS:
            m.throttled.labels(*run, reason)

    def started(self, state: CheckpointState) -> None:
        self._estimated.set(state.rows_estimated)

    def batch_committed(self, report: BatchReport) -> None:
        self._rows.inc(report.rows)
        self._failed.inc(report.failed_rows)
        self._batches["isolated" if report.failed_rows else "committed"].inc()
        self._duration.observe(report.seconds)
        self._lock_wait.observe(report.lock_wait_seconds)
        self._size.set(report.batch_size)
        self._estimated.set(max(report.state.rows_estimated, report.state.tally.rows_processed))
        self._last_commit.set(self._wall_clock())

    def retrying(self, kind: ErrorKind, attempt: int, delay: float) -> None:
        self._metrics.retries.labels(*self._labels, kind.value).inc()
        if kind is ErrorKind.LOCK_TIMEOUT:
            self._lock_timeouts.inc()

    def throttled(self, reason: str, seconds: float) -> None:
        self._metrics.throttled.labels(*self._labels, reason).inc(seconds)

    def throttle_changed(self, throttle: Throttle | None) -> None:
        pass  # counted in seconds, by reason, as it waits (throttled)

    def retuned(self, generation: int, changes: Mapping[str, tuple[Any, Any]]) -> None:
        pass  # the new batch size shows in chunkwise_batch_size_rows with the next batch

    def notice(self, message: str) -> None:
        pass

    def finished(self, outcome: Outcome) -> None:
        pass


_serving_lock = threading.Lock()
_serving: dict[tuple[str, int], WorkerMetrics] = {}


def serve_worker_metrics(port: int, address: str = "") -> WorkerMetrics:
    """Serve the worker's metrics at ``http://address:port/metrics`` from a daemon thread.

    Once per process and port: ``migrate`` may run several batched operations, each
    reporting into the same metrics under its own labels."""
    key = (address, port)
    with _serving_lock:
        if key not in _serving:
            registry = CollectorRegistry()
            metrics = WorkerMetrics(registry)
            start_http_server(port, addr=address or "0.0.0.0", registry=registry)
            _serving[key] = metrics
        return _serving[key]


# -- the operator ---------------------------------------------------------------------------

#: one DataMigration as the operator's index holds it: (namespace, name, status)
MigrationView = tuple[str, str, Mapping[str, Any]]


class MigrationCollector(Collector):
    """Per-DataMigration series from the status the worker and operator write, computed
    at scrape time from ``migrations()`` (the operator's in-memory index)."""

    def __init__(self, migrations: Callable[[], Iterable[MigrationView]]) -> None:
        self._migrations = migrations

    def describe(self) -> list[Metric]:
        return []  # computed at scrape time; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        labels = list(MIGRATION_LABELS)
        by_phase = GaugeMetricFamily(
            Name.MIGRATIONS, "DataMigrations by namespace and phase.",
            labels=["namespace", "phase"])
        phase = GaugeMetricFamily(
            Name.PHASE, "1 for the phase the DataMigration is in, 0 for the others.",
            labels=[*labels, "phase"])
        ratio = GaugeMetricFamily(
            Name.PROGRESS, "Rows processed over rows estimated (0..1; 1 when done).", labels=labels)
        rows = CounterMetricFamily(
            Name.MIGRATION_ROWS_PROCESSED, "Rows processed over all runs, from the checkpoint "
            "as the worker last reported it.", labels=labels)
        estimated = GaugeMetricFamily(
            Name.MIGRATION_ROWS_ESTIMATED, "Rows the migration expects in total.", labels=labels)
        rate = GaugeMetricFamily(
            Name.ROWS_PER_SECOND, "Committed rows per second: over the last minute while "
            "Running, over the whole run once it ended.", labels=labels)
        eta = GaugeMetricFamily(
            Name.ETA, "Seconds left at the current rate (absent when unknown or done).",
            labels=labels)
        failed = CounterMetricFamily(
            Name.MIGRATION_FAILED_ROWS, "Rows recorded as failed and skipped.", labels=labels)
        lock_wait = CounterMetricFamily(
            Name.MIGRATION_LOCK_WAIT, "Seconds all batches spent waiting for row locks.",
            labels=labels)
        batches = CounterMetricFamily(
            Name.MIGRATION_BATCHES, "Batches committed over all runs.", labels=labels)
        checkpoint = GaugeMetricFamily(
            Name.LAST_CHECKPOINT, "Unix time the worker last reported a committed checkpoint.",
            labels=labels)
        throttled = GaugeMetricFamily(
            Name.MIGRATION_THROTTLED, "1 while the worker waits on the database's health, "
            "with the reason (the Throttled condition's); absent otherwise.",
            labels=[*labels, "reason"])
        counts: dict[str, dict[str, int]] = {}
        for namespace, name, status in self._migrations():
            current = str(status.get("phase") or Phase.PENDING)
            per_namespace = counts.setdefault(namespace, dict.fromkeys(Phase, 0))
            per_namespace[current] = per_namespace.get(current, 0) + 1
            for known in Phase:
                phase.add_metric([namespace, name, known], 1.0 if known == current else 0.0)
            throttle = throttle_of(status)
            if throttle is not None and current == Phase.RUNNING:
                throttled.add_metric([namespace, name, throttle["reason"]], 1.0)
            progress: Mapping[str, Any] = status.get("progress") or {}
            if not progress:
                continue
            values = [namespace, name]
            done = float(progress.get("rowsProcessed") or 0)
            total = max(float(progress.get("rowsEstimated") or 0), done)
            ratio.add_metric(values, 1.0 if current == Phase.SUCCEEDED else
                             (done / total if total else 0.0))
            rows.add_metric(values, done)
            estimated.add_metric(values, total)
            rate.add_metric(values, float(progress.get("rowsPerSecond") or 0))
            if progress.get("etaSeconds") is not None and current == Phase.RUNNING:
                eta.add_metric(values, float(progress["etaSeconds"]))
            failed.add_metric(values, float(progress.get("failedRows") or 0))
            lock_wait.add_metric(values, float(progress.get("lockWaitSeconds") or 0))
            batches.add_metric(values, float(progress.get("batches") or 0))
            if progress.get("lastCheckpointAt"):
                checkpoint.add_metric(values, parse_utc(progress["lastCheckpointAt"]).timestamp())
        for namespace, per_phase in counts.items():
            for counted, count in per_phase.items():
                by_phase.add_metric([namespace, counted], float(count))
        yield from (by_phase, phase, ratio, rows, estimated, rate, eta, failed, lock_wait,
                    batches, checkpoint, throttled)
