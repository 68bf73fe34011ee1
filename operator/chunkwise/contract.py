"""Everything that crosses a boundary, defined once.

The CRD, the operator, the worker, the Django commands and the tests all name these
values from here: the API's group/version/kind, the labels and annotations on what the
operator creates, the ``CHUNKWISE_*`` environment of a worker pod, the worker's exit
codes (the Job's podFailurePolicy keys on them), the status fields the worker and the
operator write, and how timestamps are written. Standard library only, so every layer
may import it. The tunables (``batch``, ``timeouts``, ``retries``, ``haltOn``) have
their own table next to the settings they build: :data:`chunkwise.engine.TUNABLES`.
"""

from __future__ import annotations

import datetime
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypedDict

__all__ = [
    "API_GROUP", "API_VERSION", "ANNOTATION_PREFIX", "Env", "ExitCode", "KIND", "Label",
    "PHASES", "PLURAL", "Ports", "ProgressStatus", "ResourceRef", "SHORT_NAME", "ShardStatus",
    "ThrottleStatus", "WORKER_CONTAINER", "WorkerState", "WorkerStatus", "format_utc",
    "json_key", "parse_utc", "throttle_of", "utc_now_text",
]

# -- the custom resource ---------------------------------------------------------------

API_GROUP: Final = "chunkwise.dev"
API_VERSION: Final = "v1alpha1"
KIND: Final = "DataMigration"
PLURAL: Final = "datamigrations"
SINGULAR: Final = "datamigration"
SHORT_NAME: Final = "dmig"
CATEGORY: Final = "chunkwise"
#: ``apiVersion`` as written in manifests and ownerReferences
GROUP_VERSION: Final = f"{API_GROUP}/{API_VERSION}"
#: prefix of the annotations kopf keeps its handler progress and diff-base in
ANNOTATION_PREFIX: Final = API_GROUP
#: the Job's container that runs chunkwise_run; a template container of this name is merged
WORKER_CONTAINER: Final = "worker"


#: ``status.phase`` values, in the order a run goes through them (the CRD's printer column
#: shows them; the operator's metrics count migrations by them)
PHASES: Final = ("Pending", "Running", "Suspended", "Halted", "Succeeded", "Failed")


class Ports:
    """Where metrics are served; both ports are named ``metrics`` in the pods that serve them."""

    NAME: Final = "metrics"
    OPERATOR_METRICS: Final = 9101  #: the operator's ``/metrics`` (``--metrics-port``)
    WORKER_METRICS: Final = 9102  #: a worker pod's ``/metrics`` (``CHUNKWISE_METRICS_PORT``)


class Label:
    """Labels on every Job and pod the operator creates."""

    MANAGED_BY: Final = "app.kubernetes.io/managed-by"
    MANAGER: Final = "chunkwise"  #: the value of MANAGED_BY; the operator watches Jobs by it
    MIGRATION: Final = f"{API_GROUP}/datamigration"  #: the DataMigration's name
    RUN: Final = f"{API_GROUP}/run"  #: which run (1, 2, ...) of that DataMigration


# -- the worker's environment ----------------------------------------------------------

class Env:
    """``CHUNKWISE_*`` variables a worker reads (the tunables' names come from their table)."""

    PREFIX: Final = "CHUNKWISE_"
    APP: Final = "CHUNKWISE_APP"
    MIGRATION: Final = "CHUNKWISE_MIGRATION"
    OPERATION: Final = "CHUNKWISE_OPERATION"
    DIRECTION: Final = "CHUNKWISE_DIRECTION"
    DATABASE: Final = "CHUNKWISE_DATABASE"
    #: how many shards the key space is split into (spec.parallelism)
    SHARDS: Final = "CHUNKWISE_SHARDS"
    #: which shard this runner is (0-based); in an Indexed Job, Kubernetes' own
    #: JOB_COMPLETION_INDEX says it
    SHARD: Final = "CHUNKWISE_SHARD"
    JOB_COMPLETION_INDEX: Final = "JOB_COMPLETION_INDEX"
    #: "namespace/name" of the DataMigration that runs this worker; unset outside a Job
    RESOURCE: Final = "CHUNKWISE_RESOURCE"
    #: serve the run's live metrics at ``http://ADDRESS:PORT/metrics`` while it runs
    METRICS_PORT: Final = "CHUNKWISE_METRICS_PORT"
    #: the address to bind the metrics port to; default: every interface
    METRICS_ADDRESS: Final = "CHUNKWISE_METRICS_ADDRESS"
    #: "1": plan the run (rows, rows/s, lock waits, ETA) with sample batches that are
    #: rolled back, instead of running it (spec.dryRun)
    DRY_RUN: Final = "CHUNKWISE_DRY_RUN"
    #: "1"/"0": whether ``migrate`` defers BatchedRunPython operations (default: the
    #: ``CHUNKWISE_DEFER`` Django setting, else no); an operation's own ``defer=`` wins
    DEFER: Final = "CHUNKWISE_DEFER"
    #: prefix of the operator's own settings (``CHUNKWISE_OPERATOR_STALL_CHECK_INTERVAL``)
    OPERATOR_PREFIX: Final = "CHUNKWISE_OPERATOR_"


