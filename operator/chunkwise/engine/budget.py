"""The error budget: when failed rows say the run should stop."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import Halted
from .settings import Caller, HaltThresholds, tunable_named

__all__ = ["Tally", "check_budget"]


@dataclass
class Tally:
    """Counts the budget is judged on; persisted in the checkpoint row."""

    rows_processed: int = 0
    failed_rows: int = 0
    consecutive_failed_batches: int = 0

    @property
    def attempted(self) -> int:
        return self.rows_processed + self.failed_rows


def check_budget(tally: Tally, thresholds: HaltThresholds,
                 caller: Caller = Caller.POD) -> None:
    """Raise :class:`Halted` with a reason when any threshold is passed; its message names
    the threshold as ``caller``'s user sets it, and what to change."""
    if tally.failed_rows > thresholds.failed_rows:
        knob = caller.knob(tunable_named("haltOn.failedRows"))
        raise _halted("FailedRowsExceeded",
                      f"{tally.failed_rows} rows failed, more than {knob}="
                      f"{thresholds.failed_rows}", knob, caller)
    if tally.attempted >= max(thresholds.min_sample, 1) and tally.failed_rows:
        rate = tally.failed_rows / tally.attempted
        if rate > thresholds.failure_rate:
            knob = caller.knob(tunable_named("haltOn.failureRate"))
            raise _halted("FailureRateExceeded",
                          f"failure rate {rate:.4f} ({tally.failed_rows}/{tally.attempted} "
                          f"rows) is above {knob}={thresholds.failure_rate}", knob, caller)
    if tally.consecutive_failed_batches >= thresholds.consecutive_failed_batches:
        knob = caller.knob(tunable_named("haltOn.consecutiveFailedBatches"))
        raise _halted("ConsecutiveFailedBatchesExceeded",
                      f"{tally.consecutive_failed_batches} batches in a row had failed rows "
                      f"({knob}={thresholds.consecutive_failed_batches})", knob, caller)


def _halted(reason: str, what: str, knob: str, caller: Caller) -> Halted:
    """Running again as it is halts again at once: say what to change."""
    return Halted(reason, f"{what}; fix the code or the data that make rows fail, or raise "
                          f"{knob}; {caller.go_on()}")
