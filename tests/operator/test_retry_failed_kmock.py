"""``spec.retryFailed``: a Succeeded DataMigration retries the rows its run recorded as
failed, as a new run whose Job tells the worker so (CHUNKWISE_RETRY_FAILED), with one pod
whatever the parallelism; the worker's summary becomes the Succeeded condition. Against
kmock, as tests/operator/test_reconcile_kmock.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chunkwise.contract import RETRIED_FAILED_ROWS, WorkerState
from chunkwise.operator import build_job, run_state_of
from chunkwise.operator.reconcile import job_changed, spec_changed, start_run
from tests.operator.test_reconcile_kmock import (
    JOBS,
    MIGRATIONS,
    Api,
    migration,
    put_migration,
    stored,
)

SUMMARY = ("retried 3, succeeded 3, failed again 0, dropped 0 (no longer matched todo); "
           "0 rows still recorded as failed")


@pytest.fixture
def api(kmock: Any) -> Api:
    kmock.resources["v1/pods"] = {}
    return Api(str(kmock.url).rstrip("/"))


def env_of(job: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]
            ["env"]}


def test_a_retry_job_is_one_pod_that_is_told_to_retry() -> None:
    body = migration(parallelism=3, retryFailed=True)
    job = build_job(body, run=2)
    assert env_of(job)["CHUNKWISE_RETRY_FAILED"] == "1"
    assert "CHUNKWISE_SHARDS" not in env_of(job)  # every shard's rows, in one process
    assert "completionMode" not in job["spec"] and job["spec"]["backoffLimit"] == 6
    run = build_job(migration(parallelism=3), run=1)
    assert "CHUNKWISE_RETRY_FAILED" not in env_of(run)
    assert run["spec"]["completionMode"] == "Indexed"


def test_the_workers_summary_is_the_succeeded_condition() -> None:
    complete = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    state = run_state_of(complete, {"state": WorkerState.DONE, "exitCode": 0,
                                    "reason": RETRIED_FAILED_ROWS, "message": SUMMARY})
    assert (state.phase, state.reason, state.message) == ("Succeeded", "FailedRowsRetried",
                                                          SUMMARY)


@pytest.mark.asyncio
async def test_retry_failed_on_a_succeeded_migration_starts_a_retry_run(api: Api,
                                                                       kmock: Any) -> None:
    body = migration({"phase": "Succeeded", "run": 1, "conditions": []}, parallelism=2)
    await put_migration(api, kmock, body)
    await api.call(start_run, body, {}, run=1)

    untouched: dict[str, Any] = {}  # a Succeeded run: nothing to run again
    await api.call(spec_changed, body, {"image": "shop:1"}, {"image": "shop:2"}, untouched)
    assert "status" not in untouched

    asked = migration(body["status"], parallelism=2, image="shop:2", retryFailed=True)
    patch: dict[str, Any] = {}
    await api.call(spec_changed, asked, {"image": "shop:1", "parallelism": 2},
                   {"image": "shop:2", "parallelism": 2, "retryFailed": True}, patch)
    assert patch["status"]["run"] == 2 and patch["status"]["phase"] == "Pending"
    job = stored(kmock, JOBS, "customer-status-run2")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "shop:2"
    assert env_of(job)["CHUNKWISE_RETRY_FAILED"] == "1"
    assert "completionMode" not in job["spec"]

    tuned: dict[str, Any] = {}  # tuning alone starts no second retry
    retrying = migration({**body["status"], **patch["status"]}, parallelism=2,
                         image="shop:2", retryFailed=True, batch={"size": 500})
    await api.call(spec_changed, retrying, {"batch": {"size": 1000}, "retryFailed": True},
                   {"batch": {"size": 500}, "retryFailed": True}, tuned)
    assert "run" not in tuned.get("status", {})

    # what the operator recorded of run 2, and what its worker said at the end
    await asyncio.to_thread(api.cluster.patch_status, "shop", "customer-status", {
        **patch["status"], "worker": {"state": "done", "exitCode": 0,
                                      "reason": RETRIED_FAILED_ROWS, "message": SUMMARY}})
    job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    await api.call(job_changed, job)
    status = stored(kmock, MIGRATIONS, "customer-status")["status"]
    assert status["phase"] == "Succeeded"
    succeeded = {c["type"]: c for c in status["conditions"]}["Succeeded"]
    assert (succeeded["reason"], succeeded["message"]) == ("FailedRowsRetried", SUMMARY)
