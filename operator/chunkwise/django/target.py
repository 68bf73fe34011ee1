"""The engine's batch target, implemented with Django: lock one key range of the rows
still to do, run the user's set-based code or per-row transform on it, write back.

It shares the checkpoint store's connection, so the work and the checkpoint update
are one transaction.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from itertools import starmap
from typing import Any

from django.core.exceptions import FieldDoesNotExist, FieldError, ImproperlyConfigured
from django.db import connections, transaction
from django.db.models import F, Field, Model, Q, QuerySet, TextField
from django.db.models.expressions import RawSQL

from chunkwise.engine import ErrorKind, Timeouts, classify

from .backends import backend_for
from .batch import Batch, BatchScope, as_batch, to_many_relation
from .keys import Key
from .prefetch import (
    ROW_VERSION,
    Ahead,
    Cancelled,
    ReadAhead,
    RowsChangedSinceRead,
    helper_name,
    versioned,
)
from .rows import row_class
from .writeback import KeyRange, binary_safe, range_sql, write_back

__all__ = ["DjangoBatchTarget", "RowTransform", "SetBasedWork"]


SetBasedWork = Callable[[QuerySet[Any]], None]
#: transform(row), or transform(row, context) with a prepare
RowTransform = Callable[..., Any]
#: prepare(batch): what the transform of each of the batch's rows gets as its context
BatchPrepare = Callable[[QuerySet[Any]], Any]

#: batches first run without locking their rows ahead of the work: the writes take the
#: locks as they go, under this short lock timeout (seconds; never above timeouts.lock;
#: InnoDB's whole-second one rounds it up to 1 s). On PostgreSQL locking every row twice
#: cost a third of a batch (each tuple lock is written and WAL-logged) and made writers
#: queue behind the whole batch; on MariaDB the lock step was 14 of the 17 ms a
#: set-based batch of 5k rows took more than a hand-written loop's. A per-row transform
#: does so on PostgreSQL only: it reads its rows unlocked in a REPEATABLE READ
#: transaction, so PostgreSQL itself refuses the write-back of a row that another
#: transaction changed since the read (40001): no concurrent change is overwritten with
#: a value computed from old data. InnoDB would overwrite it.
OPTIMISTIC_LOCK_TIMEOUT = 0.05
#: after a batch's work met a lock held longer than that, or a transform's write-back met
#: a row changed since its read, this many batch attempts lock their rows first again (in
#: READ COMMITTED), in the timed lock step under the full timeouts.lock, so the wait is
#: measured and the batch does not redo its work behind each holder or writer
CONTENDED_ATTEMPTS = 20
#: with a todo that joins, the widest window of the key's index a batch searches for its
#: rows to do, in multiples of the batch size (a sparser todo takes more windows)
_MAX_KEYS_PER_ROW = 64
#: how many times a set-based batch's window may be narrowed when it holds more than a
#: quarter over the batch's rows (then the batch ends at its limit-th row to do instead)
_NARROWINGS = 3
#: on PostgreSQL, the one statement of a batch that finds where it ends (its last key, or
#: with a todo that joins the end of its window of the key's index) runs with sorting
#: priced out, so that the planner walks the key's index in order. Statistics older than
#: the table's contents (a table filled or changed since its last ANALYZE) made it sort
#: every remaining row for each batch instead, a bitmap scan of the rest of the table:
#: 6-9 ms a batch at 100k rows and growing with the table. Set with the batch's timeouts
#: (no round trip of its own) and put back by that statement itself, so no other
#: statement runs with it: not the rows' read with their annotations, and never the
#: migration's code. A todo with a subquery (Exists, Subquery, __in=queryset) keeps the
#: planner's own settings: its subquery would be planned under them too.
_KEY_ORDER_SETTINGS = {"enable_sort": "off"}
#: the name the key goes by in the SQL around a subquery of the batch's keys
_KEY = "chunkwise_key"
#: rows a read-ahead transforms between two offers of the GIL to the run's thread
_YIELD_EVERY = 128


class DjangoBatchTarget:
    """Locks and works on one key range of the model's rows still to do."""

    def __init__(
        self,
        alias: str,
        todo: QuerySet[Any],
        key_field: Field[Any, Any],
        forward: SetBasedWork | None = None,
        transform: RowTransform | None = None,
        fields: Sequence[str] = (),
        lock_first: bool = False,
        within: Callable[[Q], QuerySet[Any]] | None = None,
        prepare: BatchPrepare | None = None,
        annotate: Mapping[str, Any] | None = None,
        only: Sequence[str] | None = None,
    ) -> None:
        if (forward is None) == (transform is None):
            raise ValueError("give exactly one of forward (set-based) or transform (per row)")
        self._alias = alias
        self._todo = todo
        #: a todo that joins (``key IN (SELECT key ... JOIN ... WHERE todo)``): the rows of a
        #: key range, with the range bounding the semi-join inside too, so that no plan can
        #: scan the whole related table for one batch (a planner misled by statistics older
        #: than the run's own changes did, at 1 s per batch)
        self._within = within
        self._keys_per_row = 1.0  # keys of the table per row to do, seen in the last window
        self._key = key_field
        self._forward = forward
        self._transform = transform
        self._fields = [todo.model._meta.get_field(name) for name in fields]
        # a transform's rows: the fields it reads (only=) and the annotations (annotate=)
        self._prepare = prepare
        self._annotate = dict(annotate or {})
        read = _fields_read(todo.model, only, self._fields, key_field)
        self._attnames = [f.attname for f in read]
        self._row_class = row_class(todo.model, self._attnames, list(self._annotate))
        annotations = _annotations(todo.model._base_manager.db_manager(alias), self._annotate)
        self._rows: list[Any] = []
        self._backend = backend_for(alias)
        # no lock step while nothing contends, where the database keeps that safe (see
        # above); a plan measures lock waits in every sample batch, so it locks first
        self._optimistic = not lock_first and (
            self._backend.optimistic_transforms if transform is not None
            else self._backend.optimistic_set_based)
        self._contended_attempts = 0
        self._todo_keys: tuple[str, tuple[Any, ...]] | None = None
        #: whether the planner's key order (_KEY_ORDER_SETTINGS) holds now, and the
        #: session's own values to put back
        self._key_order_pinned = False
        self._session_settings: dict[str, str] | None = None
        self._pins_key_order = self._backend.pins_key_order and (
            within is not None or not _has_subquery(todo, alias))  # a window: no todo in it
        if self._pins_key_order:
            self._session_key_order()  # now, not in the first batch's transaction
        self._psycopg3 = self._backend.psycopg3
        #: the next batch read and transformed ahead, on a connection of its own, while
        #: this one writes (prefetch.py): a transform that runs optimistically on a plain
        #: todo, with no prepare (whose queries belong in the batch's transaction), and
        #: nothing read from other rows (annotate=, a todo's subquery), which the rows'
        #: versions do not cover
        self._ahead = ReadAhead(alias, leaving=lambda: self._backend.name_session("")) if (
            self._optimistic and transform is not None and prepare is None
            and within is None and not annotate and not _has_subquery(todo, alias)
            and self._backend.row_versions) else None
        #: the current batch's rows' versions and its transform's error, when read ahead
        self._versions: list[str] | None = None
        self._ahead_error: BaseException | None = None
        self._timeouts: Timeouts | None = None
        #: where the read-ahead starts once this batch's rows are transformed, and the
        #: range of the batch read ahead that is being applied
        self._ahead_from: tuple[Key, Key] | None = None
        self._ahead_span: tuple[Key | None, Key | None] = (None, None)
        self._binary_fetch = self._psycopg3 and all(map(binary_safe, read)) and all(
            binary_safe(output) for _, output in annotations)
        #: what Django does to an annotation's values once read (Decimal() of a numeric
        #: Subquery's), which the binary fetch, reading past Django, does itself
        connection = connections[alias]
        self._converters = [
            (len(read) + i, expression, converter)
            for i, (expression, _) in enumerate(annotations)
            for converter in (connection.ops.get_db_converters(expression)
                              + expression.get_db_converters(connection))]

    def transaction(self) -> AbstractContextManager[None]:
        if self._transform is None or self._reads_first:
            return transaction.atomic(using=self._alias)
        return self._repeatable_read()

    @contextmanager
    def _repeatable_read(self) -> Iterator[None]:
        """The batch's transaction, in REPEATABLE READ: said before its first query, which
        takes the snapshot that the write-back is checked against."""
        with transaction.atomic(using=self._alias):
            with connections[self._alias].cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            yield

    @property
    def _reads_first(self) -> bool:
        """Whether the next batch reads its rows in a lock step of their own before the
        work (locking them where the database has row locks), not in the work itself."""
        return not self._optimistic or self._contended_attempts > 0

    @property
    def locks_first(self) -> bool:
        # the engine times the lock step as lock wait: only a step that locks rows is one
        return self._backend.row_locks and self._reads_first

    def batch_settings(self, timeouts: Timeouts) -> dict[str, str]:
        """The batch's lock_timeout and statement_timeout, and the planner's key order
        (_KEY_ORDER_SETTINGS), for the checkpoint store to set (SET LOCAL) in the statement
        that locks the checkpoint row."""
        if not self._backend.batch_timeouts:
            return {}  # SQLite has no lock_timeout: it is said once at start, not faked
        self._timeouts = timeouts
        lock = timeouts.lock if self.locks_first else \
            min(timeouts.lock, OPTIMISTIC_LOCK_TIMEOUT)
        # a batch read ahead finds no rows on this connection: nothing to pin for
        self._key_order_pinned = self._pins_key_order and not (
            self._ahead is not None and self._ahead.pending and not self.locks_first)
        return {**self._backend.batch_settings(lock, timeouts.statement),
                **(_KEY_ORDER_SETTINGS if self._key_order_pinned else {})}

    def set_batch_settings(self, timeouts: Timeouts) -> None:
        """Set the batch's settings for the current transaction (or savepoint) on their
        own: a plan's samples, each in a savepoint of its own."""
        self._backend.apply_settings(self.batch_settings(timeouts))

    def _session_key_order(self) -> dict[str, str]:
        """The session's own values of _KEY_ORDER_SETTINGS, to put back; read once per
        connection (before any batch sets them)."""
        if self._session_settings is None:
            self._session_settings = self._backend.current_settings(list(_KEY_ORDER_SETTINGS))
        return self._session_settings

    def _key_order_ending(self, sql: str, params: Sequence[Any]
                          ) -> tuple[str, list[Any]]:
        """``sql``, a query of one value, as a statement that also puts the planner's
        settings back for the statements after it (a setting counts when a statement is
        planned: this one keeps the key order, those after do not), in no round trip of
        its own; ``sql`` as it is when they are back already."""
        if not self._key_order_pinned:
            return sql, list(params)
        self._key_order_pinned = False
        return self._restoring(self._session_key_order(), sql, params)

    def _restoring(self, settings: Mapping[str, str], sql: str, params: Sequence[Any]
                   ) -> tuple[str, list[Any]]:
        """``sql``, a query of one value, as a statement that also sets ``settings``
        (for the statements after it), or as it is without any."""
        if not settings:
            return sql, list(params)
        items, values = self._backend.setting_items(settings)
        return f"SELECT ({sql}), {items}", [*params, *values]

    def _set_key_order(self, pinned: bool) -> None:
        """Set (or put back) the planner's key order in a statement of its own: before a
        window searched again, and after a lock step whose statements could not carry it."""
        if not self._pins_key_order or self._key_order_pinned == pinned:
            return
        self._backend.apply_settings(_KEY_ORDER_SETTINGS if pinned else
                                     self._session_key_order())
        self._key_order_pinned = pinned

    def _bounds(self, after: Key | None, upto: Key) -> Q:
        name = self._key.name
        bounds = Q(**{f"{name}__lte": upto})
        if after is not None:
            bounds &= Q(**{f"{name}__gt": after})
        return bounds

    def _range(self, after: Key | None, upto: Key) -> QuerySet[Any]:
        bounds = self._bounds(after, upto)
        return self._todo.filter(bounds) if self._within is None else self._within(bounds)

    def _window(self, after: Key | None, upto: Key, limit: int) -> Key:
        """With a todo that joins: the batch's key range is found on the key's index alone
        (the ``limit``-th key of the table after ``after``, at most ``upto``), and todo is
        applied inside it, so a batch's cost follows its range, never the whole table."""
        self._set_key_order(pinned=True)
        name = self._key.name
        sql, params = (self._todo.model._base_manager.db_manager(self._alias)
                       .filter(self._bounds(after, upto)).order_by(name)
                       .values_list(name, flat=True)[limit - 1:limit]
                       .query.get_compiler(using=self._alias).as_sql())
        sql, params = self._key_order_ending(sql, params)
        with connections[self._alias].cursor() as cursor:
            cursor.execute(sql, params)
            found = cursor.fetchone()
        return upto if found is None or found[0] is None else found[0]

    def lock_rows(self, after: Key | None, upto: Key, limit: int) -> tuple[int, Key | None]:
        """The batch's rows: their count and last key, locked first unless the batch runs
        optimistically (nothing contending: the writes lock them themselves). With a todo
        that joins, see _lock_window."""
        locking_first = self._reads_first
        if self._contended_attempts:
            self._contended_attempts -= 1
        self._versions = None
        self._ahead_from = None
        try:
            if self._ahead is not None:
                self._ahead.limit = limit  # what the batches it reads from now on ask for
                ahead = None if locking_first else self._ahead.take(self._bounds_key(after,
                                                                                     upto))
                if ahead is not None:
                    return self._use_ahead(ahead, after)
                self._ahead.discard()
                self._set_key_order(pinned=True)  # batch_settings left it out for one
            found = self._lock_window(after, upto, limit, locking_first) if self._within \
                else self._lock_rows(after, upto, limit, locking_first)
        except Exception:
            self._key_order_pinned = False  # gone with the transaction (or savepoint)
            raise
        self._set_key_order(pinned=False)
        if self._ahead is not None and not locking_first and found[0] == limit \
                and self._key.to_python(found[1]) != self._key.to_python(upto):
            # more may follow within the bound (not so for an isolation's parts, whose
            # bound is their last key): started once this batch's rows are transformed
            # (_apply), never two transforms at once
            self._ahead_from = (found[1], upto)
        return found

    def _bounds_key(self, after: Key | None, upto: Key) -> tuple[Key | None, Key]:
        """(after, upto) as the key field reads them: the checkpoint's keys come back
        through to_python(), a batch's last key as the driver gave it."""
        return (None if after is None else self._key.to_python(after),
                self._key.to_python(upto))

    def _use_ahead(self, ahead: Ahead, after: Key | None) -> tuple[int, Key | None]:
        """The batch read ahead, as it was read: if the batch size changed since, this
        one still has the size it was read with, (after, its last key]."""
        self._rows, self._versions, self._ahead_error = ahead.rows, ahead.versions, \
            ahead.error
        self._ahead_span = (after, ahead.last)
        return len(ahead.rows), ahead.last

    def _reader(self, upto: Key) -> Callable[[Key | None, int, threading.Event], Ahead]:
        """How the read-ahead's thread reads the batch after a key up to ``upto`` and
        transforms it (prefetch.py): in a transaction of its own under the batch's
        statement timeout, read-only, the limit-th key found with the key order pinned,
        as a batch finds it, and the rows read with their versions."""
        assert self._transform is not None
        transform, alias, row_class = self._transform, self._alias, self._row_class
        settings = {**(self._backend.batch_settings(self._timeouts.lock,
                                                    self._timeouts.statement)
                       if self._timeouts is not None else {}),
                    "transaction_read_only": "on",  # it reads, and must never write
                    **(_KEY_ORDER_SETTINGS if self._pins_key_order else {})}
        restore = self._session_key_order() if self._pins_key_order else {}
        if self._todo_keys is None:
            self._todo_keys = self._keys_sql(self._todo.order_by())
        version = RawSQL(self._backend.row_version(
            connections[alias].ops.quote_name(self._todo.model._meta.db_table)), (),
            output_field=TextField())
        # named after this process, for the people who read the activity views and for
        # its health readings, which leave it out (taken back as the thread ends)
        name, named = helper_name(), False

        def read(after: Key | None, limit: int, cancelled: threading.Event) -> Ahead:
            nonlocal named
            bounds, started = self._bounds_key(after, upto), time.monotonic()
            if not named:  # this thread's own connection, the first time
                self._backend.name_session(name)
                named = True
            with transaction.atomic(using=alias):
                self._backend.apply_settings(settings)
                last = self._fetch_one(*self._restoring(
                    restore, *self._limit_th_key_sql(after, upto, limit)))
                rows = self._range(after, upto if last is None else last)
                fetched, versions = versioned(self._fetch(self._reading(
                    rows.annotate(**{ROW_VERSION: version}).order_by(self._key.name),
                    ROW_VERSION)[:limit]))
            batch = list(starmap(row_class, fetched))
            last = getattr(batch[-1], self._key.attname) if batch else None
            try:
                for number, row in enumerate(batch):
                    if not number % _YIELD_EVERY:
                        if cancelled.is_set():
                            raise Cancelled
                        time.sleep(0)  # the GIL to the run's thread, if its answer came
                    transform(row)
            except Cancelled:
                raise
            except Exception as exc:  # the row's: raised when the batch is applied
                return Ahead(bounds, batch, versions, last, exc, len(batch) == limit, started)
            return Ahead(bounds, batch, versions, last, None, len(batch) == limit, started)

        return read

    def close(self) -> None:
        """End the read-ahead's thread and connection, if there is one."""
        if self._ahead is not None:
            self._ahead.close()

    def _lock_window(self, after: Key | None, upto: Key, limit: int,
                     locking_first: bool) -> tuple[int, Key | None]:
        """With a todo that joins: the narrowest window of the key's index that holds
        ``limit`` rows to do (or all that are left), found from how many keys of the table
        each one took so far. Fewer would let the engine take the batch's last key for the
        end of what it covered, and a split batch skip rows.

        A set-based batch that does not lock first is the window itself, holding from
        ``limit`` rows to a quarter more: they are counted, and the window's end is the
        batch's last key, so the join runs twice per batch (once to count, once in the
        work), not three times (to find the last row to do, to count, to work). Where the
        density of rows to do changes faster than a few narrowings follow, or is sparser
        than windows search for, the batch ends at its ``limit``-th row to do instead, as
        the other batches do."""
        whole = self._forward is not None and not locking_first
        start = after
        span = int(limit * min(max(self._keys_per_row * 1.1, 1.0), _MAX_KEYS_PER_ROW))
        narrowed = 0
        while True:
            window = self._window(start, upto, span)
            if whole:
                rows: int = self._range(start, window).order_by().count()
                last: Key | None = window
                if rows > limit * 1.25:  # denser than the estimate
                    if narrowed < _NARROWINGS and span > 1:  # narrower, same start
                        narrowed += 1
                        span = max(1, int(span * limit / rows * 1.05))
                        continue
                    # the density changes too fast for windows: end at the limit-th row
                    return self._lock_rows(start, window, limit, locking_first)
            else:
                rows, last = self._lock_rows(start, window, limit, locking_first)
            if rows >= limit or window == upto:
                if rows >= limit:  # follow the density found, the latest window weighing most
                    found = max(1.0, span / rows)
                    self._keys_per_row = min(self._keys_per_row * 0.5 + found * 0.5, found)
                return rows, last
            if rows:  # fewer than limit here, and more may lie beyond: wider, same start,
                # as wide as this window's density says limit rows need (and a tenth more)
                if span >= limit * _MAX_KEYS_PER_ROW:  # sparser than windows search for:
                    return self._lock_rows(start, upto, limit, locking_first)  # the rest
                self._keys_per_row = min(span / rows, _MAX_KEYS_PER_ROW)
                span = min(int(span * limit / rows * 1.1) + 1, limit * _MAX_KEYS_PER_ROW)
            else:  # none to do in this window: on from its end, wider
                start = window
                self._keys_per_row = min(self._keys_per_row * 4, _MAX_KEYS_PER_ROW)
                span = int(limit * min(self._keys_per_row * 1.1, _MAX_KEYS_PER_ROW))

    def _lock_rows(self, after: Key | None, upto: Key, limit: int,
                   locking_first: bool) -> tuple[int, Key | None]:
        if self._within is None and (self._key_order_pinned or (
                self._forward is not None and not locking_first)):
            # the batch's end first, in one index step (which puts the key order back)
            found_upper = self._limit_th_key(after, upto, limit)
            if found_upper is not None:
                if self._forward is not None and not locking_first:
                    return limit, found_upper  # the writes take the locks themselves
                upto = found_upper  # the rows to lock or read: (after, their last key]
        locking = self._range(after, upto).order_by(self._key.name)
        if locking_first:
            locking = self._backend.for_update(locking)
        if self._forward is not None:
            # return only (last key, count) from a subquery: shipping every key of every
            # batch to Python was a third of the set-based path's overhead
            inner, params = self._keys_sql(locking[:limit])
            with connections[self._alias].cursor() as cursor:
                cursor.execute(f"SELECT locked.{_KEY}, count(*) OVER () FROM ({inner}) locked "
                               f"ORDER BY locked.{_KEY} DESC LIMIT 1", params)
                found = cursor.fetchone()
            return (0, None) if found is None else (int(found[1]), found[0])
        query = self._reading(locking)[:limit]
        self._rows = list(starmap(self._row_class, self._fetch(query)))
        if not self._rows:
            return 0, None
        return len(self._rows), getattr(self._rows[-1], self._key.attname)

    def _limit_th_key(self, after: Key | None, upto: Key, limit: int) -> Key | None:
        """The ``limit``-th key to do after ``after`` up to ``upto``: the last key of a full
        batch, in one index step as a hand-written keyset loop finds it (a count over the
        batch cost 0.8 ms more per 5k rows); None when fewer rows are left.

        The todo's keys are compiled once and bounded here with parameters: building and
        compiling the range's queryset for every batch cost 0.4 ms of a 14 ms batch."""
        if self._todo_keys is None:
            self._todo_keys = self._keys_sql(self._todo.order_by())
        return self._fetch_one(*self._key_order_ending(
            *self._limit_th_key_sql(after, upto, limit)))

    def _fetch_one(self, sql: str, params: Sequence[Any]) -> Any:
        """The first value of the first row of ``sql``, or None."""
        with connections[self._alias].cursor() as cursor:
            cursor.execute(sql, params)
            found = cursor.fetchone()
        return None if found is None else found[0]

    def _limit_th_key_sql(self, after: Key | None, upto: Key, limit: int
                          ) -> tuple[str, list[Any]]:
        sql, params = self._bounded(after, upto)
        return f"{sql} ORDER BY todo.{_KEY} LIMIT 1 OFFSET %s", [*params, limit - 1]

    def _count_sql(self, after: Key | None, upto: Key) -> tuple[str, list[Any]]:
        """SQL counting the rows to do in (after, upto], from the todo's keys compiled once
        (building the range's queryset for each batch cost 0.4 ms of Python)."""
        sql, params = self._bounded(after, upto)
        return f"SELECT count(*) FROM ({sql}) counted", params

    def _bounded(self, after: Key | None, upto: Key) -> tuple[str, list[Any]]:
        """The todo's keys (compiled once, _todo_keys) in (after, upto]."""
        assert self._todo_keys is not None
        inner, params = self._todo_keys
        bounds, bound_params = range_sql(connections[self._alias], self._key, f"todo.{_KEY}",
                                         KeyRange(after, upto))
        return (f"SELECT todo.{_KEY} FROM ({inner}) todo WHERE {bounds.removeprefix(' AND ')}",
                [*params, *bound_params])

    def _keys_sql(self, query: QuerySet[Any]) -> tuple[str, tuple[Any, ...]]:
        """SQL selecting ``query``'s keys as the column named _KEY, which a query around
        it can name whatever the key's field and column are called."""
        sql, params = query.values(**{_KEY: F(self._key.name)}).query.get_compiler(
            using=self._alias).as_sql()  # the batch's database, whatever the default
        return sql, tuple(params)

    def _fetch(self, query: QuerySet[Any]) -> Sequence[Sequence[Any]]:
        """Rows of ``query``; binary-format with psycopg 3 where that gives Django's values
        (psycopg2 has no binary results: it takes the text path).

        Django's timestamptz loader parses text in Python; psycopg's binary loaders are C.
        For 5k rows that is 25 ms against 6 ms, most of the per-row path's Python time."""
        if not self._binary_fetch:
            return list(query)
        import psycopg

        sql, params = query.query.get_compiler(using=self._alias).as_sql()
        with psycopg.Cursor(connections[self._alias].connection) as cursor:
            cursor.execute(sql, params, binary=True)
            rows = cursor.fetchall()
        if not self._converters:
            return rows
        connection = connections[self._alias]
        converted = [list(row) for row in rows]
        for row in converted:
            for position, expression, converter in self._converters:
                row[position] = converter(row[position], expression, connection)
        return converted

    def _reading(self, rows: QuerySet[Any], *extra: str) -> QuerySet[Any]:
        """What a transform's lock step reads of ``rows``: the fields, then the
        annotations, in the row class's order, then ``extra`` annotations of ``rows``."""
        if self._annotate:
            rows = rows.annotate(**self._annotate)
        return rows.values_list(*self._attnames, *self._annotate, *extra)

    def keys_in(self, after: Key | None, upto: Key) -> Sequence[Key]:
        return list(self._range(after, upto).order_by(self._key.name)
                    .values_list(self._key.name, flat=True))

    def apply(self, after: Key | None, upto: Key) -> None:
        self._apply(lambda: as_batch(self._range(after, upto), BatchScope(
            self._key, within=KeyRange(after, upto), psycopg3=self._psycopg3)))

    def lock_keys(self, keys: Sequence[Key]) -> list[Key]:
        """The lock step of a batch of given keys rather than a key range (a retry of
        recorded failed rows): the rows still to do among ``keys``, locked (FOR NO KEY
        UPDATE where the database has row locks, whatever the batches do) and, for a
        transform, read; their keys, in key order. A key whose row has left todo, or the
        table, is not among them."""
        self._set_key_order(pinned=False)  # given keys: no index step to find them
        self._versions = None
        name = self._key.name
        locking = self._todo.filter(**{f"{name}__in": keys}).order_by(name)
        locking = self._backend.for_update(locking)
        try:
            if self._forward is not None:
                keys = list(locking.values_list(name, flat=True))
            else:
                self._rows = list(starmap(self._row_class,
                                          self._fetch(self._reading(locking))))
                keys = [getattr(row, self._key.attname) for row in self._rows]
        except Exception:
            self._key_order_pinned = False  # gone with the transaction
            raise
        self._set_key_order(pinned=False)
        return keys

    def apply_keys(self, keys: Sequence[Key]) -> None:
        """The work on the rows lock_keys() just locked, whose keys are ``keys``: the
        set-based code gets a queryset of exactly those rows."""
        self._apply(lambda: as_batch(
            self._todo.filter(**{f"{self._key.name}__in": keys}),
            BatchScope(self._key, keys=frozenset(keys), psycopg3=self._psycopg3)))

    def _apply(self, batch: Callable[[], Batch]) -> None:
        """The work: the set-based code on ``batch()`` (built only for it), or the
        transform on the rows the lock step read (with what prepare made of ``batch()``),
        written back in one statement."""
        try:
            if self._forward is not None:
                self._forward(batch())
                return
            assert self._transform is not None
            rows, self._rows = self._rows, []
            if self._versions is not None:  # read and transformed ahead
                self._write_ahead(rows)
                return
            if self._prepare is not None:
                context = self._prepare(batch())
                for row in rows:
                    self._transform(row, context)
            else:
                for row in rows:
                    self._transform(row)
            if self._ahead is not None and self._ahead_from is not None:
                self._ahead.start(self._ahead_from[0], self._reader(self._ahead_from[1]))
                self._ahead_from = None
            write_back(connections[self._alias], self._todo.model, self._key, self._fields,
                       rows, psycopg3=self._psycopg3, may_stage=True)
        except Exception as exc:
            if self._optimistic and classify(exc) in (ErrorKind.LOCK_TIMEOUT,
                                                      ErrorKind.SERIALIZATION,
                                                      ErrorKind.DEADLOCK):
                # a holder outlasted the short timeout, or a row changed since it was read:
                # lock first for a while
                self._contended_attempts = CONTENDED_ATTEMPTS
            raise

    def _write_ahead(self, rows: list[Any]) -> None:
        """Write back a batch read ahead: only its rows still as they were read; if any
        changed (or went) meanwhile, or a row came to be one to do in its range (inserted,
        or changed to match todo) before this transaction began, the batch is refused,
        rolled back and retried reading its rows itself."""
        versions, self._versions = self._versions, None
        error, self._ahead_error = self._ahead_error, None
        if error is not None:
            raise error
        after, last = self._ahead_span
        now = self._fetch_one(*self._count_sql(after, last))
        if now != len(rows):
            raise RowsChangedSinceRead(
                f"{now} rows of the batch's range are to do now, {len(rows)} were read "
                "ahead; the batch is retried reading its rows itself")
        written = write_back(connections[self._alias], self._todo.model, self._key,
                             self._fields, rows, psycopg3=self._psycopg3, versions=versions,
                             may_stage=True)
        if written != len(rows):
            raise RowsChangedSinceRead(
                f"{len(rows) - written} of the batch's {len(rows)} rows changed since they "
                "were read ahead; the batch is retried reading its rows itself")

    def lock_holders(self) -> str:
        """Who holds locks on the table now, as the database tells it."""
        return self._backend.lock_holders(self._todo.model._meta.db_table)

    def reconnect(self) -> None:
        if self._ahead is not None:  # named after the session that goes now
            self._ahead.discard()
        self._session_settings = None
        self._key_order_pinned = False
        connection = connections[self._alias]
        try:
            connection.close()
        except Exception:  # it is already broken; a new one comes next
            connection.connection = None


