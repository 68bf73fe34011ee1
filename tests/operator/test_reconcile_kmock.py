"""The operator's handlers against kmock, the kopf project's Kubernetes API emulator.

The reconcile functions are what the kopf handlers call; here they talk HTTP to an
emulated API server. kopf's own watching and patching is covered by the e2e tests on
a real control plane.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from chunkwise.operator.kube import KubeApi
from chunkwise.operator.reconcile import check_stall, job_changed, spec_changed, start_run

JOBS = ("batch", "v1", "jobs")
MIGRATIONS = ("chunkwise.dev", "v1alpha1", "datamigrations")


def migration(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "chunkwise.dev/v1alpha1", "kind": "DataMigration",
        "metadata": {"name": "customer-status", "namespace": "shop", "uid": "u-1",
                     "generation": 1},
        "spec": {"image": "shop:1", "migration": {"app": "shop", "name": "0002"},
                 "suspend": False, **spec},
    }
    if status is not None:
        body["status"] = status
    return body


@pytest_asyncio.fixture
async def api(kmock: Any) -> AsyncIterator[KubeApi]:
    async with aiohttp.ClientSession() as session:
        yield KubeApi(str(kmock.url), session)


def stored(kmock: Any, resource: tuple[str, str, str], name: str) -> dict[str, Any]:
    for key in kmock.objects:
        res, _, obj_name = key
        if (res.group, res.version, res.plural) == resource and obj_name == name:
            return _plain(kmock.objects[key])
    raise KeyError(name)


def _plain(value: Any) -> Any:
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def events(kmock: Any) -> list[tuple[str, str]]:
    return [(r.data["type"], r.data["reason"]) for r in kmock
            if r.method == "POST" and str(r.url.path).endswith("/events")]


async def put_migration(api: KubeApi, kmock: Any, body: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{kmock.url}/apis/chunkwise.dev/v1alpha1/namespaces/shop/"
                                "datamigrations", json=body) as response:
            assert response.status < 300


@pytest.mark.asyncio
async def test_create_makes_one_job_even_when_retried(api: KubeApi, kmock: Any) -> None:
    patch: dict[str, Any] = {}
    await start_run(api, migration(), patch, run=1)
    await start_run(api, migration(), {}, run=1)  # a restarted operator retries the handler
    job = stored(kmock, JOBS, "customer-status-run1")
    assert job["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert len([k for k in kmock.objects if k[0].plural == "jobs"]) == 1
    assert patch["status"]["phase"] == "Pending" and patch["status"]["run"] == 1
    assert patch["status"]["jobName"] == "customer-status-run1"
    assert events(kmock) == [("Normal", "JobCreated")]  # not twice


@pytest.mark.asyncio
async def test_created_suspended(api: KubeApi, kmock: Any) -> None:
    patch: dict[str, Any] = {}
    await start_run(api, migration(suspend=True), patch, run=1)
    assert stored(kmock, JOBS, "customer-status-run1")["spec"]["suspend"] is True
    assert patch["status"]["phase"] == "Suspended"


@pytest.mark.asyncio
async def test_suspend_and_resume_patch_the_job(api: KubeApi, kmock: Any) -> None:
    await start_run(api, migration(), {}, run=1)
    running = migration({"phase": "Running", "run": 1, "conditions": []})
    patch: dict[str, Any] = {}
    await spec_changed(api, running, {"suspend": False}, {"suspend": True}, patch)
    assert stored(kmock, JOBS, "customer-status-run1")["spec"]["suspend"] is True
    assert patch["status"]["phase"] == "Suspended"
    conditions = {c["type"]: c["status"] for c in patch["status"]["conditions"]}
    assert conditions["Suspended"] == "True"
    suspended = migration({**running["status"], **patch["status"]}, suspend=True)
    await spec_changed(api, suspended, {"suspend": True}, {"suspend": False}, {})
    assert stored(kmock, JOBS, "customer-status-run1")["spec"]["suspend"] is False
    assert events(kmock) == [("Normal", "JobCreated"), ("Normal", "Suspended"),
                             ("Normal", "Resumed")]


@pytest.mark.asyncio
async def test_job_states_become_phase_conditions_and_events(api: KubeApi, kmock: Any) -> None:
    body = migration({"phase": "Pending", "run": 1, "conditions": []})
    await put_migration(api, kmock, body)
    await start_run(api, body, {}, run=1)
    job = stored(kmock, JOBS, "customer-status-run1")
    job["status"] = {"active": 1}
    await job_changed(api, job)
    assert stored(kmock, MIGRATIONS, "customer-status")["status"]["phase"] == "Running"
    job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    await job_changed(api, job)
    status = stored(kmock, MIGRATIONS, "customer-status")["status"]
    assert status["phase"] == "Succeeded" and status["completedAt"]
    assert ("Normal", "Started") in events(kmock) and ("Normal", "Succeeded") in events(kmock)


@pytest.mark.asyncio
async def test_halt_then_spec_change_starts_a_new_run(api: KubeApi, kmock: Any) -> None:
    body = migration({"phase": "Running", "run": 1, "conditions": [],
                      "worker": {"state": "halted", "reason": "FailedRowsExceeded",
                                 "message": "11 rows failed, more than haltOn.failedRows=10"}})
    await put_migration(api, kmock, body)
    await start_run(api, body, {}, run=1)
    job = stored(kmock, JOBS, "customer-status-run1")
    job["status"] = {"conditions": [{
        "type": "Failed", "status": "True", "reason": "PodFailurePolicy",
        "message": "Container worker for pod shop/p failed with exit code 65 matching FailJob "
                   "rule at index 0"}]}
    await job_changed(api, job)
    status = stored(kmock, MIGRATIONS, "customer-status")["status"]
    assert status["phase"] == "Halted"
    halted = {c["type"]: c for c in status["conditions"]}["Halted"]
    assert halted["status"] == "True" and halted["reason"] == "FailedRowsExceeded"
    assert ("Warning", "Halted") in events(kmock)
    patch: dict[str, Any] = {}
    await spec_changed(api, migration(status, haltOn={"failedRows": 50}),
                       {"haltOn": {"failedRows": 10}}, {"haltOn": {"failedRows": 50}}, patch)
    run2 = stored(kmock, JOBS, "customer-status-run2")
    assert {e["name"]: e["value"] for e in run2["spec"]["template"]["spec"]["containers"][0]
            ["env"]}["CHUNKWISE_HALT_FAILED_ROWS"] == "50"
    assert patch["status"]["run"] == 2 and patch["status"]["phase"] == "Pending"
    # the old run's Job changing again is ignored now
    await job_changed(api, job)
    assert stored(kmock, MIGRATIONS, "customer-status")["status"]["run"] == 1  # not patched by us


@pytest.mark.asyncio
async def test_backoff_limit_failure_is_failed(api: KubeApi, kmock: Any) -> None:
    body = migration({"phase": "Running", "run": 1, "conditions": []})
    await put_migration(api, kmock, body)
    job = {"metadata": {"namespace": "shop", "labels": {
        "chunkwise.dev/datamigration": "customer-status", "chunkwise.dev/run": "1"}},
        "status": {"conditions": [{"type": "Failed", "status": "True",
                                   "reason": "BackoffLimitExceeded",
                                   "message": "Job has reached the specified backoff limit"}]}}
    await job_changed(api, job)
    status = stored(kmock, MIGRATIONS, "customer-status")["status"]
    assert status["phase"] == "Failed"
    assert {c["type"]: c for c in status["conditions"]}["Succeeded"]["reason"] == (
        "BackoffLimitExceeded")
    assert ("Warning", "Failed") in events(kmock)


@pytest.mark.asyncio
async def test_stall_check_marks_an_old_checkpoint(api: KubeApi, kmock: Any) -> None:
    body = migration({"phase": "Running", "run": 1, "conditions": [],
                      "progress": {"lastCheckpointAt": "2020-01-01T00:00:00Z"}},
                     stallAfter="5m")
    patch: dict[str, Any] = {}
    await check_stall(api, body, patch)
    stalled = {c["type"]: c for c in patch["status"]["conditions"]}["Stalled"]
    assert stalled["status"] == "True" and stalled["reason"] == "CheckpointTooOld"
    assert events(kmock) == [("Warning", "Stalled")]


@pytest.mark.asyncio
async def test_spec_change_while_running_is_deferred_with_an_event(api: KubeApi,
                                                                    kmock: Any) -> None:
    body = migration({"phase": "Running", "run": 1, "conditions": []})
    await spec_changed(api, body, {"batch": {"size": 1}}, {"batch": {"size": 2}}, {})
    assert events(kmock) == [("Normal", "SpecChangeDeferred")]
    assert not [k for k in kmock.objects if k[0].plural == "jobs"]
