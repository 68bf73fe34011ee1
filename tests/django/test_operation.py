"""BatchedRunPython as a Django migration operation: validation, deconstruct, describe."""

from __future__ import annotations

from typing import Any

import pytest
from django.db.migrations.operations.base import OperationCategory
from django.db.models import Count, F, Q
from django.db.models.functions import Coalesce

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
    ({"model": "lab.Item", "forward": forward, "allow_failed_rows": -1},
     "allow_failed_rows: expected an integer >= 0"),
    ({"model": "lab.Item", "forward": lambda apps, schema_editor: None},
     "forward: <lambda>(apps, schema_editor) cannot be called as forward(apps, schema_editor, "
     "batch) (RunPython code takes (apps, schema_editor); a batched one takes the batch too)"),
    ({"model": "lab.Item", "forward": forward, "reverse": lambda apps, editor: None},
     "reverse: <lambda>(apps, editor) cannot be called as reverse(apps, schema_editor, batch)"),
    ({"model": "lab.Item", "transform": lambda: None, "fields": ["counter"]},
     "transform: <lambda>() cannot be called as transform(row)"),
    ({"model": "lab.Item", "transform": lambda row: None, "fields": ["counter"],
      "prepare": lambda apps, batch: {}},
     "transform: <lambda>(row) cannot be called as transform(row, context) "
     "(beside prepare=, it gets what prepare returned for the batch as its second argument)"),
    ({"model": "lab.Item", "transform": lambda row, context: None, "fields": ["counter"],
      "prepare": lambda batch: {}},
     "prepare: <lambda>(batch) cannot be called as prepare(apps, batch)"),
    ({"model": "lab.Item", "forward": forward, "prepare": lambda apps, batch: {}},
     "prepare: only used with transform= (set-based code reads and writes its batch "
     "queryset itself)"),
    ({"model": "lab.Item", "forward": forward, "annotate": {"n": F("counter")}},
     "annotate: only used with transform="),
    ({"model": "lab.Item", "forward": forward, "only": ["counter"]}, "only: only used with"),
    ({"model": "lab.Item", "transform": transform, "fields": ["counter"],
      "annotate": [F("counter")]}, "annotate: expected a dict of names to expressions"),
    ({"model": "lab.Item", "transform": transform, "fields": ["counter"],
      "annotate": {"pk": F("counter")}}, "annotate: 'pk' cannot be a row's attribute"),
    ({"model": "lab.Item", "transform": transform, "fields": ["counter"],
      "annotate": {"_n": F("counter")}}, "annotate: '_n' cannot be a row's attribute"),
    ({"model": "lab.Item", "transform": transform, "fields": ["counter"],
      "annotate": {"n": "counter"}}, "annotate: 'n': expected an expression"),
    ({"model": "lab.Item", "transform": transform, "fields": ["counter"],
      "annotate": {"n": Coalesce(Count("stamped"), 0)}},
     "annotate: 'n': Count(F(stamped)) summarises many rows, which the batch's rows cannot "
     "be grouped or windowed for; compute one value per row with a Subquery"),
    ({"model": "lab.Item", "transform": transform, "fields": ["counter"], "only": "counter"},
     "only: expected a list of the field names the transform reads"),
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
    shaped = BatchedRunPython("lab.Item", transform=with_context, fields=["counter"],
                              prepare=lookups, annotate={"n": F("score")}, only=["payload"])
    assert shaped.deconstruct()[2] == {"transform": with_context, "fields": ["counter"],
                                       "prepare": lookups, "annotate": {"n": F("score")},
                                       "only": ["payload"]}


def with_context(row: Any, context: Any) -> None:
    row.counter = context


def lookups(apps: Any, batch: Any) -> int:
    return 1


def test_describe_reversible_and_flags() -> None:
    op = BatchedRunPython("lab.Item", forward)
    assert op.describe() == "Batched data migration of lab.Item (set-based)"
    assert not op.reversible and not op.reduces_to_sql and op.atomic is False
    assert op.category is OperationCategory.PYTHON  # as RunPython: "p" in migrate --plan
    assert op.formatted_description() == "p " + op.describe()
    assert BatchedRunPython("lab.Item", forward, reverse=forward).reversible
    per_row = BatchedRunPython("lab.Item", transform=transform, fields=["counter"])
    assert per_row.describe() == "Batched data migration of lab.Item (per-row transform)"


def test_defer_is_validated_kept_and_described() -> None:
    with pytest.raises(ValueError, match="defer: expected True, False or None"):
        BatchedRunPython("lab.Item", forward, defer="yes")  # type: ignore[arg-type]
    op = BatchedRunPython("lab.Item", forward, defer=True)
    assert op.deconstruct()[2] == {"defer": True}
    assert op.describe() == "Batched data migration of lab.Item (set-based, deferred)"
    assert "defer" not in BatchedRunPython("lab.Item", forward).deconstruct()[2]


@pytest.mark.parametrize(("defer", "env", "setting", "expected"), [
    (None, None, False, False),   # a developer's migrate runs it inline
    (None, None, True, True),     # settings for deployed environments flip the default
    (None, "1", False, True),     # so does the pipeline's environment
    (None, "off", True, False),   # and the environment wins over the setting
    (True, "0", False, True),     # the operation's own word wins over both
    (False, "1", True, False),
])
def test_deferred_follows_the_operation_then_env_then_setting(
        django_setup: None, monkeypatch: pytest.MonkeyPatch, defer: bool | None,
        env: str | None, setting: bool, expected: bool) -> None:
    from django.test import override_settings

    if env is None:
        monkeypatch.delenv("CHUNKWISE_DEFER", raising=False)
    else:
        monkeypatch.setenv("CHUNKWISE_DEFER", env)
    with override_settings(CHUNKWISE_DEFER=setting):
        assert BatchedRunPython("lab.Item", forward, defer=defer).deferred() is expected


