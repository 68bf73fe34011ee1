"""What a Job pod adds to a run: its progress mirrored into the DataMigration status.

Layering: worker/ builds on engine/ and django/; ``manage.py chunkwise_run`` (which
Django can only discover under django/management) is the worker's entry point.
"""

from chunkwise.engine import Reporter, Tee

from .reporter import StatusReporter
from .status_client import StatusClient

__all__ = ["StatusClient", "StatusReporter", "worker_reporter"]


def worker_reporter(progress: Reporter) -> Reporter:
    """``progress``, plus the status mirror when the operator started this run."""
    client = StatusClient.from_environment()
    return progress if client is None else Tee([progress, StatusReporter(client)])
