"""The Django admin's pages for chunkwise's tables: runs and their failed rows.

``django.contrib.admin`` finds this module by itself (its autodiscovery imports each
installed app's ``admin``); a project without the admin never imports it, and chunkwise
works the same there.

Everything is read-only: nothing here may change a checkpoint, whose position is what
makes a run resume without skipping or repeating a row. The one action marks a run's
failed rows for retry (:mod:`.retry_marks`): it writes a mark, never a checkpoint, and
needs ``chunkwise.retry_failed_rows``, a permission of chunkwise's own. Seeing the pages
needs Django's view permissions (``chunkwise.view_run``, ``chunkwise.view_failedrow``);
a staff user with neither sees nothing of chunkwise.

Both lists stay fast on 10,000 runs and 1,000,000 failed rows: a page of runs computes
its shards' totals for its own rows (:mod:`.runs`); the failed rows are listed newest
first down an index, filtered by indexed columns, and never counted past a few pages
ahead of the one shown (:class:`LookAheadPaginator`).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Case, F, OuterRef, QuerySet, Subquery, Value, When
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.timesince import timesince

from chunkwise.contract import Direction, OperationName, ShardState
from chunkwise.engine import CheckpointState, Tally, format_duration, progress_of

from .checkpoints import STALE_AFTER
from .models import FailedRow, RetryRequest, Run
from .operation_ref import OperationRef
from .retry_marks import MarkRefused, describe, mark_for_retry
from .runs import IDENTITY, STATE_URGENCY, run_of, runs

if TYPE_CHECKING:  # django-stubs makes ModelAdmin generic; Django's own class is not
    _RunAdmin = admin.ModelAdmin[Run]
    _FailedRowAdmin = admin.ModelAdmin[FailedRow]
else:
    _RunAdmin = _FailedRowAdmin = admin.ModelAdmin

#: the codename of chunkwise's own permission, the one that lets a user mark failed rows
RETRY_PERMISSION = "retry_failed_rows"

#: what the lists show in a cell that has no value yet
NOTHING = "-"


def _run_name(app_label: str, migration: str, operation: int) -> str:
    return str(OperationName(app_label, migration, operation))


def _state_badge(state: str, note: str = "") -> SafeString:
    """A state word, coloured by admin.css (the class is the state itself)."""
    known = state if state in set(ShardState) else "unknown"
    return format_html('<span class="chunkwise-state chunkwise-state-{}">{}</span>{}',
                       known, state, format_html(" <small>{}</small>", note) if note else "")


def _count(value: int | None) -> str:
    return NOTHING if value is None else f"{value:,}"


def _moment(value: datetime.datetime | None) -> str:
    """How long ago: in seconds under a minute (a live run beats every few seconds, and
    Django's timesince starts at "0 minutes")."""
    if value is None:
        return NOTHING
    seconds = (timezone.now() - value).total_seconds()
    return f"{max(seconds, 0):.0f} seconds ago" if seconds < 60 else f"{timesince(value)} ago"


class _FixedChoicesFilter(admin.SimpleListFilter):
    """By one of a fixed list of values, known without asking the database."""

    field: str
    values: tuple[str, ...]

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(value, value) for value in self.values]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(**{self.field: value}) if value else queryset


class _StateFilter(_FixedChoicesFilter):
    """By the run's state (its most urgent shard's, see :data:`.runs.STATE_URGENCY`)."""

    title = parameter_name = "state"
    field = "run_state"
    values = tuple(state.value for state in STATE_URGENCY)


class _DirectionFilter(_FixedChoicesFilter):
    """By direction: the two of the contract."""

    title = parameter_name = "direction"
    field = "direction"
    values = tuple(direction.value for direction in Direction)