def _fields_read(model: type[Model], only: Sequence[str] | None,
                 written: Sequence[Field[Any, Any]], key: Field[Any, Any]
                 ) -> list[Field[Any, Any]]:
    """The concrete fields a transform's rows hold: every one, or ``only`` those (by name
    or attname) and always the primary key, the batch key and the fields written, in
    the model's order."""
    concrete = list(model._meta.concrete_fields)
    if only is None:
        return concrete
    wanted = {key, *written, *([model._meta.pk] if model._meta.pk else [])}
    for name in only:
        try:
            field = model._meta.get_field(name)
        except FieldDoesNotExist:
            field = None
        if field not in concrete:
            raise ImproperlyConfigured(
                f"BatchedRunPython only: {model._meta.label} has no field {name!r} with a "
                f"column; expected some of {[f.name for f in concrete]}")
        wanted.add(field)
    return [field for field in concrete if field in wanted]


def _annotations(rows: QuerySet[Any], annotate: Mapping[str, Any]
                 ) -> list[tuple[Any, Field[Any, Any]]]:
    """``annotate``'s expressions resolved against the model, with their output fields,
    refused in one line when Django cannot resolve one, or when one joins a to-many
    relation: that join would repeat the row once per related row."""
    resolved = []
    for name, expression in annotate.items():
        try:
            query = rows.annotate(**{name: expression}).query
        except (FieldError, ValueError, TypeError) as exc:
            raise ImproperlyConfigured(f"BatchedRunPython annotate: {name!r}: {exc}") from None
        relation = to_many_relation(query)
        if relation is not None:
            raise ImproperlyConfigured(
                f"BatchedRunPython annotate: {name!r} follows the to-many relation "
                f"{relation.get_accessor_name() or relation.name!r} of "
                f"{relation.model._meta.label}, which would repeat a row once per related "
                f"row; read one value per row with a Subquery (Subquery(Related.objects"
                f".filter(...=OuterRef('pk')).values('field')[:1])), or load the related "
                f"rows once per batch with prepare=")
        expression = query.annotations[name]
        try:
            resolved.append((expression, expression.output_field))
        except FieldError as exc:  # mixed types: Django asks for an output_field
            raise ImproperlyConfigured(f"BatchedRunPython annotate: {name!r}: {exc}") from None
    return resolved


def _has_subquery(todo: QuerySet[Any], alias: str) -> bool:
    """Whether ``todo``'s SQL holds a subquery (``Exists``, ``Subquery``,
    ``__in=<queryset>``): planned in the same statement as the batch's end, it would be
    planned under _KEY_ORDER_SETTINGS too."""
    sql, _ = todo.query.get_compiler(using=alias).as_sql()
    return len(re.findall(r"\bSELECT\b", sql, flags=re.IGNORECASE)) > 1
