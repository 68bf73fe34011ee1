"""BatchedRunPython as a Django migration operation: validation, deconstruct, describe."""

from __future__ import annotations

from typing import Any

import pytest
from django.db.migrations.operations.base import OperationCategory
from django.db.models import Q

from chunkwise.django import BatchedRunPython


def forward(apps: Any, schema_editor: Any, batch: Any) -> None:
    batch.update(counter=1)


def transform(row: Any) -> None:
    row.counter = 1


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"model": "Item", "forward": forward}, "model: expected 'app_label.ModelName'"),
    ({"model": "lab.Item"}, "exactly one of forward="),
    ({"model": "lab.Item", "forward": forward, "transform": transform}, "exactly one of"),
    ({"model": "lab.Item", "transform": transform}, "fields: transform= needs"),
    ({"model": "lab.Item", "forward": forward, "fields": ["x"]}, "fields: only used with"),
    ({"model": "lab.Item", "forward": "not callable"}, "forward: expected a callable"),
    ({"model": "lab.Item", "forward": forward, "todo": {"status": None}}, "todo: expected a Q"),
    ({"model": "lab.Item", "forward": forward, "batch_size": 0}, "batch_size: expected an int"),
    ({"model": "lab.Item", "forward": forward, "lock_timeout": 0}, "timeouts.lock: expected"),
])
def test_invalid_arguments_name_the_argument(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as raised:  # the type RunPython raises for bad arguments
        BatchedRunPython(**kwargs)
    assert message in str(raised.value)


def test_deconstruct_keeps_only_non_default_arguments() -> None:
    op = BatchedRunPython("lab.Item", forward, todo=Q(status=None), batch_size=5000)
    name, args, kwargs = op.deconstruct()
    assert name == "BatchedRunPython"
    assert args == ["lab.Item", forward]
    assert kwargs == {"todo": Q(status=None), "batch_size": 5000}
    per_row = BatchedRunPython("lab.Item", transform=transform, fields=["counter"])
    assert per_row.deconstruct()[1:] == (["lab.Item"], {"transform": transform,
                                                        "fields": ["counter"]})


def test_describe_reversible_and_flags() -> None:
    op = BatchedRunPython("lab.Item", forward)
    assert op.describe() == "Batched data migration of lab.Item (set-based)"
    assert not op.reversible and not op.reduces_to_sql and op.atomic is False
    assert op.category is OperationCategory.PYTHON  # as RunPython: "p" in migrate --plan
    assert op.formatted_description() == "p " + op.describe()
    assert BatchedRunPython("lab.Item", forward, reverse=forward).reversible
    per_row = BatchedRunPython("lab.Item", transform=transform, fields=["counter"])
    assert per_row.describe() == "Batched data migration of lab.Item (per-row transform)"
