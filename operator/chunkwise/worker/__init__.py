"""What a Job pod adds to a run: its progress mirrored into the DataMigration status.

Layering: worker/ builds on engine/ and django/; ``manage.py chunkwise_run`` (which
Django can only discover under django/management) is the worker's entry point.
"""

import os

from chunkwise.contract import Env
from chunkwise.engine import Reporter, Tee

from .reporter import StatusReporter
from .status_client import StatusClient

__all__ = ["StatusClient", "StatusReporter", "worker_reporter"]


def worker_reporter(progress: Reporter) -> Reporter:
    """``progress``, plus the status mirror when the operator started this run (in an
    Indexed Job, as the shard Kubernetes numbered this pod)."""
    client = StatusClient.from_environment()
    if client is None:
        return progress
    shard = os.environ.get(Env.SHARD) or os.environ.get(Env.JOB_COMPLETION_INDEX) or "0"
    shards = os.environ.get(Env.SHARDS) or "1"
    return Tee([progress, StatusReporter(client, shard=int(shard), shards=int(shards))])
