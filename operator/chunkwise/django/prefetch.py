"""The next batches of a per-row transform, read and transformed while this one commits.

A transform's batch is serial: the database reads the rows out while the runner waits,
the runner transforms them while the database waits, the database writes them back.
Neither side is busy for more than two thirds of it. So, where the database can tell a
row's version (PostgreSQL's ``xmin``), a thread of its own, on a connection of its own
(read-only), reads the coming batches' rows and transforms them, one after another,
while the run's connection writes back and commits the current one. It keeps at most
one batch ready beyond the one it works on, so the read of batch N+2 and the transform
of batch N+1 go on while batch N is written: the database and the runner's Python both
stay busy.

Nothing here writes, and nothing here touches the checkpoint: the batch that uses what
was read still runs as every batch does, on the run's connection, in one transaction
with its checkpoint advance, and only when the checkpoint stands exactly where the read
began (the first of ``Ahead.bounds``). Its write-back then changes only the rows whose
version is still the one read; if any row changed meanwhile (or went), the batch is
refused as a serialization failure and retried reading its rows itself, as a batch
whose rows changed under it always is. A killed runner leaves nothing of a read-ahead
behind. A read-ahead is used fresh or not at all (``FRESH_FOR``): rows that came to
match ``todo`` after it was read would otherwise be passed over for longer than a
batch's time, where a batch that reads its own rows passes over only those that match
after its read. (Since the batch counts its range's rows to do again, and refuses
itself if they are not the rows read, freshness is no longer what keeps it exact: it
keeps the run from writing back work that is likely to be refused.) A batch read ahead
is about two batches' time old when its turn comes (one is ready, the next being read),
so a run whose batches are further apart than half of FRESH_FOR (paced, throttled)
reads no batch ahead until they follow each other closely again: every read-ahead
would be dropped, each costing a thread, a connection and a read.

The read-ahead's connection goes by a name that says whose it is (helper_name(): the
host and process it serves), so that the process's health readings do not count it as
another session's load; the name is taken back before the connection is let go (a pool
would hand it to someone else).
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import connections

__all__ = ["FRESH_FOR", "ROW_VERSION", "Ahead", "Cancelled", "ReadAhead",
           "RowsChangedSinceRead", "helper_name", "versioned"]

#: the name a row's version goes by, read ahead and in the write-back that checks it
ROW_VERSION = "chunkwise_row_version"
#: seconds a read-ahead is used for: older (the run paced or throttled meanwhile), it is
#: dropped and the batch reads its own rows
FRESH_FOR = 4.0
#: how a session's name is cut (PostgreSQL keeps 63 bytes of application_name)
_NAME_LENGTH = 63


def helper_name() -> str:
    """The application name of this process's read-ahead connections: the process's own
    health readings leave them out."""
    return f"chunkwise read-ahead of {socket.gethostname()}:{os.getpid()}"[:_NAME_LENGTH]

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
    #: the key of its last row: where the batch after it starts
    last: Any = None
    #: what the transform raised, to raise again when the batch is applied
    error: BaseException | None = None
    #: whether it had as many rows as were asked for (so more may follow)
    full: bool = False
    #: when its read began
    read_at: float = field(default_factory=time.monotonic)


#: read(after, limit, cancelled): the batch after ``after``, transformed
Reader = Callable[[Any, int, threading.Event], Ahead]


class ReadAhead:
    """A worker thread with its own connection that reads and transforms the batches
    after a given key, one after another, keeping one ready beyond the one it works on."""

    def __init__(self, alias: str, clock: Callable[[], float] = time.monotonic,
                 leaving: Callable[[], None] | None = None) -> None:
        self._alias = alias
        self._clock = clock  # the clock of Ahead.read_at (the reader's, time.monotonic)
        #: run on the worker thread as it ends, before its connection is let go
        self._leaving = leaving
        self._ready: queue.Queue[Ahead | BaseException] | None = None
        self._cancelled = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = 0
        #: the batch size the next read asks for: the run's latest
        self.limit = 0
        #: whether the run's batches follow each other closely enough for what is read
        #: ahead to be used fresh (see take()), and when the last one was taken
        self._follows = True
        self._taken_at: float | None = None

    @property
    def pending(self) -> bool:
        """Whether batches are being read ahead."""
        return self._thread is not None

    def start(self, after: Any, read: Reader) -> None:
        """Read the batches after ``after`` (and transform them), in the background,
        unless the last batches came too far apart to use what is read (see take())."""
        self.discard()
        if self._failures >= _GIVE_UP_AFTER or not self._follows:
            return
        ready: queue.Queue[Ahead | BaseException] = queue.Queue(maxsize=1)
        cancelled = threading.Event()
        thread = threading.Thread(target=self._produce, args=(after, read, ready, cancelled),
                                  name="chunkwise-ahead", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: the batches read their own rows
            self._failures += 1
            return
        self._thread, self._ready, self._cancelled = thread, ready, cancelled

    def take(self, bounds: Hashable) -> Ahead | None:
        """The next batch read ahead, once it is ready, if it is the one for ``bounds``
        and fresh; else None, and reading ahead stops (a retried batch starts elsewhere).
        A failure of the read-ahead's own connection is not the batch's: the batch reads
        its rows itself, and after a few in a row the run stops reading ahead.

        Called at every batch read ahead or not: the time since the last one says
        whether the batches follow each other closely enough for a read-ahead, about two
        batches' time old at its turn, to be used fresh."""
        now = self._clock()
        if self._taken_at is not None:
            self._follows = (now - self._taken_at) * 2 < FRESH_FOR
        self._taken_at = now
        if self._ready is None or self._thread is None:
            return None
        while True:
            try:
                got = self._ready.get(timeout=0.1)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._ready.empty():
                    self.discard()  # it ended with nothing more to give
                    return None
        if isinstance(got, BaseException):
            self._failures += 1
            self.discard()
            return None
        self._failures = 0
        if got.bounds != bounds or now - got.read_at > FRESH_FOR \
                or not got.rows:  # an empty range is read by the batch: never on old news
            self.discard()
            return None
        if not got.full or not self._follows:  # the last batch, or batches too far apart
            self.discard()  # for more to be used fresh: nothing more is read
        return got

    def discard(self) -> None:
        """Stop reading ahead; a transform under way stops at its next row, and the
        worker waits for no one to take what it read."""
        if self._thread is None:
            return
        self._cancelled.set()
        assert self._ready is not None
        while self._thread.is_alive():
            try:  # make room for a put() that may be waiting
                self._ready.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread, self._ready = None, None

    def close(self) -> None:
        """Stop reading ahead (its connection is closed by its thread on the way out)."""
        self.discard()

    def _produce(self, after: Any, read: Reader, ready: queue.Queue[Ahead | BaseException],
                 cancelled: threading.Event) -> None:
        try:
            while not cancelled.is_set():
                try:
                    ahead = read(after, self.limit, cancelled)
                except Cancelled:
                    return
                except BaseException as exc:  # the connection's, not the batch's
                    self._put(ready, cancelled, exc)
                    return
                if not self._put(ready, cancelled, ahead) or not ahead.full:
                    return
                after = ahead.last
        finally:
            if self._leaving is not None and connections[self._alias].connection is not None:
                try:
                    self._leaving()
                except Exception:  # a broken connection: closed next, nothing to take back
                    pass
            connections[self._alias].close()  # this thread's own

    @staticmethod
    def _put(ready: queue.Queue[Ahead | BaseException], cancelled: threading.Event,
             item: Ahead | BaseException) -> bool:
        """Hand ``item`` over once there is room; False if reading ahead stopped first."""
        while not cancelled.is_set():
            try:
                ready.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False


def versioned(rows: Sequence[Sequence[Any]]) -> tuple[list[Sequence[Any]], list[str]]:
    """Split rows read with their version as the last value."""
    return [row[:-1] for row in rows], [row[-1] for row in rows]
