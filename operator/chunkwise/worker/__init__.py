"""What a Job pod adds to a run: its progress mirrored into the DataMigration status.

Layering: worker/ builds on engine/ and django/; ``manage.py chunkwise_run`` (which
Django can only discover under django/management) is the worker's entry point.
"""

import os
from collections.abc import Callable

from chunkwise.contract import Env
from chunkwise.engine import Reporter, Tee

from .live import LiveSpec
from .reporter import StatusReporter
from .status_client import StatusClient
from .termination import TerminationMessage

__all__ = ["LiveSpec", "StatusClient", "StatusReporter", "TerminationMessage", "live_tuning",
           "worker_reporter"]

#: what a tuning source gives: (spec generation, CHUNKWISE_* tunables) when they changed
TuningSource = Callable[[], "tuple[int, dict[str, str]] | None"]


def worker_reporter(progress: Reporter) -> Reporter:
    """``progress``, plus the status mirror when the operator started this run (in an
    Indexed Job, as the shard Kubernetes numbered this pod), and the final report in the
    container's termination message (before the status patch, which may wait on the API
    server)."""
    reporters = [progress]
    terminated = TerminationMessage.from_environment()
    if terminated is not None:
        reporters.append(terminated)
    client = StatusClient.from_environment()
    if client is not None:
        shard = os.environ.get(Env.SHARD) or os.environ.get(Env.JOB_COMPLETION_INDEX) or "0"
        shards = os.environ.get(Env.SHARDS) or "1"
        _live.spec = LiveSpec(os.environ)
        run = os.environ.get(Env.RUN)
        reporters.append(StatusReporter(client, shard=int(shard), shards=int(shards),
                                        live=_live.spec, run=int(run) if run else None))
    return progress if len(reporters) == 1 else Tee(reporters)


class _Live:
    spec: LiveSpec | None = None


_live = _Live()


def live_tuning() -> TuningSource | None:
    """New tunables from the spec while the run goes on: the ``chunkwise.tuning`` entry
    point. None outside a Job (no status mirror, so no spec to follow)."""
    return None if _live.spec is None else _live.spec.take
