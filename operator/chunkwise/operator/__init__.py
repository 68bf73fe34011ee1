"""The chunkwise operator: DataMigration resources -> Jobs that run chunkwise_run.

Run it with ``python -m chunkwise.operator`` (see ``--help``).
"""

from .cluster import Cluster
from .conditions import RunState, run_state_of, status_for
from .jobs import build_job, job_name
from .settings import ControllerSettings

__all__ = ["Cluster", "ControllerSettings", "RunState", "build_job", "job_name",
           "run_state_of", "status_for"]
