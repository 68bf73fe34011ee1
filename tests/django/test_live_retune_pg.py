"""Live retuning in a running worker, against the settings it started with."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import LabDb

pytestmark = pytest.mark.postgres


def test_a_tunable_removed_from_the_spec_goes_back_to_its_default_in_the_running_worker(
        lab_db: LabDb, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Job's env carried spec.batch.maxRowsPerSecond; the user removes it from the spec
    while the run goes on: the worker runs uncapped again, as the operator's Event says
    ('-> default'), instead of keeping the value it started with."""
    import importlib

    from django.core.management import call_command

    execute_module = importlib.import_module("chunkwise.django.execute")

    lab_db.execute("INSERT INTO lab_item (id, counter, payload, score) "
                   "SELECT g, 0, '', 0 FROM generate_series(1, 2000) g")
    monkeypatch.setenv("CHUNKWISE_MAX_ROWS_PER_SECOND", "20000")  # spec generation 1
    updates: list[tuple[int, dict[str, str]]] = [(2, {})]  # generation 2 sets no tunable

    def source() -> Any:
        return updates.pop() if updates else None
    monkeypatch.setattr(execute_module, "tuning_sources", lambda: [source])
    with pytest.raises(SystemExit) as exited:
        call_command("chunkwise_run", "lab", "0002")
    assert exited.value.code == 0
    err = capsys.readouterr().err
    assert "retuned (spec generation 2): batch.maxRowsPerSecond 20000 -> 0" in err
