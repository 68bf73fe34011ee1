"""The Django side of chunkwise: add ``"chunkwise.django"`` to INSTALLED_APPS and use
:class:`BatchedRunPython` in a migration with ``atomic = False``; a later migration can
finish a deferred one with :class:`EnsureBatchedComplete`. Set-based code gets each batch
as a :class:`Batch` (a queryset with ``write`` and ``insert``)."""

from .batch import Batch
from .ensure import EnsureBatchedComplete
from .operations import BatchedMigrationMisconfigured, BatchedMigrationStopped, BatchedRunPython

__all__ = ["Batch", "BatchedMigrationMisconfigured", "BatchedMigrationStopped",
           "BatchedRunPython", "EnsureBatchedComplete"]

# makemigrations and squashmigrations write an operation as ``<its class's __module__>.
# <name>(...)`` into the user's files: give them the public path, so those files never
# name a module of ours that may move
for _operation in (BatchedRunPython, EnsureBatchedComplete):
    _operation.__module__ = __name__
del _operation
