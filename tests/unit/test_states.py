"""One name for each state: phases, directions, checkpoint and worker states, condition
types and the ``app.migration[op]`` name are spelled in :mod:`chunkwise.contract` only."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from chunkwise.contract import (
    Condition,
    Direction,
    ExitCode,
    JobCondition,
    OperationName,
    Phase,
    ShardState,
    WorkerState,
)

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "operator" / "chunkwise"
CRDS = (REPO / "crds" / "datamigration.yaml",
        REPO / "charts" / "chunkwise" / "files" / "datamigration.yaml")

#: every word that names a state somewhere; spelled as a literal only in the contract
WORDS = {str(member) for kind in (Phase, Direction, ShardState, WorkerState, Condition,
                                  JobCondition) for member in kind}
#: the same word in another sense, where it must be spelled out: (file, word) -> how often
ELSEWHERE = Counter({
    ("engine/errors.py", "failed"): 1,  # a driver's message that a connection failed
})


def _exempt(path: Path) -> bool:
    # the contract defines them; a Django migration is history, frozen as it was written
    relative = path.relative_to(SOURCE)
    return relative == Path("contract.py") or relative.parts[:2] == ("django", "migrations")


def _names_not_values(tree: ast.AST) -> set[int]:
    """Constants that are names of something, never a state: ``__all__``'s entries (the
    engine's exception ``Halted``) and a mapping's keys read by subscript (``options
    ["failed"]`` is the --failed flag)."""
    names: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            names.update(id(c) for c in ast.walk(node.value))
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            names.add(id(node.slice))
    return names


def state_literals() -> Counter[tuple[str, str]]:
    """(file, word) -> how often a state's word is written as a string literal there."""
    found: Counter[tuple[str, str]] = Counter()
    for path in sorted(SOURCE.rglob("*.py")):
        if _exempt(path):
            continue
        tree = ast.parse(path.read_text(), str(path))
        names = _names_not_values(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in WORDS and id(node) not in names:
                found[(str(path.relative_to(SOURCE)), node.value)] += 1
    return found


def test_states_are_spelled_in_the_contract_only() -> None:
    found = state_literals()
    assert found == ELSEWHERE, (
        "use the enums of chunkwise.contract (Phase, Direction, ShardState, WorkerState, "
        "Condition, JobCondition) instead of these literals:\n" + "\n".join(
            f"  {path}: {word!r} x{count}" for (path, word), count in sorted(found.items())
            if ELSEWHERE[(path, word)] != count))


def _crd_schema(path: Path) -> dict[str, Any]:
    crd = yaml.safe_load(path.read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


@pytest.mark.parametrize("path", CRDS, ids=lambda p: str(p.relative_to(REPO)))
def test_crd_enums_are_the_contract_enums(path: Path) -> None:
    schema = _crd_schema(path)["properties"]
    assert schema["status"]["properties"]["phase"]["enum"] == list(Phase)
    direction = schema["spec"]["properties"]["direction"]
    assert direction["enum"] == list(Direction)
    assert direction["default"] == Direction.FORWARD


def test_values_are_the_wire_format() -> None:
    # stored in checkpoint rows and CR status: a changed value changes their meaning
    assert list(Phase) == ["Pending", "Running", "Suspended", "Halted", "Succeeded", "Failed"]
    assert list(Direction) == ["forward", "backward"]
    assert list(ShardState) == ["deferred", "running", "interrupted", "halted", "done"]
    assert list(WorkerState) == ["running", "done", "halted", "interrupted", "failed"]


def test_phase_groups() -> None:
    assert Phase.ENDED == {Phase.SUCCEEDED, Phase.HALTED, Phase.FAILED}
    assert Phase.RESTARTABLE == {Phase.HALTED, Phase.FAILED}
    assert Phase.RESTARTABLE < Phase.ENDED
    assert Phase.GOING_ON == set(Phase) - Phase.ENDED
    assert "Halted" in Phase.RESTARTABLE and None not in Phase.ENDED  # as status.get() gives


def test_direction_opposite() -> None:
    assert Direction.FORWARD.opposite is Direction.BACKWARD
    assert Direction.BACKWARD.opposite is Direction.FORWARD


def test_worker_state_of_each_exit_code() -> None:
    assert {code: WorkerState.of(code) for code in ExitCode} == {
        ExitCode.DONE: WorkerState.DONE, ExitCode.HALTED: WorkerState.HALTED,
        ExitCode.INTERRUPTED: WorkerState.INTERRUPTED, ExitCode.ERROR: WorkerState.FAILED,
        ExitCode.USAGE: WorkerState.FAILED, ExitCode.BUSY: WorkerState.FAILED}
    assert WorkerState.of(137) is WorkerState.FAILED


@pytest.mark.parametrize("name", [
    OperationName("shop", "0002_customer_status", 0),
    OperationName("my_app2", "0010_x", 12),
])
def test_operation_name_round_trip(name: OperationName) -> None:
    assert OperationName.parse(str(name)) == name


def test_operation_name_format() -> None:
    assert str(OperationName("shop", "0002_customer_status", 1)) == "shop.0002_customer_status[1]"


@pytest.mark.parametrize("text", ["", "shop", "shop.0002", "shop.0002[x]", "shop0002[0]",
                                  "shop.0002[-1]", ".0002[0]", "shop.[0]", "shop.0002[0] x"])
def test_operation_name_refuses_what_it_does_not_name(text: str) -> None:
    with pytest.raises(ValueError, match="app_label.migration\\[index\\]"):
        OperationName.parse(text)
