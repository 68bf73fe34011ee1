"""The shard split, for any keys and any shard count: no gap, no overlap, balanced."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chunkwise.django.shards import shard_ranges, split_positions

keys = st.one_of(
    st.lists(st.integers(-10**12, 10**12), unique=True, max_size=300),  # gaps, skew
    st.lists(st.uuids(), unique=True, max_size=200),
    st.lists(st.text(st.sampled_from("aAbB09 _-éß"), min_size=1, max_size=5), unique=True,
             max_size=200))


def owners(key: Any, ranges: list[Any]) -> list[int]:
    return [i for i, bounds in enumerate(ranges) if bounds is not None
            and (bounds[0] is None or key > bounds[0]) and key <= bounds[1]]


@given(keys=keys, shards=st.integers(1, 70))
def test_every_key_in_exactly_one_shard_and_sizes_differ_by_at_most_one(
        keys: list[Any], shards: int) -> None:
    ordered = sorted(keys)
    ranges = shard_ranges(len(ordered), shards, lambda row: ordered[row - 1])
    assert len(ranges) == shards
    counts = [0] * shards
    for key in ordered:
        [owner] = owners(key, ranges)  # no gap, no overlap
        counts[owner] += 1
    assert max(counts) - min(counts) <= 1
    uppers = [bounds[1] for bounds in ranges if bounds is not None]
    assert uppers == sorted(uppers) and (not ordered or uppers[-1] == ordered[-1])
    assert all((bounds is None) == (size == 0) for bounds, size in zip(ranges, counts,
                                                                       strict=True))


def test_positions_and_their_errors() -> None:
    assert split_positions(10, 4) == [2, 5, 7, 10]
    assert split_positions(2, 4) == [0, 1, 1, 2]  # fewer rows than shards: empty shards
    assert split_positions(0, 3) == [0, 0, 0]
    with pytest.raises(ValueError, match="shards >= 1"):
        split_positions(10, 0)
