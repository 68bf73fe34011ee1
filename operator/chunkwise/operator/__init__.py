"""The chunkwise operator: DataMigration resources -> Jobs that run chunkwise_run.

Run it with ``python -m chunkwise.operator`` (see ``--help``).
"""

try:  # the [operator] extra; a Django project that installs plain chunkwise has neither
    import kopf  # noqa: F401
    import kubernetes  # noqa: F401
except ImportError as missing:
    raise ImportError(f"chunkwise.operator needs {missing.name}, which is not installed: "
                      "pip install 'chunkwise[operator]'") from None

from .cluster import Cluster
from .conditions import RunState, run_state_of, status_for
from .jobs import build_job, job_name
from .settings import ControllerSettings

__all__ = ["Cluster", "ControllerSettings", "RunState", "build_job", "job_name",
           "run_state_of", "status_for"]
