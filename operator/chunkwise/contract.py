"""Everything that crosses a boundary, defined once.

The CRD, the operator, the worker, the Django commands and the tests all name these
values from here: the API's group/version/kind, the labels and annotations on what the
operator creates, the ``CHUNKWISE_*`` environment of a worker pod, the worker's exit
codes (the Job's podFailurePolicy keys on them), the status fields the worker and the
operator write, the states written in them and in a checkpoint (phases, conditions,
directions, shard and worker states, each an enum), and how timestamps are written.
Standard library only, so every layer may import it. The tunables (``batch``,
``timeouts``, ``retries``, ``haltOn``) have their own table next to the settings they
build: :data:`chunkwise.engine.TUNABLES`.
"""

from __future__ import annotations

import datetime
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypedDict

__all__ = [
    "API_GROUP", "API_VERSION", "ANNOTATION_PREFIX", "Condition", "Direction", "Env", "ExitCode",
    "JobCondition", "KIND", "Label", "OperationName", "PLURAL", "Phase", "Ports",
    "ProgressStatus", "RETRIED_FAILED_ROWS", "ResourceRef", "SHORT_NAME", "ShardState",
    "ShardStatus",
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


# -- states: each spelled here once --------------------------------------------------
#
# Their values are stored (checkpoint rows, CR status) and shown (kubectl, chunkwise_status),
# so a value never changes. Members are ``str``: they go into JSON and the database as
# their value, and compare equal to what comes back out.

class Phase(enum.StrEnum):
    """``status.phase``, in the order a run goes through them: the CRD's enum and printer
    column, and what the operator's metrics count migrations by. For display; the
    conditions say the details."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    HALTED = "Halted"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    # groups, filled in below the class (an enum's body cannot name its own members);
    # each is a frozenset, so ``status.get("phase") in Phase.ENDED`` also takes None
    #: the run is over: its Job runs no pod again, and a deleted Job is not made again
    ENDED: ClassVar[frozenset[Phase]]
    #: ended without succeeding: a change to the spec starts a new run, from the checkpoint
    RESTARTABLE: ClassVar[frozenset[Phase]]
    #: not ended: a tunable changed in the spec reaches the running worker
    GOING_ON: ClassVar[frozenset[Phase]]
    #: the Job is meant to have a pod running: one that cannot start is looked for
    ACTIVE: ClassVar[frozenset[Phase]]


Phase.ENDED = frozenset({Phase.SUCCEEDED, Phase.HALTED, Phase.FAILED})
Phase.RESTARTABLE = frozenset({Phase.HALTED, Phase.FAILED})
Phase.GOING_ON = frozenset(Phase) - Phase.ENDED
Phase.ACTIVE = frozenset({Phase.PENDING, Phase.RUNNING})


class Condition(enum.StrEnum):
    """The types of ``status.conditions``, in the order they are listed. Succeeded is the
    top-level one (as on a Job); Suspended and Halted share their names with phases."""

    SUCCEEDED = "Succeeded"
    PROGRESSING = "Progressing"
    SUSPENDED = "Suspended"
    HALTED = "Halted"
    STALLED = "Stalled"
    THROTTLED = "Throttled"
    VERIFIED = "Verified"


class JobCondition(enum.StrEnum):
    """The Job controller's condition types (batch/v1) the operator reads a run from."""

    COMPLETE = "Complete"
    #: the Job succeeded; Complete follows once its pods are gone
    SUCCESS_CRITERIA_MET = "SuccessCriteriaMet"
    FAILED = "Failed"
    #: the Job failed; Failed follows once its pods are gone
    FAILURE_TARGET = "FailureTarget"
    SUSPENDED = "Suspended"


class Direction(enum.StrEnum):
    """Which code a run runs: ``spec.direction``, ``--direction``, ``CHUNKWISE_DIRECTION``,
    and a checkpoint's (each direction has its own)."""

    FORWARD = "forward"  #: forward= or transform=, over the rows todo= matches
    BACKWARD = "backward"  #: reverse=, over the rows reverse_todo= matches

    @property
    def opposite(self) -> Direction:
        return Direction.BACKWARD if self is Direction.FORWARD else Direction.FORWARD


class ShardState(enum.StrEnum):
    """A checkpoint row's ``state``: how the run of one operation, in one direction, on
    one shard stands (``chunkwise_status`` shows it)."""

    DEFERRED = "deferred"  #: planned by a ``migrate`` that deferred it; no batch has run
    #: a runner holds it, or held it until it was killed without a word (then
    #: ``chunkwise_status`` shows it as stale)
    RUNNING = "running"
    INTERRUPTED = "interrupted"  #: stopped after a committed batch (a signal, a lost database)
    HALTED = "halted"  #: the error budget was exceeded
    DONE = "done"  #: every row of its range was processed


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
    #: the worker container's terminationMessagePath: the worker writes its final report
    #: there, and the kubelet keeps it in the pod's status; unset outside a Job
    TERMINATION_LOG: Final = "CHUNKWISE_TERMINATION_LOG"
    #: which run of the DataMigration this pod is (1, 2, ...): its reports say so, and
    #: the operator ignores an earlier run's pod that reports late
    RUN: Final = "CHUNKWISE_RUN"
    #: serve the run's live metrics at ``http://ADDRESS:PORT/metrics`` while it runs
    METRICS_PORT: Final = "CHUNKWISE_METRICS_PORT"
    #: the address to bind the metrics port to; default: every interface
    METRICS_ADDRESS: Final = "CHUNKWISE_METRICS_ADDRESS"
    #: "1": plan the run (rows, rows/s, lock waits, ETA) with sample batches that are
    #: rolled back, instead of running it (spec.dryRun)
    DRY_RUN: Final = "CHUNKWISE_DRY_RUN"
    #: "1": run the operation's code again on the rows its run recorded as failed, once
    #: the run is done, instead of running it (spec.retryFailed)
    RETRY_FAILED: Final = "CHUNKWISE_RETRY_FAILED"
    #: "1"/"0": whether ``migrate`` defers BatchedRunPython operations (default: the
    #: ``CHUNKWISE_DEFER`` Django setting, else no); an operation's own ``defer=`` wins
    DEFER: Final = "CHUNKWISE_DEFER"
    #: prefix of the operator's own settings (``CHUNKWISE_OPERATOR_STALL_CHECK_INTERVAL``)
    OPERATOR_PREFIX: Final = "CHUNKWISE_OPERATOR_"
    #: read by chunkwise's own scripts, tests and benchmarks (caches, kept test servers),
    #: never by a run: the check for misspelled names (chunkwise.E007) lets them be
    TOOLING: Final = frozenset({
        "CHUNKWISE_TESTENV_CACHE", "CHUNKWISE_KEEP_TESTENV", "CHUNKWISE_IMAGE_CACHE",
        "CHUNKWISE_KEEP_IMAGES", "CHUNKWISE_DASHBOARD_DUMP", "CHUNKWISE_PG_BINDIR",
        "CHUNKWISE_BENCH_APPLIES", "CHUNKWISE_ADMIN_PICTURES"})

    @classmethod
    def names(cls) -> frozenset[str]:
        """Every ``CHUNKWISE_*`` variable a run reads, except the tunables' (their table
        names those) and the operator's own (``OPERATOR_PREFIX``)."""
        return frozenset(value for name, value in vars(cls).items()
                         if name.isupper() and isinstance(value, str)
                         and value.startswith(cls.PREFIX) and not value.endswith("_"))


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


@dataclass(frozen=True)
class OperationName:
    """Which operation: ``app_label.migration[index]``, as logs, errors and a local run's
    metrics name it (``shop.0002_customer_status[0]``)."""

    app_label: str
    migration: str
    operation: int  #: its index in the migration's operations

    _PATTERN: ClassVar = re.compile(r"([A-Za-z_]\w*)\.(\w+)\[(\d+)\]", re.ASCII)

    def __str__(self) -> str:
        return f"{self.app_label}.{self.migration}[{self.operation}]"

    @classmethod
    def parse(cls, text: str) -> OperationName:
        found = cls._PATTERN.fullmatch(text)
        if found is None:
            raise ValueError(f"expected an operation as app_label.migration[index], got {text!r}")
        return cls(found[1], found[2], int(found[3]))


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

class WorkerState(enum.StrEnum):
    """``status.worker.state``: the worker's own word on its run."""

    RUNNING = "running"
    DONE = "done"
    HALTED = "halted"
    INTERRUPTED = "interrupted"
    FAILED = "failed"  #: any other exit: the Job retries it, or gives up (USAGE)

    @classmethod
    def of(cls, exit_code: int) -> WorkerState:
        """How a run that exited with ``exit_code`` ended."""
        return _ENDED_AS.get(exit_code, cls.FAILED)


_ENDED_AS: Final[Mapping[int, WorkerState]] = {
    ExitCode.DONE: WorkerState.DONE, ExitCode.HALTED: WorkerState.HALTED,
    ExitCode.INTERRUPTED: WorkerState.INTERRUPTED}


class WorkerStatus(TypedDict, total=False):
    """``status.worker``: the worker's own report of how its run ended (or that it runs)."""

    state: WorkerState
    pod: str
    reason: str  #: CamelCase, as the engine emits it (``FailedRowsExceeded``, ...)
    message: str
    exitCode: int
    run: int  #: the run whose pod reported (absent from workers before it was added)


#: ``status.worker.reason`` of a run that retried the rows its operation recorded as
#: failed (``spec.retryFailed``); the message says what the retry did
RETRIED_FAILED_ROWS: Final = "FailedRowsRetried"


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

    reason: str  #: CamelCase: ReplicationLag, TransactionAge, HistoryListLength, ...
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
    #: a sharded run's figures per shard, of the shard's own checkpoint; the operator
    #: sums the run's ``status.progress`` from them (a single shard writes that itself)
    progress: ProgressStatus
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