@admin.register(Run)
class RunAdmin(_RunAdmin):
    """One line per run (an operation in one direction), its shards folded in."""

    list_display = ["name", "model", "direction", "state_shown", "progress_shown",
                    "rows_shown", "rate_shown", "eta_shown", "failed_shown", "lock_wait_shown",
                    "heartbeat_shown", "owner", "started_at", "completed_shown"]
    list_display_links = ["name"]
    list_filter = [_StateFilter, "app_label", _DirectionFilter]
    search_fields = ["migration", "=app_label"]
    search_help_text = "A migration's name or part of it (0002, customer_status), or an app."
    ordering = ["-started_at", "-id"]
    list_per_page = 50
    # the total over every run, unfiltered, is one more count per page that no one reads
    show_full_result_count = False
    actions = ["mark_failed_rows_for_retry"]
    fieldsets = [
        (None, {"fields": [("name", "direction"), ("model", "key_field"),
                           ("state_shown", "progress_shown"), ("rows_shown", "failed_shown"),
                           ("rate_shown", "eta_shown"), ("lock_wait_shown", "batches"),
                           ("heartbeat_shown", "owner"), ("started_at", "completed_shown"),
                           "message", "retry_shown"]}),
        ("Verification", {
            "description": "After a completed run with a todo filter: the rows up to the "
                           "high-water mark that still match it, and of those the ones not "
                           "recorded as failed (expected: 0 and 0).",
            "fields": ["remaining_shown", "missed_shown", "verified_shown"]}),
        ("Shards", {"fields": ["shards_shown"]}),
    ]

    class Media:
        css = {"all": ["chunkwise/admin.css"]}

    # -- what may be done: view, and the one action ---------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # checkpoints are made by runs

    def has_change_permission(self, request: HttpRequest, obj: Run | None = None) -> bool:
        return False  # a checkpoint's position is the run's; nothing here may move it

    def has_delete_permission(self, request: HttpRequest, obj: Run | None = None) -> bool:
        return False  # a deleted checkpoint would run its rows again

    def has_retry_failed_rows_permission(self, request: HttpRequest) -> bool:
        # the admin's users all have has_perm (PermissionsMixin, AnonymousUser); the stubs
        # type a user as AbstractBaseUser, which does not declare it
        return request.user.has_perm(  # type: ignore[union-attr, unused-ignore]
            f"{self.opts.app_label}.{RETRY_PERMISSION}")

    @admin.action(permissions=[RETRY_PERMISSION],
                  description="Mark the failed rows of the selected runs for retry")
    def mark_failed_rows_for_retry(self, request: HttpRequest,
                                   queryset: QuerySet[Run]) -> None:
        for run in queryset:
            try:
                ref = OperationRef(run.app_label, run.migration, run.operation,
                                   Direction(run.direction))
                count = mark_for_retry(ref, queryset.db, request.user.get_username())
            except MarkRefused as exc:
                self.message_user(request, f"Not marked: {exc}.", messages.WARNING)
            except ValueError:  # a direction of an older chunkwise: no retry knows it
                self.message_user(request, f"Not marked: {run}: direction {run.direction!r} "
                                           "is neither forward nor backward.", messages.ERROR)
            else:
                backward = " --direction backward" if ref.direction == Direction.BACKWARD \
                    else ""
                # "Marked" first: the admin capitalises a message's first letter
                self.message_user(request, (
                    f"Marked for retry: the {count:,} failed row{'' if count == 1 else 's'} "
                    f"of {ref}. The next `manage.py chunkwise_run {ref.app_label} "
                    f"{ref.migration}{backward}` retries them (or --retry-failed; in a "
                    "cluster, the DataMigration's spec.retryFailed: true)."), messages.SUCCESS)

    # -- the rows -------------------------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[Run]:
        # whether the failed rows may be linked to: a list cell has no request to ask
        may_see_failures = self.admin_site.is_registered(FailedRow) and \
            self.admin_site.get_model_admin(FailedRow).has_view_permission(request)
        listed: QuerySet[Run] = runs(super().get_queryset(request)).annotate(
            may_see_failures=Value(may_see_failures))
        return listed

    def get_object(self, request: HttpRequest, object_id: str,
                   from_field: str | None = None) -> Run | None:
        """A run's page is its shard 0's; a link to another of its shards (from a failed
        row, say) opens it too."""
        found = super().get_object(request, object_id, from_field)
        if found is not None or from_field is not None:
            return found
        shard = Run.objects.filter(pk=object_id).values(*IDENTITY).first() \
            if object_id.isdigit() else None
        return None if shard is None else self.get_queryset(request).filter(**shard).first()

    # -- the columns ----------------------------------------------------------------------

    @admin.display(description="operation", ordering="migration")
    def name(self, run: Any) -> str:
        return _run_name(run.app_label, run.migration, run.operation)

    @admin.display(description="state", ordering="run_state")
    def state_shown(self, run: Any) -> SafeString:
        note = ""
        if run.run_state == ShardState.RUNNING and run.run_heartbeat is not None and \
                (timezone.now() - run.run_heartbeat).total_seconds() > STALE_AFTER:
            note = f"no heartbeat for {timesince(run.run_heartbeat)}"  # its runner may be gone
        return _state_badge(run.run_state, note)

    def _state(self, run: Any) -> CheckpointState:
        """The run's totals as the engine reads a checkpoint, for its progress figures."""
        return CheckpointState(None, None, run.run_estimated or 0,
                               Tally(run.run_rows or 0, run.run_failed or 0), run.batches,
                               run.run_lock_wait or 0.0, done=run.run_state == ShardState.DONE)

    def _progress(self, run: Any) -> Any:
        """Percent, and rows/s averaged from the run's start to its last heartbeat."""
        elapsed = (run.run_heartbeat - run.run_started).total_seconds() \
            if run.run_heartbeat and run.run_started else 0.0
        return progress_of(self._state(run), 0, elapsed)

    @admin.display(description="progress")
    def progress_shown(self, run: Any) -> SafeString:
        percent = 100 * self._progress(run).fraction
        return format_html('<progress class="chunkwise-progress" value="{}" max="100">'
                           '</progress> {}%', f"{percent:.1f}", f"{percent:.1f}")

    @admin.display(description="rows done / estimated", ordering="run_rows")
    def rows_shown(self, run: Any) -> str:
        progress = self._progress(run)
        return f"{progress.done:,} / {progress.total:,}"

    @admin.display(description="rows/s")
    def rate_shown(self, run: Any) -> str:
        if run.run_state != ShardState.RUNNING:
            return NOTHING
        return f"{self._progress(run).rows_per_second:,.0f}"

    @admin.display(description="ETA")
    def eta_shown(self, run: Any) -> str:
        eta = self._progress(run).eta_seconds
        return NOTHING if run.run_state != ShardState.RUNNING or eta is None \
            else format_duration(eta)

    @admin.display(description="failed rows", ordering="run_failed")
    def failed_shown(self, run: Any) -> str | SafeString:
        failed = run.run_failed or 0
        if not failed or not run.may_see_failures:
            return f"{failed:,}"
        url = reverse(f"{self.admin_site.name}:{self.opts.app_label}_failedrow_changelist")
        return format_html('<a href="{}?run={}">{}</a>', url, run.pk, f"{failed:,}")

    @admin.display(description="lock wait", ordering="run_lock_wait")
    def lock_wait_shown(self, run: Any) -> str:
        return f"{run.run_lock_wait or 0.0:,.1f} s"

    @admin.display(description="last heartbeat", ordering="run_heartbeat")
    def heartbeat_shown(self, run: Any) -> str:
        return _moment(run.run_heartbeat)

    @admin.display(description="completed", ordering="run_completed")
    def completed_shown(self, run: Any) -> Any:
        return run.run_completed if run.run_state == ShardState.DONE else NOTHING

    @admin.display(description="retry")
    def retry_shown(self, run: Any) -> str:
        mark = RetryRequest.objects.using(run._state.db).filter(
            **{name: getattr(run, name) for name in IDENTITY}).first()
        if mark is None:
            return "not marked"
        return f"{describe(mark)}; the next chunkwise_run of it by hand retries them"

    @admin.display(description="rows remaining")
    def remaining_shown(self, run: Any) -> str:
        return _count(run.run_remaining)

    @admin.display(description="rows missed")
    def missed_shown(self, run: Any) -> str:
        return _count(run.run_missed)

    @admin.display(description="verified")
    def verified_shown(self, run: Any) -> Any:
        return run.run_verified or NOTHING

    @admin.display(description="shards")
    def shards_shown(self, run: Any) -> SafeString:
        """Every shard of the run, with its own position and verification."""
        header = ("shard", "state", "rows", "estimated", "failed rows", "last key",
                  "high-water key", "remaining", "missed", "heartbeat", "owner")
        rows = format_html_join("", "<tr>{}</tr>", (
            (format_html_join("", "<td>{}</td>", ((cell,) for cell in (
                f"{shard.shard} of {shard.shard_count}", _state_badge(shard.state),
                f"{shard.rows_processed:,}", f"{shard.rows_estimated:,}",
                f"{shard.failed_rows:,}", shard.last_key or NOTHING,
                shard.high_water_key or NOTHING, _count(shard.rows_remaining),
                _count(shard.rows_missed), _moment(shard.heartbeat_at),
                shard.owner or NOTHING))),)
            for shard in run_of(run)))
        return format_html('<table class="chunkwise-shards"><thead><tr>{}</tr></thead>'
                           "<tbody>{}</tbody></table>",
                           format_html_join("", "<th>{}</th>", ((name,) for name in header)),
                           rows)


