"""The Argo CD health check on statuses made by the operator's own status code (the e2e
tests run it on live DataMigrations too)."""

from __future__ import annotations

from typing import Any

import pytest

from chunkwise.contract import Phase
from chunkwise.operator.conditions import RunState, stall_status, status_for
from tests.support.argocd import argo_health


def resource(status: dict[str, Any] | None, generation: int = 1) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "chunkwise.dev/v1alpha1", "kind": "DataMigration",
                            "metadata": {"name": "m", "namespace": "shop",
                                         "generation": generation}}
    if status is not None:
        body["status"] = status
    return body


def after(*states: RunState) -> dict[str, Any]:
    status: dict[str, Any] = {}
    for state in states:
        patch, _ = status_for(status, state, 1, now="2026-01-01T00:00:00Z")
        status = {**status, **patch}
    return status


RUNNING = RunState(Phase.RUNNING, "Running", "the worker is processing batches")


@pytest.mark.parametrize(("states", "expected", "said"), [
    ((RunState(Phase.PENDING, "JobCreated", "Job m-run1 created"),), "Progressing", "Pending"),
    ((RUNNING,), "Progressing", "Running"),
    ((RUNNING, RunState(Phase.SUCCEEDED, "Completed", "every row was processed")), "Healthy",
     "Completed: every row was processed"),
    ((RUNNING, RunState(Phase.HALTED, "FailedRowsExceeded", "11 rows failed")), "Degraded",
     "Halted: FailedRowsExceeded: 11 rows failed"),
    ((RunState(Phase.FAILED, "InvalidConfiguration", "unknown app"),), "Degraded",
     "Failed: InvalidConfiguration: unknown app"),
    ((RUNNING, RunState(Phase.SUSPENDED, "SuspendRequested", "spec.suspend is true")), "Suspended",
     "SuspendRequested"),
], ids=["pending", "running", "succeeded", "halted", "failed", "suspended"])
def test_each_phase_maps_to_an_argo_health(states: tuple[RunState, ...], expected: str,
                                           said: str) -> None:
    status, message = argo_health(resource(after(*states)))
    assert status == expected and said in message


def test_progress_is_in_the_message_while_running() -> None:
    status = {**after(RUNNING), "progress": {"percentText": "42.0%"}}
    assert argo_health(resource(status)) == ("Progressing", "Running: 42.0% done")


def test_a_stall_and_a_pod_that_cannot_start_are_degraded() -> None:
    import datetime

    running = {**after(RUNNING), "progress": {"lastCheckpointAt": "2026-01-01T00:00:00Z"}}
    patch, _ = stall_status(running, 60, 1, datetime.datetime(2026, 1, 1, 0, 5,
                                                              tzinfo=datetime.UTC))
    assert patch is not None
    status, message = argo_health(resource({**running, **patch}))
    assert status == "Degraded" and message.startswith("Stalled: CheckpointTooOld")
    stuck = after(RunState(Phase.PENDING, "JobCreated", ""))
    for condition in stuck["conditions"]:
        if condition["type"] == "Progressing":
            condition.update(status="False", reason="ImagePullBackOff", message="Back-off")
    assert argo_health(resource(stuck)) == ("Degraded", "ImagePullBackOff: Back-off")


def test_no_status_yet_or_a_newer_spec_is_progressing() -> None:
    assert argo_health(resource(None))[0] == "Progressing"
    succeeded = after(RUNNING, RunState(Phase.SUCCEEDED, "Completed", "done"))
    assert argo_health(resource(succeeded, generation=2)) == (
        "Progressing", "the operator has not acted on the latest spec yet")
