"""The Django side of chunkwise: add ``"chunkwise.django"`` to INSTALLED_APPS and use
:class:`BatchedRunPython` in a migration with ``atomic = False``; a later migration can
finish a deferred one with :class:`EnsureBatchedComplete`."""

from .ensure import EnsureBatchedComplete
from .operations import BatchedMigrationStopped, BatchedRunPython

__all__ = ["BatchedMigrationStopped", "BatchedRunPython", "EnsureBatchedComplete"]
