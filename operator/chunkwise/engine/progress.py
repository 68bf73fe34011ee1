"""Progress figures from a checkpoint: one computation for the terminal and the CR status."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .runner import CheckpointState

__all__ = ["Progress", "RateWindow", "format_duration", "progress_of"]


@dataclass(frozen=True)
class Progress:
    done: int  # rows processed
    total: int  # rows estimated at planning, never below done
    fraction: float  # 0..1; 1 once the checkpoint is done
    rows_per_second: float  # over this run (rows done before it started do not count)
    eta_seconds: float | None  # None when unknown or done


def progress_of(state: CheckpointState, rows_at_start: int, elapsed: float,
                rate: float | None = None) -> Progress:
    """``rate`` (rows/s) when the caller measured one (a moving window); else committed rows
    over this run's wall time."""
    done = state.tally.rows_processed
    total = max(state.rows_estimated, done)
    fraction = 1.0 if state.done else (done / total if total else 0.0)
    if rate is None:
        rate = (done - rows_at_start) / max(elapsed, 1e-9)
    eta = (total - done) / rate if rate > 0 and not state.done else None
    return Progress(done, total, fraction, rate, eta)


class RateWindow:
    """Committed rows per second over the last ``seconds`` of wall time: the live figure.

    Fed the running total after each commit; the rate is the rows committed between the
    oldest sample still inside the window and the newest, over the time between them, so
    a slowdown shows within one window instead of being averaged over the whole run."""

    def __init__(self, seconds: float = 60.0) -> None:
        self.seconds = seconds
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, rows_total: int) -> None:
        self._samples.append((now, rows_total))
        # keep one sample at or before the window's start, so the window is always covered
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.seconds:
            self._samples.popleft()

    def rate(self) -> float | None:
        """None until two samples span some time."""
        if len(self._samples) < 2:
            return None
        (start, rows_then), (end, rows_now) = self._samples[0], self._samples[-1]
        return (rows_now - rows_then) / (end - start) if end > start else None


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
