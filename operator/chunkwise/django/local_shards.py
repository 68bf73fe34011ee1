"""``chunkwise_run --shards N`` without ``--shard``: every shard in this process, one
thread each, as an Indexed Job runs them in N pods.

Each thread has its own database connection (Django's connections are per thread) and
its own checkpoint row and runner lock; the work itself waits on the database, which
releases the GIL. One progress bar shows the sum of the shards. A shard that halts
stops the others after their current batch, as the Job's podFailurePolicy does.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections.abc import Mapping
from typing import Any

from django.db import connections
from django.db.migrations.state import StateApps

from chunkwise.contract import ExitCode
from chunkwise.engine import (
    BatchReport,
    Caller,
    CheckpointState,
    ErrorKind,
    Outcome,
    RunSettings,
    Throttle,
)

from .backends import backend_for
from .execute import BatchedWork, execute, stop_on_signals
from .operation_ref import OperationRef
from .progress import ProgressBar

__all__ = ["MAX_SHARDS", "run_shards_here"]

#: spec.parallelism's bound too: more shards than this only contend for the same table
MAX_SHARDS = 64
#: which outcome the whole run reports when shards differ: the one that needs a person
_PRECEDENCE = (ExitCode.HALTED, ExitCode.USAGE, ExitCode.BUSY, ExitCode.ERROR,
               ExitCode.INTERRUPTED, ExitCode.DONE)


class _SharedBar:
    """One progress bar for every shard: calls are serialized, and it draws the sum
    (``state.run_totals``); each shard's own end is said on its own line."""

    def __init__(self, bar: ProgressBar, stop: threading.Event) -> None:
        self._bar, self._stop = bar, stop
        self._lock = threading.Lock()
        self._started = False

    def started(self, state: CheckpointState) -> None:
        with self._lock:
            if not self._started:
                self._bar.started(state.run_totals or state)
                self._started = True

    def batch_committed(self, report: BatchReport) -> None:
        with self._lock:
            self._bar.batch_committed(report)

    def retrying(self, kind: ErrorKind, attempt: int, delay: float) -> None:
        with self._lock:
            self._bar.retrying(kind, attempt, delay)

    def throttled(self, reason: str, seconds: float) -> None: ...

    def throttle_changed(self, throttle: Throttle | None) -> None:
        with self._lock:
            self._bar.throttle_changed(throttle)

    def retuned(self, generation: int, changes: Mapping[str, tuple[Any, Any]]) -> None:
        with self._lock:
            self._bar.retuned(generation, changes)

    def notice(self, message: str) -> None:
        with self._lock:
            self._bar.notice(message)

    def finished(self, outcome: Outcome) -> None:
        if outcome.exit_code == ExitCode.HALTED:
            self._stop.set()  # the other shards stop after their current batch
        with self._lock:
            self._bar.finished(outcome)


def run_shards_here(operation: BatchedWork, ref: OperationRef, apps: StateApps, alias: str,
                    settings: RunSettings, flags: Mapping[str, Any] | None = None,
                    caller: Caller = Caller.COMMAND) -> int:
    stop = threading.Event()
    title = f"{ref.operation_name} {ref.direction} ({ref.shard_count} shards)"
    backend = backend_for(alias)
    shared = _SharedBar(ProgressBar(title, sys.stderr, lock_waits=backend.row_locks), stop)
    outcomes: dict[int, int] = {}

    one_at_a_time = not backend.parallel_writers

    def run(shard: int) -> None:
        mine = dataclasses.replace(ref, shard=shard)
        try:
            with connections[alias].schema_editor(atomic=False) as editor:
                outcome = execute(operation, mine, apps, editor, settings=settings, env={},
                                  stream=sys.stderr, reporter=shared, stop=stop,
                                  metrics_port=0,  # one port cannot serve N runs
                                  flags=flags, shards_one_at_a_time=one_at_a_time,
                                  caller=caller)
            outcomes[shard] = int(outcome.exit_code)
        except BaseException as exc:  # a thread's error must still reach the exit status
            sys.stderr.write(f"{mine}: {type(exc).__name__}: {exc}\n")
            outcomes[shard] = int(ExitCode.USAGE if _is_usage(exc) else ExitCode.ERROR)
            stop.set()
        finally:
            if threading.current_thread() is not threading.main_thread():
                connections[alias].close()

    if one_at_a_time:
        # SQLite has one writer: threads would only take turns (or fail to upgrade
        # their read locks), so the shards run one after another, same split
        sys.stderr.write(f"{title}: note: {backend.name} has one writer; the "
                         "shards run one after another\n")
        with stop_on_signals(stop, sys.stderr):
            for shard in range(ref.shard_count):
                if not stop.is_set():
                    run(shard)
        return _overall(outcomes)
    threads = [threading.Thread(target=run, args=(shard,), name=f"chunkwise-shard-{shard}")
               for shard in range(ref.shard_count)]
    with stop_on_signals(stop, sys.stderr):
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():  # a timed join lets the main thread take signals
                    thread.join(0.2)
        except KeyboardInterrupt:  # a second Ctrl-C: one line, not a traceback
            sys.stderr.write(f"\n{title}: aborting: each shard stops after its current "
                             "batch (a thread cannot be cut off in the middle of one)\n")
            for thread in threads:
                thread.join()
    return _overall(outcomes)


def _overall(outcomes: dict[int, int]) -> int:
    """The exit status of the whole run: the shard outcome that most needs a person."""
    return int(min(outcomes.values(), key=lambda code: _PRECEDENCE.index(ExitCode(code))))


def _is_usage(exc: BaseException) -> bool:
    from django.core.exceptions import ImproperlyConfigured

    from chunkwise.engine import SettingsError

    return isinstance(exc, (ImproperlyConfigured, SettingsError))
