"""Names for a run: which operation, which direction and shard, and who runs it.

Kept free of model imports so the operation module can import it while Django's
app registry is still loading."""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass

from chunkwise.contract import Direction, Env, OperationName, ResourceRef


@dataclass(frozen=True)
class OperationRef:
    """Which operation a checkpoint belongs to."""

    app_label: str
    migration: str
    operation: int
    direction: Direction = Direction.FORWARD
    shard: int = 0
    shard_count: int = 1

    @property
    def operation_name(self) -> OperationName:
        """``app_label.migration[operation]``, without the direction and shard."""
        return OperationName(self.app_label, self.migration, self.operation)

    def __str__(self) -> str:
        text = f"{self.operation_name} {self.direction}"
        return text if self.shard_count == 1 else f"{text} shard {self.shard}/{self.shard_count}"


_DATAMIGRATION = "DataMigration "


def default_owner() -> str:
    """Who holds a run: the DataMigration when run by the operator, else host and pid."""
    resource = ResourceRef.parse(os.environ.get(Env.RESOURCE))  # set by the operator's Job
    if resource is not None:
        return f"{_DATAMIGRATION}{resource}"
    return f"{socket.gethostname()} pid {os.getpid()}"


def owner_process_alive(owner: str) -> bool | None:
    """Whether the process an owner from :func:`default_owner` names is alive, when it runs
    on this host, where its pid can be asked; None where that cannot be told (another host,
    a DataMigration)."""
    found = re.fullmatch(r"(.*) pid (\d+)", owner)
    if found is None or found[1] != socket.gethostname():
        return None
    try:
        os.kill(int(found[2]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive all the same
        return True
    return True


def owner_resource(owner: str) -> ResourceRef | None:
    """The DataMigration an owner string from :func:`default_owner` names, if any."""
    if not owner.startswith(_DATAMIGRATION):
        return None
    return ResourceRef.parse(owner[len(_DATAMIGRATION):])
