"""The batch engine: planning, batching, retries, pacing and the error budget.

It knows transactions and SQL error codes, not Kubernetes, kopf or Django's
migration machinery; the Django layer gives it a :class:`BatchTarget` and a
:class:`CheckpointStore`.
"""

from .budget import Tally, check_budget
from .errors import (
    AnotherRunnerActive,
    DatabaseUnreachable,
    ErrorKind,
    ExitCode,
    Halted,
    LockWaitsExhausted,
    RetriesExhausted,
    classify,
    mysql_errno_of,
    sqlstate_of,
)
from .health import (
    HEALTH_REASONS,
    HealthProbe,
    HealthReading,
    Throttle,
    judge,
    wanted_figures,
    watched,
)
from .pacing import THROTTLE_REASONS, BatchSizer, RateLimiter, backoff_seconds
from .progress import Progress, RateWindow, format_duration, progress_of
from .runner import (
    BatchReport,
    BatchRunner,
    BatchTarget,
    CheckpointState,
    CheckpointStore,
    Outcome,
    Reporter,
    Retune,
    RowFailure,
    Verification,
)
from .settings import (
    TUNABLES,
    BatchSettings,
    Caller,
    HaltThresholds,
    RetrySettings,
    RunSettings,
    SettingsError,
    ThrottleSettings,
    Timeouts,
    Tunable,
    changed_tunables,
    parse_boolean,
    parse_duration,
    spec_env,
    tunable_named,
)
from .tee import Tee

__all__ = [
    "THROTTLE_REASONS", "TUNABLES", "AnotherRunnerActive", "DatabaseUnreachable", "BatchReport",
    "BatchRunner", "BatchSettings", "BatchSizer", "BatchTarget", "Caller", "CheckpointState",
    "CheckpointStore", "ErrorKind", "ExitCode", "HaltThresholds", "Halted", "LockWaitsExhausted",
    "Outcome", "Progress", "RateLimiter", "RateWindow", "Reporter", "RetriesExhausted",
    "RetrySettings", "RowFailure", "RunSettings", "SettingsError", "Tally", "Tee", "Timeouts",
    "Tunable", "Verification", "backoff_seconds", "check_budget", "classify",
    "format_duration", "parse_boolean", "parse_duration", "progress_of", "sqlstate_of",
    "mysql_errno_of", "Retune",
    "changed_tunables", "spec_env", "tunable_named", "HEALTH_REASONS", "HealthProbe",
    "HealthReading", "Throttle", "ThrottleSettings", "judge", "wanted_figures", "watched",
]
