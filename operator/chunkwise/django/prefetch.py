"""The next batch of a per-row transform, read and transformed while this one commits.

A transform's batch is serial: the database reads the rows out while the runner waits,
the runner transforms them while the database waits, the database writes them back.
Neither side is busy for more than two thirds of it. So, where the database can tell a
row's version (PostgreSQL's ``xmin``), the next batch's rows are read on a connection of
their own (read-only), in a thread of their own, and transformed there, while this
batch's write-back and checkpoint advance commit on the run's connection.

Nothing here writes, and nothing here touches the checkpoint: the batch that uses what
was read still runs as every batch does, on the run's connection, in one transaction
with its checkpoint advance, and only when the checkpoint stands exactly where the read
began (the first of ``Ahead.bounds``). Its write-back then changes only the rows whose
version is still the one read; if any row changed meanwhile (or went), the batch is
refused as a serialization failure and retried reading its rows itself, as a batch
whose rows changed under it always is. A killed runner leaves nothing of a read-ahead
behind. A read-ahead is used fresh or not at all (``FRESH_FOR``): rows that came to
match ``todo`` after it was read would otherwise be passed over for longer than one
batch's time, where a batch that reads its own rows passes over only those that match
after its read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.db import connections

__all__ = ["FRESH_FOR", "ROW_VERSION", "Ahead", "Cancelled", "ReadAhead",
           "RowsChangedSinceRead", "versioned"]

#: the name a row's version goes by, read ahead and in the write-back that checks it
ROW_VERSION = "chunkwise_row_version"
#: seconds a read-ahead is used for: older (the run paced or throttled meanwhile), it is
#: dropped and the batch reads its own rows
FRESH_FOR = 1.0
#: read-aheads that failed in a row (a second connection refused, a statement timeout)
#: after which the run reads every batch itself
_GIVE_UP_AFTER = 3


class RowsChangedSinceRead(Exception):
    """A read-ahead batch's rows changed between their read and their write-back: retried
    as PostgreSQL's own serialization failures are."""

    sqlstate = "40001"


class Cancelled(Exception):
    """The read-ahead was dropped while its rows were being transformed."""


@dataclass
class Ahead:
    """One batch's rows, read and transformed ahead of its turn."""

    #: what it was read for: the key it starts after and the bound it ends at or before
    bounds: Hashable
    rows: list[Any]
    #: each row's version as read (text), in the order of ``rows``
    versions: list[str]
    #: what the transform raised, to raise again when the batch is applied
    error: BaseException | None = None
    read_at: float = field(default_factory=time.monotonic)


class ReadAhead:
    """At most one batch read ahead, on one worker thread with its own connection."""

    def __init__(self, alias: str) -> None:
        self._alias = alias
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chunkwise-ahead")
        self._pending: tuple[Hashable, Future[Ahead], threading.Event] | None = None
        self._failures = 0

    @property
    def pending(self) -> bool:
        """Whether a batch is being (or has been) read ahead."""
        return self._pending is not None

    def start(self, bounds: Hashable, read: Callable[[threading.Event], Ahead]) -> None:
        """Read (and transform) the batch ``bounds`` names, in the background; ``read``
        stops with Cancelled once its event is set."""
        self.discard()
        if self._failures >= _GIVE_UP_AFTER:
            return
        cancelled = threading.Event()
        self._pending = (bounds, self._worker.submit(self._guarded, read, cancelled),
                         cancelled)

    def take(self, bounds: Hashable) -> Ahead | None:
        """The batch read ahead for ``bounds``, once it is ready; None if what was read
        ahead was for other bounds (a retried batch), is stale, failed, or nothing was.
        A failure of the read-ahead's own connection is not the batch's: the batch reads
        its rows itself, and after a few in a row the run stops reading ahead."""
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        if pending[0] != bounds:
            pending[2].set()
            return None
        try:
            ahead = pending[1].result()
        except Exception:
            self._failures += 1
            return None
        self._failures = 0
        return ahead if time.monotonic() - ahead.read_at <= FRESH_FOR else None

    def discard(self) -> None:
        """Drop what is read ahead; a transform under way stops at its next row."""
        if self._pending is not None:
            self._pending[2].set()
            self._pending = None

    def close(self) -> None:
        """Stop the read under way (at its next row), then close the worker's connection."""
        self.discard()
        self._worker.submit(self._close_connection).result()  # the worker's own
        self._worker.shutdown(wait=True)

    def _close_connection(self) -> None:
        connections[self._alias].close()

    def _guarded(self, read: Callable[[threading.Event], Ahead],
                 cancelled: threading.Event) -> Ahead:
        try:
            return read(cancelled)
        except Cancelled:
            raise
        except BaseException:
            # a broken connection is not reused by the next read: it connects again
            self._close_connection()
            raise


def versioned(rows: Sequence[Sequence[Any]]) -> tuple[list[Sequence[Any]], list[str]]:
    """Split rows read with their version as the last value."""
    return [row[:-1] for row in rows], [row[-1] for row in rows]
