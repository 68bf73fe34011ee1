"""The worker's final report in its container's termination message.

The kubelet copies the file at the container's ``terminationMessagePath`` into the pod's
status (``status.containerStatuses[].state.terminated.message``) when the container
exits, with no call to the API server from the pod: so the operator learns how a run
ended (a halt's exit code 65 and reason) even when the worker's last status patch was
lost to an API server that was away. The operator points ``CHUNKWISE_TERMINATION_LOG`` at
that path; outside a Job nothing is written.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chunkwise.contract import Env, WorkerState
from chunkwise.engine import BatchReport, CheckpointState, ErrorKind, Outcome, Throttle

__all__ = ["TERMINATION_MESSAGE_LIMIT", "TerminationMessage"]

#: the kubelet keeps at most this many bytes of a container's termination message
TERMINATION_MESSAGE_LIMIT = 4096


class TerminationMessage:
    """A reporter that only hears the end: it writes the outcome, as JSON, to ``path``.
    The same fields as ``status.worker`` (state, reason, message, exitCode, run), the shard
    when the run is sharded, and the figures of the run's progress (rowsProcessed,
    rowsEstimated), the message cut so that the whole fits the kubelet's limit."""

    def __init__(self, path: Path, shard: int | None = None, run: int | None = None) -> None:
        self._path = path
        self._shard = shard
        self._run = run

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> TerminationMessage | None:
        env = os.environ if env is None else env
        path = env.get(Env.TERMINATION_LOG)
        if not path:
            return None
        shards = int(env.get(Env.SHARDS) or "1")
        shard = env.get(Env.SHARD) or env.get(Env.JOB_COMPLETION_INDEX) or "0"
        run = env.get(Env.RUN)
        return cls(Path(path), int(shard) if shards > 1 else None, int(run) if run else None)

    def finished(self, outcome: Outcome) -> None:
        report: dict[str, Any] = {
            "state": WorkerState.of(outcome.exit_code), "exitCode": int(outcome.exit_code),
            "reason": outcome.reason, "message": ""}
        if self._shard is not None:
            report["shard"] = self._shard
        if self._run is not None:
            report["run"] = self._run
        if outcome.state is not None:
            totals = outcome.state.run_totals or outcome.state
            report.update(rowsProcessed=totals.tally.rows_processed,
                          rowsEstimated=totals.rows_estimated)
        room = TERMINATION_MESSAGE_LIMIT - len(json.dumps(report).encode())
        message = outcome.message
        while message and len(json.dumps(message).encode()) - 2 > room:  # escapes count
            message = message[: max(0, len(message) - max(16, len(message) // 8))]
        report["message"] = message
        try:
            self._path.write_text(json.dumps(report))
        except OSError as exc:  # the status patch may still tell it
            sys.stderr.write(f"chunkwise: cannot write the termination message to "
                             f"{self._path} ({exc})\n")

    def started(self, state: CheckpointState) -> None: ...

    def batch_committed(self, report: BatchReport) -> None: ...

    def retrying(self, kind: ErrorKind, attempt: int, delay: float) -> None: ...

    def throttled(self, reason: str, seconds: float) -> None: ...

    def throttle_changed(self, throttle: Throttle | None) -> None: ...

    def retuned(self, generation: int, changes: Mapping[str, tuple[Any, Any]]) -> None: ...

    def notice(self, message: str) -> None: ...