class LookAheadPaginator(Paginator):  # type: ignore[type-arg]
    """Counts rows only as far as a few pages past the one shown, never the whole list:
    a count(*) over a million failed rows on every page is most of the page's time,
    for a figure no one reads. Below that horizon the count is exact; past it the page
    says "more than" (admin/chunkwise/failedrow/pagination.html), and the next pages are
    reachable from the last one shown."""

    PAGES_AHEAD = 10

    def __init__(self, object_list: Any, per_page: int, page_shown: int) -> None:
        super().__init__(object_list, per_page)
        self.horizon = (max(page_shown, 1) + self.PAGES_AHEAD) * per_page

    @cached_property
    def _counted(self) -> int:
        # COUNT(*) over a subquery LIMITed to one past the horizon: an index walk that
        # stops there
        rows: QuerySet[Any] = self.object_list  # type: ignore[assignment]  # the admin's
        return rows[: self.horizon + 1].count()

    @cached_property
    def count(self) -> int:
        return min(self._counted, self.horizon)

    @property
    def more(self) -> bool:
        """Whether rows go on past the count."""
        return self._counted > self.horizon


def error_classes(alias: str, limit: int = 100) -> list[str]:
    """The distinct error classes recorded, in order: a walk that jumps from one class
    to the next down the (error_class, id) index, a lookup per class, where DISTINCT
    would read every failed row (neither PostgreSQL nor SQLite skips through an index
    by itself)."""
    connection = connections[alias]
    table = connection.ops.quote_name(FailedRow._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH RECURSIVE classes(name) AS ("
            f" SELECT MIN(error_class) FROM {table}"
            f" UNION ALL"
            f" SELECT (SELECT MIN(error_class) FROM {table} WHERE error_class > classes.name)"
            f" FROM classes WHERE classes.name IS NOT NULL)"
            f" SELECT name FROM classes WHERE name IS NOT NULL LIMIT %s", [limit])
        return [str(name) for (name,) in cursor.fetchall()]


class _ErrorClassFilter(admin.SimpleListFilter):
    title = "error class"
    parameter_name = "error_class"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name) for name in error_classes(model_admin.model._default_manager.db)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(error_class=value) if value else queryset


