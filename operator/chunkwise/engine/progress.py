"""Progress figures from a checkpoint: one computation for the terminal and the CR status."""

from __future__ import annotations

from dataclasses import dataclass

from .runner import CheckpointState

__all__ = ["Progress", "format_duration", "progress_of"]


@dataclass(frozen=True)
class Progress:
    done: int  # rows processed
    total: int  # rows estimated at planning, never below done
    fraction: float  # 0..1; 1 once the checkpoint is done
    rows_per_second: float  # over this run (rows done before it started do not count)
    eta_seconds: float | None  # None when unknown or done


def progress_of(state: CheckpointState, rows_at_start: int, elapsed: float) -> Progress:
    done = state.tally.rows_processed
    total = max(state.rows_estimated, done)
    fraction = 1.0 if state.done else (done / total if total else 0.0)
    rate = (done - rows_at_start) / max(elapsed, 1e-9)
    eta = (total - done) / rate if rate > 0 and not state.done else None
    return Progress(done, total, fraction, rate, eta)


def format_duration(seconds: float | None, clock: bool = True) -> str:
    """``1:02:05``/``2:05`` (clock) or ``1h02m``/``2m05s``/``5s`` (for kubectl columns)."""
    if seconds is None:
        return "--:--" if clock else ""
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if clock:
        return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
