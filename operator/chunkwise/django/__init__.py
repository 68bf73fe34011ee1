"""The Django side of chunkwise: add ``"chunkwise.django"`` to INSTALLED_APPS and use
:class:`BatchedRunPython` in a migration with ``atomic = False``."""

from .operations import BatchedMigrationStopped, BatchedRunPython

__all__ = ["BatchedMigrationStopped", "BatchedRunPython"]
