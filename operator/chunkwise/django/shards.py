"""Splitting an operation's key space into shards balanced by row count.

The split is exact, not estimated: at plan time the rows still to do are numbered in key
order (one ordered pass over the key's index, ``row_number() OVER (ORDER BY key)``) and
the keys at the ``i * count / n``-th rows become the boundaries. That balances skewed
integers, UUIDs and text alike to within one row, where the planner's histogram
(``pg_stats.histogram_bounds``) would be stale after bulk loads and blind to the todo
filter. It costs one index-only pass at plan time (about a second per few million rows).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.db.models import F, Field, QuerySet, Window
from django.db.models.functions import RowNumber

from .keys import Key

__all__ = ["ShardRange", "keys_at", "shard_ranges", "split", "split_positions"]

#: a shard's key range: (exclusive lower bound or None, inclusive upper bound); None when
#: the shard has no rows (fewer rows than shards)
ShardRange = tuple[Key | None, Key] | None


def split_positions(count: int, shards: int) -> list[int]:
    """Row numbers (1-based, in key order) where each shard ends: shard ``i`` holds rows
    ``positions[i-1] + 1 .. positions[i]`` (``positions[-1]`` is 0). Sizes differ by at
    most one row."""
    if shards < 1 or count < 0:
        raise ValueError(f"split_positions: expected count >= 0 and shards >= 1, got "
                         f"{count}, {shards}")
    return [(i * count) // shards for i in range(1, shards + 1)]


def shard_ranges(count: int, shards: int, key_at: Callable[[int], Key]) -> list[ShardRange]:
    """Each shard's key range, from the key at a given row number (1-based)."""
    ends = split_positions(count, shards)
    ranges: list[ShardRange] = []
    start = 0
    for end in ends:
        ranges.append(None if end == start else (key_at(start) if start else None, key_at(end)))
        start = end
    return ranges


def keys_at(todo: QuerySet[Any], key: Field[Any, Any], positions: Sequence[int]
            ) -> Mapping[int, Key]:
    """The key of each given row number of ``todo`` in key order, in one ordered pass."""
    wanted = sorted({p for p in positions if p > 0})
    if not wanted:
        return {}
    ranked = (todo.order_by().annotate(_chunkwise_row=Window(RowNumber(),
                                                             order_by=F(key.name).asc()))
              .filter(_chunkwise_row__in=wanted)
              .values_list("_chunkwise_row", key.name))
    return {int(row): value for row, value in ranked}


def split(todo: QuerySet[Any], key: Field[Any, Any], shards: int
          ) -> tuple[list[int], list[ShardRange]]:
    """``todo`` split into ``shards`` key ranges balanced by row count: each one's rows and
    range. Rows deleted between the count and the pass: counted again (three tries)."""
    for attempt in range(3):
        count = todo.count()
        ends = split_positions(count, shards)
        found = keys_at(todo, key, ends)
        try:
            ranges = shard_ranges(count, shards, found.__getitem__)
            break
        except KeyError:
            if attempt == 2:
                raise
    return [end - start for start, end in zip([0, *ends], ends, strict=False)], ranges
