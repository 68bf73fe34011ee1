"""Mirror a run's progress into its DataMigration's status, at most every 2 s and at the end.

``rowsPerSecond`` (and the ETA from it) is committed rows over the last minute while
the run goes on (:class:`RateWindow`), and over the whole run in the final report.

A failed patch never fails the migration: the checkpoint in the database is the
truth; the status is a view of it. Nor is it lost: it is kept and tried again, with
what came since merged on top (:class:`_Sender`). Nor does a slow one slow it: patches
go out from a thread of their own, the newest state coalesced into one patch while the
API server is slow or away, so the batches never wait on it; only the final report
waits, a bounded time, until the API server has taken it. The final report also goes
to the pod's termination message (:mod:`.termination`), which the kubelet keeps in the
pod's status, so the operator's verdict never depends on that last patch.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import urllib.error
from collections.abc import Callable, Mapping
from typing import Any

from chunkwise.contract import (
    ProgressStatus,
    ShardStatus,
    ThrottleStatus,
    VerificationStatus,
    WorkerState,
    WorkerStatus,
    json_key,
    utc_now_text,
)
from chunkwise.engine import (
    BatchReport,
    CheckpointState,
    ErrorKind,
    Outcome,
    RateWindow,
    Throttle,
    format_duration,
    progress_of,
)

from .live import LiveSpec
from .status_client import StatusClient

__all__ = ["StatusReporter"]

#: HTTP answers to a status patch that the same patch will never get past: malformed,
#: invalid for the CRD's schema, the DataMigration gone. Any other (429, 5xx, 403 while
#: RBAC propagates) is retried.
_NEVER_TAKEN = frozenset({400, 404, 415, 422})


def _merged(earlier: dict[str, Any], later: Mapping[str, Any]) -> dict[str, Any]:
    """Two JSON merge patches as one (RFC 7386: the later one's keys win, maps merge)."""
    merged = dict(earlier)
    for key, value in later.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


class _Sender:
    """Sends status patches from its own thread: ``send`` only hands the patch over,
    merged into any not yet sent, so a batch never waits on the API server.

    A patch the API server did not take stays pending, with what was handed over since
    merged on top of it, and is tried again after a short backoff: an update said once
    (a throttle's end, a retune, the final report) is never lost to one 429, 503 or
    refused connection; while the API server is away, the newest state goes out as one
    patch once it is back. ``deliver`` says whether it is done with the patch: taken, or
    dropped as one the API server will never take; False: try it again."""

    def __init__(self, deliver: Callable[[dict[str, Any]], bool],
                 backoff: tuple[float, float] = (0.5, 2.0)) -> None:
        self._deliver = deliver
        self._first_delay, self._max_delay = backoff
        self._pending: dict[str, Any] | None = None
        self._busy = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="chunkwise-status",
                                        daemon=True)
        self._thread.start()

    def send(self, patch: Mapping[str, Any]) -> None:
        with self._changed:
            self._pending = _merged(self._pending or {}, patch)
            self._changed.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait until everything handed over was taken by the API server (or dropped as
        one it will never take); False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._pending is None and not self._busy,
                                          timeout)

    def _run(self) -> None:
        delay = self._first_delay
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pending is not None)
                patch, self._pending, self._busy = self._pending, None, True
            taken = True  # an unexpected error drops the patch, as one never taken
            try:
                taken = self._deliver(patch or {})
            finally:
                with self._changed:
                    if not taken:  # under what came since: the newer values win
                        self._pending = _merged(patch or {}, self._pending or {})
                    self._busy = False
                    self._changed.notify_all()
            if taken:
                delay = self._first_delay
            else:
                time.sleep(delay)
                delay = min(2 * delay, self._max_delay)