@dataclass(frozen=True)
class ResourceRef:
    """Which DataMigration a worker runs for, as carried in ``CHUNKWISE_RESOURCE``."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def parse(cls, text: str | None) -> ResourceRef | None:
        """``"namespace/name"``; None when unset or empty (a run outside Kubernetes)."""
        if not text:
            return None
        namespace, sep, name = text.partition("/")
        if not sep or not namespace or not name or "/" in name:
            raise ValueError(f"{Env.RESOURCE}: expected 'namespace/name', got {text!r}")
        return cls(namespace, name)


# -- exit codes ------------------------------------------------------------------------

class ExitCode(enum.IntEnum):
    """Exit statuses of a runner: the contract with the Job's podFailurePolicy."""

    DONE = 0  #: every row was processed (some may be recorded as failed, within budget)
    ERROR = 1  #: unexpected failure; retrying resumes from the checkpoint
    USAGE = 64  #: bad flags, settings or operation reference; retrying cannot help
    HALTED = 65  #: the error budget was exceeded; the checkpoint is intact
    BUSY = 69  #: another runner holds this migration; try again later
    INTERRUPTED = 75  #: SIGTERM/SIGINT: the current batch committed, then the run stopped

    @property
    def retryable(self) -> bool:
        """Whether the Job should run the pod again (and resume from the checkpoint)."""
        return self not in (ExitCode.DONE, ExitCode.USAGE, ExitCode.HALTED)


# -- status written by the worker and the operator -------------------------------------

WorkerState = Literal["running", "done", "halted", "interrupted", "failed"]


class WorkerStatus(TypedDict, total=False):
    """``status.worker``: the worker's own report of how its run ended (or that it runs)."""

    state: WorkerState
    pod: str
    reason: str  #: CamelCase, as the engine emits it (``FailedRowsExceeded``, ...)
    message: str
    exitCode: int


class ProgressStatus(TypedDict, total=False):
    """``status.progress``: what ``kubectl get dmig`` prints and the operator exports."""

    rowsProcessed: int
    rowsEstimated: int
    percent: int
    percentText: str
    rowsPerSecond: int
    etaSeconds: int | None
    eta: str
    batches: int
    failedRows: int
    lockWaitSeconds: float
    lastCheckpointAt: str


class VerificationStatus(TypedDict):
    """``status.verification`` (and each shard's): the check after a completed run."""

    rowsRemaining: int  # rows up to the high-water mark still matching todo
    failedRows: int  # of those, recorded as failed (skipped on purpose, with their error)
    missedRows: int  # of those, not recorded: expected 0
    upToKey: str | int | None
    checkedAt: str


class ThrottleStatus(TypedDict):
    """``status.throttle`` (and each shard's): why the worker waits instead of running the
    next batch; absent while it does not. The operator mirrors it into the Throttled
    condition."""

    reason: str  #: CamelCase: ReplicationLag, TransactionAge, ActiveBackends, Autovacuum, ...
    message: str  #: the latest reading against its threshold: "replication lag 12.3s > 5s"
    since: str  #: when this reason began to hold the run back


class ShardStatus(TypedDict, total=False):
    """One entry of ``status.shards``: a shard's checkpoint."""

    index: int
    lastKey: str | int | None
    rowsProcessed: int
    rowsEstimated: int
    done: bool
    #: a sharded run's outcome per shard (a single shard's is ``status.worker``)
    worker: WorkerStatus
    verification: VerificationStatus
    throttle: ThrottleStatus | None


def throttle_of(status: Mapping[str, Any]) -> ThrottleStatus | None:
    """Why the worker waits: ``status.throttle``, or with shards the first shard's that
    waits (its message prefixed with the shard); None when none does."""
    if status.get("throttle"):
        return status["throttle"]  # type: ignore[no-any-return]
    shards = status.get("shards")
    if isinstance(shards, Mapping):
        for index, entry in sorted(shards.items()):
            if isinstance(entry, Mapping) and entry.get("throttle"):
                throttle = entry["throttle"]
                return {"reason": str(throttle.get("reason")),
                        "since": str(throttle.get("since")),
                        "message": f"shard {index}: {throttle.get('message')}"}
    return None


def json_key(key: object) -> str | int | None:
    """A key as status and ``--json`` show it: integers stay numbers, others are text."""
    if key is None or (isinstance(key, int) and not isinstance(key, bool)):
        return key
    return str(key)


# -- time ------------------------------------------------------------------------------

_UTC_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"


def format_utc(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, to the second, as Kubernetes writes timestamps."""
    return moment.astimezone(datetime.UTC).strftime(_UTC_FORMAT)


def utc_now_text() -> str:
    return format_utc(datetime.datetime.now(datetime.UTC))


def parse_utc(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


#: a DataMigration's derived name leaves room for its Jobs' "-runN" within 63 characters
DATA_MIGRATION_NAME_MAX: Final = 50


def data_migration_name(app_label: str, migration: str, operation: int | None = None) -> str:
    """The DataMigration name ``chunkwise_manifest`` (and the example app chart) derive:
    ``shop-0002-customer-status``, ``-opN`` added for a migration with several batched
    operations, cut to 50 characters. Stable across releases, so re-applying updates the
    same resource."""
    whole = f"{app_label}-{migration}" + ("" if operation is None else f"-op{operation}")
    return re.sub(r"[^a-z0-9-]", "-", whole.lower())[:DATA_MIGRATION_NAME_MAX].strip("-")