def test_a_bad_defer_value_names_the_variable_or_setting(
        django_setup: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from django.core.management import CommandError
    from django.test import override_settings

    monkeypatch.setenv("CHUNKWISE_DEFER", "maybe")
    with pytest.raises(CommandError, match="CHUNKWISE_DEFER: expected true or false") as raised:
        BatchedRunPython("lab.Item", forward).deferred()
    assert raised.value.returncode == 64
    monkeypatch.delenv("CHUNKWISE_DEFER")
    with override_settings(CHUNKWISE_DEFER="yes"), pytest.raises(
            CommandError, match="settings.CHUNKWISE_DEFER: expected True or False"):
        BatchedRunPython("lab.Item", forward).deferred()


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    (("shop app", "0002"), {}, "app_label: expected an app label"),
    (("shop", ""), {}, "migration_name: expected a migration name"),
    (("shop", "../0002"), {}, "migration_name: expected a migration name"),
    (("shop", "0002"), {"operation": -1}, "operation: expected None"),
    (("shop", "0002"), {"operation": True}, "operation: expected None"),
    (("shop", "0002"), {"wait": -5}, "wait: expected seconds >= 0"),
    (("shop", "0002"), {"wait": "1m"}, "wait: expected seconds >= 0"),
])
def test_ensure_rejects_bad_arguments_naming_them(args: tuple[Any, ...], kwargs: dict[str, Any],
                                                  message: str) -> None:
    from chunkwise.django import EnsureBatchedComplete

    with pytest.raises(ValueError, match=message):
        EnsureBatchedComplete(*args, **kwargs)


def test_ensure_deconstructs_describes_and_flags() -> None:
    from chunkwise.django import EnsureBatchedComplete

    op = EnsureBatchedComplete("shop", "0002_customer_status")
    assert op.deconstruct() == ("EnsureBatchedComplete", ["shop", "0002_customer_status"], {})
    waiting = EnsureBatchedComplete("shop", "0002", operation=1, wait=600)
    assert waiting.deconstruct()[2] == {"operation": 1, "wait": 600.0}
    assert op.describe() == ("Ensure batched data migration shop.0002_customer_status is "
                             "complete (finish it here if not)")
    assert op.formatted_description() == "p " + op.describe()
    assert op.reversible and op.atomic is False and not op.reduces_to_sql


def test_written_migrations_import_the_operations_from_their_public_path(
        django_setup: None) -> None:
    """makemigrations and squashmigrations write ``<class module>.<name>(...)``: the
    public ``chunkwise.django``, never an internal module that may move."""
    from django.db import migrations
    from django.db.migrations.writer import MigrationWriter

    from chunkwise.django import EnsureBatchedComplete

    migration = type("Migration", (migrations.Migration,), {"operations": [
        BatchedRunPython("lab.Item", forward, batch_size=500),
        EnsureBatchedComplete("lab", "0002", wait=5)]})("0009_squashed", "lab")
    text = MigrationWriter(migration).as_string()
    assert "import chunkwise.django\n" in text
    assert "chunkwise.django.BatchedRunPython(" in text
    assert "chunkwise.django.EnsureBatchedComplete(" in text
    assert "chunkwise.django.operations" not in text and "chunkwise.django.ensure" not in text
    for operation in migration.operations:  # the public path names the class itself
        name = operation.deconstruct()[0]
        module = __import__(type(operation).__module__, fromlist=[name])
        assert getattr(module, name) is type(operation)


def test_ensure_names_an_app_that_is_not_installed_as_such(django_setup: None) -> None:
    from django.core.exceptions import ImproperlyConfigured
    from django.db.migrations.loader import MigrationLoader

    from chunkwise.django import EnsureBatchedComplete

    loader = MigrationLoader(None, ignore_no_migrations=True)
    with pytest.raises(ImproperlyConfigured, match=r"^EnsureBatchedComplete app_label: no "
                                                   r"installed app is called 'nope_app' \(apps "
                                                   r"with migrations: .*\bchunkwise, "
                                                   r"contenttypes, lab, later"):
        EnsureBatchedComplete("nope_app", "0002")._targets(loader)
    with pytest.raises(ImproperlyConfigured, match=r"^EnsureBatchedComplete migration_name: "
                                                   r"There is no migration for 'lab' with the "
                                                   r"prefix '0999'"):
        EnsureBatchedComplete("lab", "0999")._targets(loader)


def test_runpython_noop_and_batched_noop_are_accepted_as_code_that_does_nothing() -> None:
    """Every upstream data migration gives reverse=RunPython.noop; migrating backwards
    recorded each row as failed (TypeError: noop() takes 2 positional arguments but 3
    were given), then halted."""
    from django.db.migrations import RunPython

    for noop in (RunPython.noop, BatchedRunPython.noop):
        op = BatchedRunPython("lab.Item", forward, reverse=noop)
        assert op.reversible and op.deconstruct()[2] == {"reverse": noop}
