"""The chunkwise operator: DataMigration resources -> Jobs that run chunkwise_run.

Run it with ``python -m chunkwise.operator`` (see ``--help``).
"""

from .conditions import Outcome, job_outcome, status_for
from .jobs import build_job, job_name
from .kube import KubeApi
from .settings import OperatorSettings

__all__ = ["KubeApi", "OperatorSettings", "Outcome", "build_job", "job_name", "job_outcome",
           "status_for"]