class _RunFilter(admin.SimpleListFilter):
    """The failed rows of one run, every shard of it (the run's page links here). Only
    the run chosen is offered: a list of 10,000 runs is no filter."""

    title = "run"
    parameter_name = "run"

    _shards: list[Any] = []

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        # called once, as the filter is made: the run's shards, for queryset() too
        value = self.value()
        if not value or not value.isdigit():
            return []
        chosen = Run.objects.filter(pk=value)  # its identity, in the same query
        self._shards = list(Run.objects.filter(
            **{name: Subquery(chosen.values(name)[:1]) for name in IDENTITY}).order_by("shard"))
        if not self._shards:
            return []
        run = self._shards[0]
        return [(str(self.value()), f"{_run_name(run.app_label, run.migration, run.operation)}"
                                    f" {run.direction}")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() is None:
            return queryset
        return queryset.filter(checkpoint_id__in=[shard.pk for shard in self._shards])


@admin.register(FailedRow)
class FailedRowAdmin(_FailedRowAdmin):
    """The rows a run skipped, newest first, with what failed."""

    list_display = ["key", "error_class", "message_shown", "created_at", "run_shown"]
    list_filter = [_ErrorClassFilter, _RunFilter]
    list_select_related = ["checkpoint"]
    ordering = ["-id"]
    # sorting a million rows by another column is a full sort per page: newest first only
    sortable_by = ()
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # facets count every filter's choices
    list_per_page = 100
    actions: Sequence[Any] | None = None
    fields = ["key", "error_class", "message", "created_at", "run_shown"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # recorded by runs

    def has_change_permission(self, request: HttpRequest,
                              obj: FailedRow | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest,
                              obj: FailedRow | None = None) -> bool:
        return False  # a record a retry would miss, and its checkpoint's count would lie

    def get_queryset(self, request: HttpRequest) -> QuerySet[FailedRow]:
        """Each row with its run's page (the run's shard 0, whichever shard failed it) and
        whether the user may open it."""
        run_page = Subquery(Run.objects.filter(
            shard=0, **{name: OuterRef(f"checkpoint__{name}") for name in IDENTITY})
            .values("pk")[:1])
        may_see_runs = self.admin_site.is_registered(Run) and \
            self.admin_site.get_model_admin(Run).has_view_permission(request)
        return super().get_queryset(request).annotate(
            run_page=Case(When(checkpoint__shard=0, then=F("checkpoint_id")), default=run_page),
            may_see_runs=Value(may_see_runs))

    def get_paginator(self, request: HttpRequest, queryset: Any, per_page: int,
                      orphans: int = 0, allow_empty_first_page: bool = True) -> Paginator:  # type: ignore[type-arg]
        page = request.GET.get("p", "1")
        return LookAheadPaginator(queryset, per_page, int(page) if page.isdigit() else 1)

    @admin.display(description="message")
    def message_shown(self, row: FailedRow) -> str:
        first = row.message.splitlines()[0] if row.message else ""
        return first if len(first) <= 120 else f"{first[:119]}…"

    @admin.display(description="run")
    def run_shown(self, row: Any) -> str | SafeString:
        checkpoint = row.checkpoint
        text = f"{_run_name(checkpoint.app_label, checkpoint.migration, checkpoint.operation)}" \
               f" {checkpoint.direction}"
        if checkpoint.shard_count > 1:
            text += f" shard {checkpoint.shard} of {checkpoint.shard_count}"
        if not row.may_see_runs:
            return text
        url = reverse(f"{self.admin_site.name}:{self.opts.app_label}_run_change",
                      args=[row.run_page])
        return format_html('<a href="{}">{}</a>', url, text)