class StatusReporter:
    """One shard's view into the status: its own entry under ``shards.<index>`` (a JSON
    merge patch merges a map key by key, so the pods of an Indexed Job never overwrite
    each other). A run of one shard also writes ``progress`` and ``worker``, its
    outcome; a sharded run's shards keep theirs, their own figures, in their entries,
    and the operator sums the run's ``progress`` from them: several shards writing the
    run's totals would lower them whenever an older patch landed after a newer one.
    With ``shards`` pods each patches every ``interval * shards`` seconds, so the
    resource still gets about one write per ``interval``."""

    def __init__(self, client: StatusClient, interval: float = 2.0,
                 clock: Callable[[], float] = time.monotonic, shard: int = 0,
                 shards: int = 1, live: LiveSpec | None = None,
                 retry_backoff: tuple[float, float] = (0.5, 2.0),
                 run: int | None = None) -> None:
        self._client = client
        #: the run this pod is, in its reports: the operator ignores a late one from an
        #: earlier run's pod
        self._run = run
        self._live = live
        self._interval = interval * shards
        self._shard, self._sharded = shard, shards > 1
        self._clock = clock
        self._last_patch = float("-inf")
        self._started = clock()
        self._rows_at_start = 0
        self._window = RateWindow()
        self._warned = False
        self._throttle: ThrottleStatus | None = None
        self._sender = _Sender(self._deliver, retry_backoff)

    #: how long the final report is retried, with what is still to send, while the API
    #: server does not take it: within a pod's default 30 s termination grace period
    #: (the operator reads the verdict from the pod's termination message all the same)
    FINAL_WAIT = 15.0  # s

    def flush(self, timeout: float = FINAL_WAIT) -> bool:
        """Wait until every patch handed over so far was taken; False on timeout."""
        return self._sender.flush(timeout)

    def _progress(self, state: CheckpointState, checkpoint_at: str | None,
                  live: bool = True) -> ProgressStatus:
        state = self._own(state)
        p = progress_of(state, self._rows_at_start, self._clock() - self._started,
                        self._window.rate() if live else None)
        percent = int(100 * p.fraction)
        progress: ProgressStatus = {
            "rowsProcessed": p.done, "rowsEstimated": p.total, "percent": percent,
            "percentText": f"{percent}%", "rowsPerSecond": int(p.rows_per_second),
            "etaSeconds": None if p.eta_seconds is None else int(p.eta_seconds),
            "eta": format_duration(p.eta_seconds, clock=False),
            "batches": state.batches, "failedRows": state.tally.failed_rows,
            "lockWaitSeconds": round(state.lock_wait_seconds, 3),
        }
        if checkpoint_at:
            progress["lastCheckpointAt"] = checkpoint_at
        return progress

    def _patch(self, status: dict[str, Any]) -> None:
        """Hand the patch to the sender; the interval counts from here."""
        self._last_patch = self._clock()
        self._sender.send(status)

    def _deliver(self, status: dict[str, Any]) -> bool:
        """Whether the patch is done with: taken by the API server, or dropped as one it
        will never take (malformed, invalid, the DataMigration gone). False: the sender
        tries it again."""
        try:
            resource = self._client.patch_status(status)
        except urllib.error.HTTPError as exc:  # an answer: retry only what may change
            self._warn(exc)
            return exc.code in _NEVER_TAKEN  # dropped: sent again, it would fail again
        except Exception as exc:  # refused, reset, timed out: the API server is away
            self._warn(exc)
            return False
        if self._live is not None and resource:
            self._live.offer(resource)
        return True

    def _warn(self, exc: Exception) -> None:
        """Said once: the status is a view, and the checkpoint is the truth."""
        if not self._warned:
            sys.stderr.write(f"chunkwise: cannot update DataMigration {self._client.resource}"
                             f" status ({exc}); progress is still checkpointed\n")
            self._warned = True

    def _signed(self, worker: WorkerStatus) -> WorkerStatus:
        if self._run is not None:
            worker["run"] = self._run
        return worker

    def _own(self, state: CheckpointState) -> CheckpointState:
        """The checkpoint this reporter's figures are of: the shard's own in a sharded run,
        else the run's (every shard's summed, when one process runs them all)."""
        return state if self._sharded else (state.run_totals or state)

    def _shards(self, state: CheckpointState, worker: WorkerStatus | None = None,
                progress: ProgressStatus | None = None) -> dict[str, ShardStatus]:
        entry = ShardStatus(index=self._shard, lastKey=json_key(state.last_key),
                            rowsProcessed=state.tally.rows_processed,
                            rowsEstimated=state.rows_estimated, done=state.done)
        if worker is not None and self._sharded:
            entry["worker"] = worker
        if progress is not None and self._sharded:
            entry["progress"] = progress
        return {str(self._shard): entry}

    def _with_progress(self, state: CheckpointState, progress: ProgressStatus) -> dict[str, Any]:
        """The patch of the figures: the shard's entry, and with one shard ``progress``."""
        if self._sharded:
            return {"shards": self._shards(state, progress=progress)}
        return {"progress": progress, "shards": self._shards(state)}

    def _with_worker(self, status: dict[str, Any], state: CheckpointState | None,
                     worker: WorkerStatus, progress: ProgressStatus | None = None
                     ) -> dict[str, Any]:
        if state is not None:
            status["shards"] = self._shards(state, worker, progress)
        elif self._sharded:
            status["shards"] = {str(self._shard): {"index": self._shard, "worker": worker}}
        if not self._sharded:
            status["worker"] = worker
            if progress is not None:
                status["progress"] = progress
        return status

    def started(self, state: CheckpointState) -> None:
        self._started = self._clock()
        self._rows_at_start = self._own(state).tally.rows_processed
        self._window.add(self._started, self._rows_at_start)
        worker = self._signed({"state": WorkerState.RUNNING,
                               "pod": os.environ.get("HOSTNAME", ""), "reason": "",
                               "message": ""})
        status = self._with_worker({}, state, worker, self._progress(state, utc_now_text()))
        # a killed pod may have left its throttle behind: it is over
        (status["shards"][str(self._shard)] if self._sharded else status)["throttle"] = None
        self._patch(status)

    def batch_committed(self, report: BatchReport) -> None:
        self._window.add(self._clock(), self._own(report.state).tally.rows_processed)
        if self._clock() - self._last_patch >= self._interval:
            self._patch(self._with_progress(
                report.state, self._progress(report.state, utc_now_text())))

    def retrying(self, kind: ErrorKind, attempt: int, delay: float) -> None:
        pass

    def throttled(self, reason: str, seconds: float) -> None:
        pass

    def throttle_changed(self, throttle: Throttle | None) -> None:
        """A new reason, or the end of one, is written at once (the operator makes it the
        Throttled condition); a fresh reading of the same reason waits its turn."""
        reason = throttle.condition_reason if throttle else None
        same = reason == (self._throttle["reason"] if self._throttle else None)
        if same and self._clock() - self._last_patch < self._interval:
            return
        self._throttle = None if throttle is None else {
            "reason": throttle.condition_reason, "message": throttle.message,
            "since": self._throttle["since"] if same and self._throttle else utc_now_text()}
        self._patch(self._throttle_patch())

    def _throttle_patch(self) -> dict[str, Any]:
        if self._sharded:
            return {"shards": {str(self._shard): {"throttle": self._throttle}}}
        return {"throttle": self._throttle}

    def retuned(self, generation: int, changes: Mapping[str, tuple[Any, Any]]) -> None:
        """Said at once: the operator turns it into the Event that the change took effect."""
        self._patch({"tuning": {
            "generation": generation, "appliedAt": utc_now_text(),
            "pod": os.environ.get("HOSTNAME", ""),
            "changes": {name: {"from": str(old), "to": str(new)}
                        for name, (old, new) in changes.items()}}})

    def notice(self, message: str) -> None:
        pass  # the pod's log has it from the progress bar

    def finished(self, outcome: Outcome) -> None:
        worker = self._signed({
            "state": WorkerState.of(outcome.exit_code), "reason": outcome.reason,
            "message": outcome.message, "exitCode": int(outcome.exit_code)})
        progress = None if outcome.state is None else \
            self._progress(outcome.state, utc_now_text(), live=False)
        status = self._with_worker({}, outcome.state, worker, progress)
        if outcome.plan is not None:
            status["plan"] = dict(outcome.plan)
        if outcome.verification is not None:
            check = outcome.verification
            verification: VerificationStatus = {
                "rowsRemaining": check.rows_remaining, "failedRows": check.failed_remaining,
                "missedRows": check.missed, "upToKey": json_key(check.up_to_key),
                "checkedAt": utc_now_text()}
            if self._sharded:
                status["shards"][str(self._shard)]["verification"] = verification
            else:
                status["verification"] = verification
        self._patch(status)
        if not self.flush(self.FINAL_WAIT):
            sys.stderr.write(f"chunkwise: DataMigration {self._client.resource}: the final "
                             f"status was not taken within {self.FINAL_WAIT:.0f}s; the "
                             "pod's termination message and the checkpoint in the database "
                             "have the outcome\n")
