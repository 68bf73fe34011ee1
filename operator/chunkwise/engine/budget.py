"""The error budget: when failed rows say the run should stop."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import Halted
from .settings import HaltThresholds

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


def check_budget(tally: Tally, thresholds: HaltThresholds) -> None:
    """Raise :class:`Halted` with a reason when any threshold is passed."""
    if tally.failed_rows > thresholds.failed_rows:
        raise Halted(
            "FailedRowsExceeded",
            f"{tally.failed_rows} rows failed, more than haltOn.failedRows="
            f"{thresholds.failed_rows}",
        )
    if tally.attempted >= max(thresholds.min_sample, 1) and tally.failed_rows:
        rate = tally.failed_rows / tally.attempted
        if rate > thresholds.failure_rate:
            raise Halted(
                "FailureRateExceeded",
                f"failure rate {rate:.4f} ({tally.failed_rows}/{tally.attempted} rows) is above "
                f"haltOn.failureRate={thresholds.failure_rate}",
            )
    if tally.consecutive_failed_batches >= thresholds.consecutive_failed_batches:
        raise Halted(
            "ConsecutiveFailedBatchesExceeded",
            f"{tally.consecutive_failed_batches} batches in a row had failed rows "
            f"(haltOn.consecutiveFailedBatches={thresholds.consecutive_failed_batches})",
        )
