"""The operator's handlers against kmock, the kopf project's Kubernetes API emulator.

The reconcile functions are what the kopf handlers call; here they talk HTTP to an
emulated API server through the same ``kubernetes`` client the operator uses (in a
thread, as kopf runs sync handlers). Events are collected instead of posted by
``kopf.event``; the e2e tests cover kopf's watching, patching and Event posting on a
real control plane.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Mapping
from typing import Any, cast

import aiohttp
import kopf
import kubernetes.client
import pytest

from chunkwise.operator.cluster import Cluster
from chunkwise.operator.conditions import Event
from chunkwise.operator.reconcile import (
    check_stall,
    job_changed,
    job_deleted,
    spec_changed,
    start_run,
)

from .versioned_kmock import VersionedEmulator

#: objects have a resourceVersion, and a write that names one is refused when it is stale
pytestmark = pytest.mark.kmock(cls=VersionedEmulator)

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


class Api:
    """The operator's view of kmock: a Cluster, and the Events the handlers posted."""

    def __init__(self, url: str) -> None:
        self.cluster = Cluster.from_configuration(kubernetes.client.Configuration(host=url),
                                                  attempts=1)
        self.posted: list[tuple[str, str]] = []

    def post(self, body: Mapping[str, Any], event: Event) -> None:
        self.posted.append((event.type, event.reason))

    async def call(self, handler: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        """Run a sync reconcile function off the loop that kmock answers on."""
        await asyncio.to_thread(functools.partial(handler, self.cluster, self.post, *args,
                                                  **kwargs))


@pytest.fixture
def api(kmock: Any) -> Api:
    kmock.resources["v1/pods"] = {}  # an empty list until a test puts a pod
    return Api(str(kmock.url).rstrip("/"))


def stored(kmock: Any, resource: tuple[str, str, str], name: str) -> dict[str, Any]:
    for key in kmock.objects:
        res, _, obj_name = key
        if (res.group, res.version, res.plural) == resource and obj_name == name:
            found: dict[str, Any] = _plain(kmock.objects[key])
            return found
    raise KeyError(name)


def _plain(value: Any) -> Any:
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


async def put_migration(api: Api, kmock: Any, body: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{kmock.url}/apis/chunkwise.dev/v1alpha1/namespaces/shop/"
                                "datamigrations", json=body) as response:
            assert response.status < 300


@pytest.mark.asyncio
async def test_create_makes_one_job_even_when_retried(api: Api, kmock: Any) -> None:
    patch: dict[str, Any] = {}
    await api.call(start_run, migration(), patch, run=1)
    await api.call(start_run, migration(), {}, run=1)  # a restarted operator retries the handler
    job = stored(kmock, JOBS, "customer-status-run1")
    assert job["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert len([k for k in kmock.objects if k[0].plural == "jobs"]) == 1
    assert patch["status"]["phase"] == "Pending" and patch["status"]["run"] == 1
    assert patch["status"]["jobName"] == "customer-status-run1"
    assert api.posted == [("Normal", "JobCreated")]  # not twice


@pytest.mark.asyncio
async def test_created_suspended(api: Api, kmock: Any) -> None:
    patch: dict[str, Any] = {}
    await api.call(start_run, migration(suspend=True), patch, run=1)
    assert stored(kmock, JOBS, "customer-status-run1")["spec"]["suspend"] is True
    assert patch["status"]["phase"] == "Suspended"


@pytest.mark.asyncio
async def test_suspend_and_resume_patch_the_job(api: Api, kmock: Any) -> None:
    await api.call(start_run, migration(), {}, run=1)
    running = migration({"phase": "Running", "run": 1, "conditions": []})
    patch: dict[str, Any] = {}
    await api.call(spec_changed, running, {"suspend": False}, {"suspend": True}, patch)
    assert stored(kmock, JOBS, "customer-status-run1")["spec"]["suspend"] is True
    assert patch["status"]["phase"] == "Suspended"
    conditions = {c["type"]: c["status"] for c in patch["status"]["conditions"]}
    assert conditions["Suspended"] == "True"
    suspended = migration({**running["status"], **patch["status"]}, suspend=True)
    await api.call(spec_changed, suspended, {"suspend": True}, {"suspend": False}, {})
    assert stored(kmock, JOBS, "customer-status-run1")["spec"]["suspend"] is False
    assert api.posted == [("Normal", "JobCreated"), ("Normal", "Suspended"),
                             ("Normal", "Resumed")]


@pytest.mark.asyncio
async def test_job_states_become_phase_conditions_and_events(api: Api, kmock: Any) -> None:
    body = migration({"phase": "Pending", "run": 1, "conditions": []})
    await put_migration(api, kmock, body)
    await api.call(start_run, body, {}, run=1)
    job = stored(kmock, JOBS, "customer-status-run1")
    job["status"] = {"active": 1}
    await api.call(job_changed, job)
    assert stored(kmock, MIGRATIONS, "customer-status")["status"]["phase"] == "Running"
    job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    await api.call(job_changed, job)
    status = stored(kmock, MIGRATIONS, "customer-status")["status"]
    assert status["phase"] == "Succeeded" and status["completedAt"]
    assert ("Normal", "Started") in api.posted and ("Normal", "Succeeded") in api.posted


@pytest.mark.asyncio
async def test_halt_then_spec_change_starts_a_new_run(api: Api, kmock: Any) -> None:
    body = migration({"phase": "Running", "run": 1, "conditions": [],
                      "worker": {"state": "halted", "exitCode": 65,
                                 "reason": "FailedRowsExceeded",
                                 "message": "11 rows failed, more than haltOn.failedRows=10"}})
    await put_migration(api, kmock, body)
    await api.call(start_run, body, {}, run=1)
    job = stored(kmock, JOBS, "customer-status-run1")
    job["status"] = {"conditions": [{
        "type": "Failed", "status": "True", "reason": "PodFailurePolicy",
        "message": "Container worker for pod shop/p failed with exit code 65 matching FailJob "
                   "rule at index 0"}]}
    await api.call(job_changed, job)
    status = stored(kmock, MIGRATIONS, "customer-status")["status"]
    assert status["phase"] == "Halted"
    halted = {c["type"]: c for c in status["conditions"]}["Halted"]
    assert halted["status"] == "True" and halted["reason"] == "FailedRowsExceeded"
    assert ("Warning", "Halted") in api.posted
    patch: dict[str, Any] = {}
    await api.call(spec_changed, migration(status, haltOn={"failedRows": 50}),
                       {"haltOn": {"failedRows": 10}}, {"haltOn": {"failedRows": 50}}, patch)
    run2 = stored(kmock, JOBS, "customer-status-run2")
    assert {e["name"]: e["value"] for e in run2["spec"]["template"]["spec"]["containers"][0]
            ["env"]}["CHUNKWISE_HALT_FAILED_ROWS"] == "50"
    assert patch["status"]["run"] == 2 and patch["status"]["phase"] == "Pending"
    # the old run's Job changing again is ignored now
    await api.call(job_changed, job)
    assert stored(kmock, MIGRATIONS, "customer-status")["status"]["run"] == 1  # not patched by us


@pytest.mark.asyncio
async def test_backoff_limit_failure_is_failed(api: Api, kmock: Any) -> None:
    body = migration({"phase": "Running", "run": 1, "conditions": []})
    await put_migration(api, kmock, body)
    job = {"metadata": {"namespace": "shop", "labels": {
        "chunkwise.dev/datamigration": "customer-status", "chunkwise.dev/run": "1"}},
        "status": {"conditions": [{"type": "Failed", "status": "True",
                                   "reason": "BackoffLimitExceeded",
                                   "message": "Job has reached the specified backoff limit"}]}}
    await api.call(job_changed, job)
    status = stored(kmock, MIGRATIONS, "customer-status")["status"]
    assert status["phase"] == "Failed"
    assert {c["type"]: c for c in status["conditions"]}["Succeeded"]["reason"] == (
        "BackoffLimitExceeded")
    assert ("Warning", "Failed") in api.posted


@pytest.mark.asyncio
async def test_a_run_whose_pods_were_oom_killed_fails_saying_which_limit(api: Api,
                                                                        kmock: Any) -> None:
    body = migration({"phase": "Running", "run": 1, "conditions": []})
    await put_migration(api, kmock, body)
    labels = {"chunkwise.dev/datamigration": "customer-status", "chunkwise.dev/run": "1"}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{kmock.url}/api/v1/namespaces/shop/pods", json={
                "metadata": {"name": "customer-status-run1-x", "namespace": "shop",
                             "labels": labels},
                "spec": {"containers": [{"name": "worker", "image": "shop:1", "resources": {
                    "limits": {"memory": "32Mi"}}}]},
                "status": {"containerStatuses": [{
                    "name": "worker", "image": "shop:1", "imageID": "", "ready": False,
                    "restartCount": 0, "state": {"terminated": {
                        "reason": "OOMKilled", "exitCode": 137}}}]}}) as response:
            assert response.status < 300
    job = {"metadata": {"namespace": "shop", "labels": labels},
           "status": {"conditions": [{"type": "Failed", "status": "True",
                                      "reason": "BackoffLimitExceeded"}]}}
    await api.call(job_changed, job)
    status = stored(kmock, MIGRATIONS, "customer-status")["status"]
    succeeded = {c["type"]: c for c in status["conditions"]}["Succeeded"]
    assert (status["phase"], succeeded["reason"]) == ("Failed", "OOMKilled")
    assert "memory limit of 32Mi" in succeeded["message"]
    assert ("Warning", "Failed") in api.posted


async def put_pod(kmock: Any, name: str, container_status: dict[str, Any], run: str = "1",
                  shard: str | None = None, created: str = "2026-01-01T00:00:00Z") -> None:
    """A pod of the run as the kubelet reports it: its worker container's status."""
    labels = {"chunkwise.dev/datamigration": "customer-status", "chunkwise.dev/run": run}
    annotations = {} if shard is None else {"batch.kubernetes.io/job-completion-index": shard}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{kmock.url}/api/v1/namespaces/shop/pods", json={
                "metadata": {"name": name, "namespace": "shop", "labels": labels,
                             "annotations": annotations, "creationTimestamp": created},
                "spec": {"containers": [{"name": "worker", "image": "shop:1"}]},
                "status": {"containerStatuses": [{
                    "name": "worker", "image": "shop:1", "imageID": "", "ready": False,
                    "restartCount": 0, **container_status}]}}) as response:
            assert response.status < 300


def failed_job(reason: str = "PodFailurePolicy", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "customer-status-run1", "namespace": "shop", "labels": {
        "chunkwise.dev/datamigration": "customer-status", "chunkwise.dev/run": "1"}},
        "spec": spec, "status": {"conditions": [{"type": "Failed", "status": "True",
                                                 "reason": reason, "message": "..."}]}}


@pytest.mark.asyncio
async def test_a_halt_whose_final_patch_was_lost_is_halted_from_the_termination_message(
        api: Api, kmock: Any) -> None:
    """The API server was away when the worker halted: its last status patch never
    arrived (the status still says running, at 15%), but the kubelet kept its final
    report from the termination message. Halted, with exit code 65 and the final figures
    in the status, not Failed (PodFailurePolicy)."""
    body = migration({"phase": "Running", "run": 1, "conditions": [],
                      "worker": {"state": "running", "pod": "customer-status-run1-x",
                                 "reason": "", "message": ""},
                      "progress": {"rowsProcessed": 3100, "rowsEstimated": 20000}})
    await put_migration(api, kmock, body)
    report = {"state": "halted", "exitCode": 65, "reason": "FailedRowsExceeded",
              "message": "11 rows failed, more than haltOn.failedRows=10",
              "rowsProcessed": 19800, "rowsEstimated": 20000}
    await put_pod(kmock, "customer-status-run1-x", {"state": {"terminated": {
        "exitCode": 65, "reason": "Error", "message": json.dumps(report)}}})
    await api.call(job_changed, failed_job())
    status = stored(kmock, MIGRATIONS, "customer-status")["status"]
    halted = {c["type"]: c for c in status["conditions"]}["Halted"]
    assert (status["phase"], halted["status"], halted["reason"]) == (
        "Halted", "True", "FailedRowsExceeded")
    assert status["worker"]["exitCode"] == 65
    assert status["worker"]["pod"] == "customer-status-run1-x"
    assert (status["progress"]["rowsProcessed"], status["progress"]["percent"]) == (19800, 99)
    assert api.posted == [("Warning", "Halted")]


@pytest.mark.asyncio
async def test_a_shard_whose_final_patch_was_lost_speaks_from_its_termination_message(
        api: Api, kmock: Any) -> None:
    body = migration({"phase": "Running", "run": 1, "conditions": [], "shards": {
        "0": {"index": 0, "worker": {"state": "done", "exitCode": 0, "reason": "Completed",
                                     "message": "ok"}},
        "1": {"index": 1, "worker": {"state": "running"}}}}, parallelism=2)
    await put_migration(api, kmock, body)
    report = {"state": "halted", "exitCode": 65, "reason": "FailedRowsExceeded",
              "message": "11 > 10", "shard": 1}
    await put_pod(kmock, "customer-status-run1-1-b", {"state": {"terminated": {
        "exitCode": 65, "message": json.dumps(report)}}}, shard="1")
    await put_pod(kmock, "customer-status-run1-0-a", {"state": {"terminated": {
        "exitCode": 0, "message": "not JSON: a log's tail"}}}, shard="0")
    await api.call(job_changed, failed_job(completionMode="Indexed", completions=2))
    status = stored(kmock, MIGRATIONS, "customer-status")["status"]
    halted = {c["type"]: c for c in status["conditions"]}["Halted"]
    assert (status["phase"], halted["message"]) == ("Halted", "shard 1: 11 > 10")
    assert status["shards"]["1"]["worker"]["exitCode"] == 65
    assert status["shards"]["0"]["worker"]["reason"] == "Completed"  # its own, kept


@pytest.mark.asyncio
async def test_stall_check_marks_an_old_checkpoint(api: Api, kmock: Any) -> None:
    body = migration({"phase": "Running", "run": 1, "conditions": [],
                      "progress": {"lastCheckpointAt": "2020-01-01T00:00:00Z"}},
                     stallAfter="5m")
    await put_migration(api, kmock, body)
    await api.call(check_stall, body)
    stalled = {c["type"]: c for c in stored(kmock, MIGRATIONS, "customer-status")["status"]
               ["conditions"]}["Stalled"]
    assert stalled["status"] == "True" and stalled["reason"] == "CheckpointTooOld"
    assert api.posted == [("Warning", "Stalled")]


@pytest.mark.asyncio
async def test_spec_change_while_running_retunes_or_is_deferred(api: Api,
                                                                 kmock: Any) -> None:
    """Tunables reach the running worker (Retuning); anything else waits for a new run."""
    body = migration({"phase": "Running", "run": 1, "conditions": []})
    await api.call(spec_changed, body, {"batch": {"size": 1}}, {"batch": {"size": 2}}, {})
    assert api.posted == [("Normal", "Retuning")]
    api.posted.clear()
    await api.call(spec_changed, body, {"template": {}},
                   {"template": {"metadata": {"labels": {"a": "b"}}}}, {})
    assert api.posted == [("Normal", "SpecChangeDeferred")]
    assert not [k for k in kmock.objects if k[0].plural == "jobs"]


@pytest.mark.asyncio
async def test_a_retune_the_worker_applied_is_announced_once(api: Api, kmock: Any) -> None:
    from chunkwise.operator.reconcile import announce_retune

    tuning = {"generation": 4, "pod": "m-run1-x", "appliedAt": "2026-01-01T00:00:00Z",
              "changes": {"batch.maxRowsPerSecond": {"from": "1000", "to": "20000"}}}
    body = migration({"phase": "Running", "run": 1, "tuning": tuning})
    await put_migration(api, kmock, body)
    await api.call(announce_retune, body)
    assert api.posted == [("Normal", "Retuned")]
    annotations = stored(kmock, MIGRATIONS, "customer-status")["metadata"]["annotations"]
    assert annotations["chunkwise.dev/retuned-generation"] == "4"
    body["metadata"]["annotations"] = annotations
    await api.call(announce_retune, body)  # the next event: already said
    assert api.posted == [("Normal", "Retuned")]


@pytest.mark.asyncio
async def test_a_job_made_before_a_crash_and_finished_since_is_read_on_restart(
        api: Api, kmock: Any) -> None:
    """The operator created the Job, died before recording the run, and the Job finished
    while it was down: the retried create handler finds the Job and reads its outcome,
    instead of leaving the migration Pending for ever."""
    await api.call(start_run, migration(), {}, run=1)  # the Job is made; the patch is lost
    key = next(k for k in kmock.objects if k[0].plural == "jobs")
    finished = _plain(kmock.objects[key])
    finished["status"] = {"succeeded": 1, "conditions": [
        {"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]}
    kmock.objects[key] = finished
    api.posted.clear()
    patch: dict[str, Any] = {}
    await api.call(start_run, migration(), patch, run=1)  # kopf retries the create handler
    assert patch["status"]["phase"] == "Succeeded" and patch["status"]["run"] == 1
    assert len([k for k in kmock.objects if k[0].plural == "jobs"]) == 1
    assert api.posted == [("Normal", "Succeeded")]


@pytest.mark.asyncio
async def test_a_job_that_ended_while_the_operator_was_down_keeps_its_completed_at(
        api: Api, kmock: Any) -> None:
    """The retried create handler finds the Job ended: completedAt is when the Job says it
    ended, not None (no later Job event comes to fill it in); and a migration recorded
    ended without completedAt gets it from the next Job event."""
    await api.call(start_run, migration(), {}, run=1)  # the Job is made; the patch is lost
    key = next(k for k in kmock.objects if k[0].plural == "jobs")
    finished = _plain(kmock.objects[key])
    finished["status"] = {"succeeded": 1, "completionTime": "2026-01-02T03:04:05Z",
                          "conditions": [{"type": "Complete", "status": "True"}]}
    kmock.objects[key] = finished
    patch: dict[str, Any] = {}
    await api.call(start_run, migration(), patch, run=1)  # kopf retries the create handler
    assert patch["status"]["phase"] == "Succeeded"
    assert patch["status"]["completedAt"] == "2026-01-02T03:04:05Z"

    lost = migration({"phase": "Succeeded", "run": 1, "conditions": [], "completedAt": None})
    await put_migration(api, kmock, lost)
    await api.call(job_changed, finished)
    status = stored(kmock, MIGRATIONS, "customer-status")["status"]
    assert status["completedAt"] == "2026-01-02T03:04:05Z"


@pytest.mark.parametrize(("phase", "recreated"), [("Running", True), ("Succeeded", False),
                                                  ("Halted", False)])
@pytest.mark.asyncio
async def test_a_deleted_job_is_made_again_only_while_its_run_goes_on(
        api: Api, kmock: Any, phase: str, recreated: bool) -> None:
    body = migration({"phase": phase, "run": 1, "conditions": []})
    await put_migration(api, kmock, body)
    job = {"metadata": {"name": "customer-status-run1", "namespace": "shop", "labels": {
        "chunkwise.dev/datamigration": "customer-status", "chunkwise.dev/run": "1"}}}
    await api.call(job_deleted, job)  # the Job is gone from the API (never created here)
    jobs = [k for k in kmock.objects if k[0].plural == "jobs"]
    assert len(jobs) == (1 if recreated else 0)
    assert api.posted == ([("Warning", "JobRecreated")] if recreated else [])


@pytest.mark.parametrize(("reason", "replaced"), [("FailedCreate", True),
                                                  ("ImagePullBackOff", True),
                                                  ("JobCreated", False)])
@pytest.mark.asyncio
async def test_a_spec_change_replaces_a_run_whose_pod_cannot_start(
        api: Api, kmock: Any, reason: str, replaced: bool) -> None:
    """The user fixes the image or the template of a run stuck in Pending: the fix needs a
    new Job, and the stuck one never ran a batch. A run that is merely starting is left."""
    stuck = {"phase": "Pending", "run": 1, "conditions": [
        {"type": "Progressing", "status": "False" if replaced else "True", "reason": reason,
         "message": "..."}]}
    await api.call(start_run, migration(stuck), {}, run=1)
    body = migration(stuck)
    await put_migration(api, kmock, body)
    await api.call(spec_changed, body, {"image": "shop:typo"}, {"image": "shop:1"}, {})
    jobs = sorted(k[2] for k in kmock.objects
                  if k[0].plural == "jobs" and not kmock.objects[k].deleted)
    if not replaced:
        assert jobs == ["customer-status-run1"]
        assert api.posted == [("Normal", "JobCreated"), ("Normal", "SpecChangeDeferred")]
        return
    assert jobs == ["customer-status-run2"]  # the new run recorded, then the old Job gone
    status = stored(kmock, MIGRATIONS, "customer-status")["status"]
    assert status["run"] == 2 and status["jobName"] == "customer-status-run2"
    assert api.posted[-2:] == [("Normal", "JobCreated"), ("Normal", "RunReplaced")]


@pytest.mark.asyncio
@pytest.mark.parametrize("change,replaced", [
    ({"image": "shop:2"}, True),  # the upgrade guide's way to move a run to a new image
    ({"batch": {"size": 2000}}, False),  # a tunable: the resumed worker reads it live
])
async def test_resuming_after_a_change_beyond_tuning_runs_the_new_spec(
        api: Api, kmock: Any, change: dict[str, Any], replaced: bool) -> None:
    """Suspend, change the spec, resume: a Job's pod template cannot change, so an image
    or template change needs run 2 (from the checkpoint); a tunable does not."""
    await api.call(start_run, migration(), {}, run=1)
    suspended = migration({"phase": "Suspended", "run": 1, "conditions": []}, suspend=True)
    old_spec = dict(suspended["spec"])
    resumed = migration(suspended["status"], **change)  # suspend: False
    await put_migration(api, kmock, resumed)
    await api.call(spec_changed, resumed, old_spec, dict(resumed["spec"]), {})
    jobs = sorted(k[2] for k in kmock.objects
                  if k[0].plural == "jobs" and not kmock.objects[k].deleted)
    if not replaced:
        assert jobs == ["customer-status-run1"]
        assert stored(kmock, JOBS, "customer-status-run1")["spec"]["suspend"] is False
        assert ("Normal", "Resumed") in api.posted
        return
    assert jobs == ["customer-status-run2"]
    job = stored(kmock, JOBS, "customer-status-run2")
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "shop:2"
    assert job["spec"]["suspend"] is False
    status = stored(kmock, MIGRATIONS, "customer-status")["status"]
    assert status["run"] == 2 and status["jobName"] == "customer-status-run2"
    assert api.posted[-2:] == [("Normal", "JobCreated"), ("Normal", "RunReplaced")]
    assert ("Normal", "Resumed") not in api.posted


_FORBIDDEN = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden",
              "code": 403, "message": 'jobs.batch is forbidden: User "system:serviceaccount:'
              'chunkwise:chunkwise" cannot create resource "jobs" in API group "batch" in '
              'the namespace "shop"'}


@pytest.mark.asyncio
async def test_a_refusal_retrying_cannot_fix_is_permanent_and_names_the_missing_rule(
        api: Api, kmock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 403 (or a 422) comes back the same however often it is retried: kopf is told to
    stop (PermanentError, not a retry every 5 s for ever), and the DataMigration says what
    was refused, as Progressing=False and a Warning Event naming the verb, the resource
    and the RBAC rule the operator lacks."""
    import kopf

    from chunkwise.operator import handlers

    kmock["post /apis/batch/v1/namespaces/shop/jobs"] << 403 << _FORBIDDEN
    monkeypatch.setattr(handlers._connection, "cluster", api.cluster)
    said: list[Event] = []
    monkeypatch.setattr(handlers, "post", lambda body, event: said.append(event))
    await put_migration(api, kmock, migration())
    with pytest.raises(kopf.PermanentError) as raised:
        created: Any = handlers.created  # kopf's decorator types it for kopf's call
        await asyncio.to_thread(created, body=migration(), patch={})
    rule = '{apiGroups: ["batch"], resources: ["jobs"], verbs: ["create"]}'
    assert "the API server refused to create jobs.batch shop/customer-status-run1 (HTTP 403 " \
        f"Forbidden): the operator's ServiceAccount lacks the RBAC rule {rule}; jobs.batch " \
        "is forbidden: User" in str(raised.value)
    progressing = {c["type"]: c for c in stored(kmock, MIGRATIONS, "customer-status")
                   ["status"]["conditions"]}["Progressing"]
    assert (progressing["status"], progressing["reason"]) == ("False", "Forbidden")
    assert progressing["message"] == str(raised.value)
    assert said == [Event("Warning", "Forbidden", str(raised.value))]


@pytest.mark.asyncio
async def test_a_spec_change_after_a_refused_create_starts_the_run(api: Api,
                                                                   kmock: Any) -> None:
    """kopf does not retry a create handler that failed for good: once the RBAC is fixed,
    changing the spec starts run 1."""
    refused = {"conditions": [{"type": "Progressing", "status": "False", "reason": "Forbidden",
                               "message": "the API server refused to create jobs.batch"}]}
    patch: dict[str, Any] = {}
    await api.call(spec_changed, migration(refused), {"image": "shop:1"}, {"image": "shop:2"},
                   patch)
    assert [k[2] for k in kmock.objects if k[0].plural == "jobs"] == ["customer-status-run1"]
    assert patch["status"]["run"] == 1 and patch["status"]["phase"] == "Pending"


def migration_timers(status: Mapping[str, Any]) -> list[Callable[..., None]]:
    """The operator's kopf timers on DataMigrations whose ``when`` holds for ``status``."""
    from kopf._core.intents.handlers import TimerHandler

    import chunkwise.operator.handlers  # noqa: F401  (registers them)

    timers: list[Callable[..., None]] = []
    for handler in kopf.get_default_registry()._spawning.get_all_handlers():
        when: Any = handler.when  # kopf types it for its own call, with every kwarg
        if isinstance(handler, TimerHandler) and handler.selector is not None \
                and handler.selector.any_name == "datamigrations" \
                and (when is None or when(status=status)):
            timers.append(cast(Callable[..., None], handler.fn))
    return timers


@pytest.mark.asyncio
async def test_a_failed_event_on_the_jobs_last_transition_is_made_up_for_by_the_timer(
        api: Api, kmock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """kopf runs event handlers with errors ignored: the Job's Complete event met an API
    server that was away, and no event comes after it. The operator's timers, which kopf
    runs at its start and every interval (and retries), read the Job and converge."""
    from chunkwise.operator import handlers

    monkeypatch.setattr(handlers._connection, "cluster", api.cluster)
    monkeypatch.setattr(handlers, "post", api.post)
    kmock.resources["v1/events"] = {}  # none: the pods timer looks for FailedCreate
    body = migration({"phase": "Running", "run": 1, "conditions": []})
    await put_migration(api, kmock, body)
    await api.call(start_run, body, {}, run=1)
    key = next(k for k in kmock.objects if k[0].plural == "jobs")
    complete = _plain(kmock.objects[key])
    complete["status"] = {"succeeded": 1, "completionTime": "2026-01-02T03:04:05Z",
                          "conditions": [{"type": "Complete", "status": "True"}]}
    kmock.objects[key] = complete
    reads = api.cluster.get_migration

    def away_once(namespace: str, name: str) -> dict[str, Any] | None:
        monkeypatch.setattr(api.cluster, "get_migration", reads)
        raise kopf.TemporaryError("get datamigrations: the API server did not answer")

    monkeypatch.setattr(api.cluster, "get_migration", away_once)
    job_event: Any = handlers.job_event
    with pytest.raises(kopf.TemporaryError):  # kopf logs it, and never calls it again
        await asyncio.to_thread(job_event, body=complete, type="MODIFIED")
    assert stored(kmock, MIGRATIONS, "customer-status")["status"]["phase"] == "Running"
    timers = migration_timers(body["status"])
    assert timers
    for timer in timers:
        await asyncio.to_thread(timer, body=stored(kmock, MIGRATIONS, "customer-status"),
                                patch={}, logger=None)
    status = stored(kmock, MIGRATIONS, "customer-status")["status"]
    assert status["phase"] == "Succeeded"
    assert status["completedAt"] == "2026-01-02T03:04:05Z"  # the Job's, not the timer's
    assert {c["type"]: c["status"] for c in status["conditions"]}["Succeeded"] == "True"
    assert api.posted[-1] == ("Normal", "Succeeded")
    assert not migration_timers(status)  # an ended run has no timer left


@pytest.mark.asyncio
async def test_a_throttle_that_ended_while_no_one_watched_is_cleared_by_the_timer(
        api: Api, kmock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's patch that ends its throttle landed while the operator's watch was
    down (after an outage kopf watches again only after its backoff, up to 21 s, and
    sees what it missed as a listing, not as a change): no DataMigration event ran
    announce_throttle. The timers converge Throttled from a fresh read, as they do the
    phase from the Job."""
    from chunkwise.operator import handlers

    monkeypatch.setattr(handlers._connection, "cluster", api.cluster)
    monkeypatch.setattr(handlers, "post", api.post)
    kmock.resources["v1/events"] = {}  # none: the pods timer looks for FailedCreate
    throttled = {"type": "Throttled", "status": "True", "reason": "ThrottleQuery",
                 "message": "throttle.query returned 1 (> 0 waits): the worker waits "
                            "before its next batch",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"}
    reading = {"reason": "ThrottleQuery", "message": "throttle.query returned 1 (> 0 waits)",
               "since": "2026-01-01T00:00:00Z"}
    # what kopf last saw (its watch is down): the worker still throttled
    seen = migration({"phase": "Running", "run": 1, "conditions": [throttled],
                      "throttle": reading, "progress": {"rowsProcessed": 500}})
    await put_migration(api, kmock, {**seen, "status": {**seen["status"], "throttle": None}})
    seen["metadata"]["resourceVersion"] = "0"  # older than the worker's patch
    await api.call(start_run, seen, {}, run=1)
    key = next(k for k in kmock.objects if k[0].plural == "jobs")
    running = _plain(kmock.objects[key])
    running["status"] = {"active": 1}
    kmock.objects[key] = running
    for timer in migration_timers(seen["status"]):
        await asyncio.to_thread(timer, body=seen, patch={}, logger=None)
    status = stored(kmock, MIGRATIONS, "customer-status")["status"]
    assert {c["type"]: c["status"] for c in status["conditions"]}["Throttled"] == "False"
    assert ("Normal", "Unthrottled") in api.posted


@pytest.mark.asyncio
async def test_a_job_deleted_while_no_one_watched_is_made_again_by_the_resync(
        api: Api, kmock: Any) -> None:
    from chunkwise.operator.reconcile import resync

    body = migration({"phase": "Running", "run": 1, "conditions": []})
    await put_migration(api, kmock, body)
    await api.call(resync, body)
    assert [k[2] for k in kmock.objects if k[0].plural == "jobs"] == ["customer-status-run1"]
    assert api.posted == [("Warning", "JobRecreated")]


@pytest.mark.asyncio
async def test_a_timer_with_a_stale_body_does_not_undo_a_finished_run(
        api: Api, kmock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The timers had the DataMigration as it was while Running (an OOMKilled pod, an old
    checkpoint); job_changed has written Failed since. Replayed, they write nothing: each
    write carries the resourceVersion it was decided from, and a Failed run stays Failed
    (kopf applies a timer's patch as it is, so the test does too)."""
    from chunkwise.operator import handlers

    monkeypatch.setattr(handlers._connection, "cluster", api.cluster)
    monkeypatch.setattr(handlers, "post", api.post)
    kmock.resources["v1/events"] = {}
    body = migration({"phase": "Running", "run": 1, "conditions": [],
                      "progress": {"lastCheckpointAt": "2020-01-01T00:00:00Z"}})
    await put_migration(api, kmock, body)
    await api.call(start_run, body, {}, run=1)
    await put_pod(kmock, "customer-status-run1-x", {"state": {"terminated": {
        "reason": "OOMKilled", "exitCode": 137}}})
    stale = stored(kmock, MIGRATIONS, "customer-status")
    await api.call(job_changed, failed_job("BackoffLimitExceeded"))
    ended = stored(kmock, MIGRATIONS, "customer-status")["status"]
    assert (ended["phase"], ended["conditions"][0]["reason"]) == ("Failed", "OOMKilled")
    for timer in migration_timers(stale["status"]):
        patch: dict[str, Any] = {}
        await asyncio.to_thread(timer, body=stale, patch=patch, logger=None)
        if patch.get("status"):  # what kopf does with a timer's patch
            await asyncio.to_thread(api.cluster.patch_status, "shop", "customer-status",
                                    patch["status"])
    status = stored(kmock, MIGRATIONS, "customer-status")["status"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert status["phase"] == "Failed"
    assert (conditions["Succeeded"]["status"], conditions["Progressing"]["status"],
            conditions["Stalled"]["status"]) == ("False", "False", "False")
    assert status == ended


@pytest.mark.asyncio
async def test_an_ended_phase_is_left_only_by_a_new_run(api: Api, kmock: Any) -> None:
    """A status write decided while the run went on (a suspend that raced the run's end)
    is dropped once the run has ended; a spec change that starts run 2 goes through."""
    from chunkwise.operator.reconcile import decided, write_status

    body = migration({"phase": "Running", "run": 1, "conditions": []})
    await put_migration(api, kmock, body)
    running = stored(kmock, MIGRATIONS, "customer-status")
    await api.call(write_status, running, decided(running, {"phase": "Succeeded"}))
    await api.call(write_status, running, decided(running, {"phase": "Suspended"}))
    assert stored(kmock, MIGRATIONS, "customer-status")["status"]["phase"] == "Succeeded"
    await api.call(write_status, running,
                   decided(running, {"phase": "Pending", "run": 2}))
    status = stored(kmock, MIGRATIONS, "customer-status")["status"]
    assert (status["phase"], status["run"]) == ("Pending", 2)


@pytest.mark.asyncio
async def test_an_oom_kill_is_seen_on_any_shard_and_named_by_its_shard(
        api: Api, kmock: Any) -> None:
    """An Indexed Job's shards start their pods in the same second; shard 1's retry, the
    newest pod of all, must not hide that shard 0's pod was OOMKilled."""
    from chunkwise.operator.reconcile import check_pods

    body = migration({"phase": "Running", "run": 1, "conditions": []}, parallelism=2)
    await put_migration(api, kmock, body)
    await put_pod(kmock, "customer-status-run1-0-a", {"state": {"terminated": {
        "reason": "OOMKilled", "exitCode": 137}}}, shard="0", created="2026-01-01T00:00:00Z")
    await put_pod(kmock, "customer-status-run1-1-b", {"state": {"terminated": {
        "reason": "Error", "exitCode": 1}}}, shard="1", created="2026-01-01T00:00:00Z")
    await put_pod(kmock, "customer-status-run1-1-c", {"state": {"running": {}}}, shard="1",
                  created="2026-01-01T00:00:12Z")
    await api.call(check_pods, stored(kmock, MIGRATIONS, "customer-status"))
    status = stored(kmock, MIGRATIONS, "customer-status")["status"]
    progressing = {c["type"]: c for c in status["conditions"]}["Progressing"]
    assert (status["phase"], progressing["reason"]) == ("Running", "OOMKilled")
    assert progressing["message"].startswith(
        "shard 0 (pod customer-status-run1-0-a): the worker container was OOMKilled")
    assert api.posted == [("Warning", "OOMKilled")]


@pytest.mark.asyncio
async def test_a_sharded_runs_progress_is_summed_by_the_operator_and_never_lowered(
        api: Api, kmock: Any) -> None:
    from chunkwise.operator.reconcile import sum_progress

    def shard(rows: int, rate: int, state: str = "running") -> dict[str, Any]:
        return {"worker": {"state": state}, "done": state == "done", "progress": {
            "rowsProcessed": rows, "rowsEstimated": 1000, "rowsPerSecond": rate,
            "batches": rows // 100, "failedRows": 1, "lockWaitSeconds": 0.25,
            "lastCheckpointAt": f"2026-01-01T00:00:0{rows // 100}Z"}}

    body = migration({"phase": "Running", "run": 1, "conditions": [],
                      "shards": {"0": shard(300, 50), "1": shard(500, 100)}}, parallelism=2)
    await put_migration(api, kmock, body)
    await api.call(sum_progress, stored(kmock, MIGRATIONS, "customer-status"))
    progress = stored(kmock, MIGRATIONS, "customer-status")["status"]["progress"]
    assert progress == {"rowsProcessed": 800, "rowsEstimated": 2000, "percent": 40,
                        "percentText": "40%", "rowsPerSecond": 150, "etaSeconds": 8,
                        "eta": "8s", "batches": 8, "failedRows": 2, "lockWaitSeconds": 0.5,
                        "lastCheckpointAt": "2026-01-01T00:00:05Z"}
    # an entry that went back (no shard's own does; say one was written by hand): the
    # run's total stays where it was
    async with aiohttp.ClientSession() as session:
        async with session.patch(
                f"{kmock.url}/apis/chunkwise.dev/v1alpha1/namespaces/shop/datamigrations/"
                "customer-status/status", json={"status": {"shards": {
                    "1": shard(400, 100)}}}) as response:
            assert response.status < 300
    await api.call(sum_progress, stored(kmock, MIGRATIONS, "customer-status"))
    assert stored(kmock, MIGRATIONS, "customer-status")["status"]["progress"][
        "rowsProcessed"] == 800


def refusal(message: str, verb: str = "create") -> Any:
    """The ApiRefused a 403 with the API server's ``message`` becomes."""
    from kubernetes.client.exceptions import ApiException

    from chunkwise.operator.cluster import ApiRefused

    exc = ApiException(status=403, reason="Forbidden")
    exc.body = json.dumps({"kind": "Status", "code": 403, "reason": "Forbidden",
                           "message": message})
    return ApiRefused(verb, "jobs", "batch", "shop", "customer-status-run1", exc)


def test_a_403_blames_rbac_only_when_rbac_said_no() -> None:
    """An admission webhook's 403 is the webhook's word, not a missing RBAC rule."""
    webhook = refusal('admission webhook "policy.example.com" denied the request: jobs '
                      'need a team label')
    assert "RBAC" not in webhook.message
    assert 'admission webhook "policy.example.com" denied the request: jobs need a team ' \
        "label" in webhook.message
    rbac = refusal('jobs.batch is forbidden: User "system:serviceaccount:chunkwise:chunkwise" '
                   'cannot create resource "jobs" in API group "batch" in the namespace "shop"')
    assert "the operator's ServiceAccount lacks the RBAC rule {apiGroups: [\"batch\"], " \
        "resources: [\"jobs\"], verbs: [\"create\"]}" in rbac.message


@pytest.mark.asyncio
async def test_a_refused_create_is_tried_again_by_the_timer_not_only_on_a_spec_change(
        api: Api, kmock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The chart's RoleBinding landed a moment after the DataMigration (or a webhook was
    not ready): the create was refused with a 403 that does not last. The operator tries
    again at its next check, without waiting for someone to change the spec."""
    from chunkwise.operator import handlers

    monkeypatch.setattr(handlers._connection, "cluster", api.cluster)
    monkeypatch.setattr(handlers, "post", api.post)
    create_job = api.cluster.create_job

    def not_yet(job: Mapping[str, Any]) -> bool:
        monkeypatch.setattr(api.cluster, "create_job", create_job)  # bound now
        raise refusal('jobs.batch is forbidden: User "system:serviceaccount:chunkwise:'
                      'chunkwise" cannot create resource "jobs" in API group "batch"')

    monkeypatch.setattr(api.cluster, "create_job", not_yet)
    await put_migration(api, kmock, migration())
    created: Any = handlers.created
    with pytest.raises(kopf.PermanentError):  # kopf does not retry it
        await asyncio.to_thread(created, body=stored(kmock, MIGRATIONS, "customer-status"),
                                patch={})
    refused = stored(kmock, MIGRATIONS, "customer-status")
    assert refused["status"]["conditions"][0]["reason"] == "Forbidden"
    for timer in migration_timers(refused["status"]):
        await asyncio.to_thread(timer, body=stored(kmock, MIGRATIONS, "customer-status"),
                                patch={}, logger=None)
    assert [k[2] for k in kmock.objects if k[0].plural == "jobs"] == ["customer-status-run1"]
    status = stored(kmock, MIGRATIONS, "customer-status")["status"]
    assert (status["run"], status["phase"]) == (1, "Pending")


@pytest.mark.asyncio
async def test_a_replaced_runs_job_is_deleted_even_if_the_first_delete_failed(
        api: Api, kmock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Resuming after a new image replaces run 1's Job by run 2's: recorded, then the old
    Job deleted. The delete met an API server that was away; kopf retried the handler,
    which by then saw run 2 and had nothing to replace. Run 1's suspended Job must not
    stay for ever: the next check deletes it."""
    from chunkwise.operator import handlers

    monkeypatch.setattr(handlers._connection, "cluster", api.cluster)
    monkeypatch.setattr(handlers, "post", api.post)
    kmock.resources["v1/events"] = {}
    await api.call(start_run, migration(suspend=True), {}, run=1)
    suspended = migration({"phase": "Suspended", "run": 1, "conditions": []}, suspend=True)
    old_spec = dict(suspended["spec"])
    await put_migration(api, kmock, migration(suspended["status"], image="shop:2"))
    delete_job = api.cluster.delete_job

    def away_once(namespace: str, name: str) -> None:
        monkeypatch.setattr(api.cluster, "delete_job", delete_job)
        raise kopf.TemporaryError("delete jobs.batch: the API server did not answer")

    monkeypatch.setattr(api.cluster, "delete_job", away_once)
    updated: Any = handlers.updated
    new_spec = dict(stored(kmock, MIGRATIONS, "customer-status")["spec"])
    with pytest.raises(kopf.TemporaryError):
        await asyncio.to_thread(updated, body=stored(kmock, MIGRATIONS, "customer-status"),
                                old=old_spec, new=new_spec, patch={})
    await asyncio.to_thread(updated, body=stored(kmock, MIGRATIONS, "customer-status"),
                            old=old_spec, new=new_spec, patch={})  # kopf's retry
    status = stored(kmock, MIGRATIONS, "customer-status")["status"]
    assert status["run"] == 2
    for timer in migration_timers(status):
        await asyncio.to_thread(timer, body=stored(kmock, MIGRATIONS, "customer-status"),
                                patch={}, logger=None)
    jobs = sorted(k[2] for k in kmock.objects
                  if k[0].plural == "jobs" and not kmock.objects[k].deleted)
    assert jobs == ["customer-status-run2"]


@pytest.mark.asyncio
async def test_a_report_from_an_earlier_runs_pod_is_not_taken_for_this_runs(
        api: Api, kmock: Any) -> None:
    """Run 1's pod, stopping after run 2 had started (its grace period, its final patch
    retried), wrote its report over run 2's. Run 2 halted and its own final patch was
    lost: the verdict is run 2's (its pod's termination message), not run 1's
    interruption."""
    labels = {"chunkwise.dev/datamigration": "customer-status", "chunkwise.dev/run": "2"}
    body = migration({"phase": "Running", "run": 2, "conditions": [], "worker": {
        "state": "interrupted", "exitCode": 75, "reason": "Interrupted", "run": 1,
        "message": "stopped after a committed batch (SIGTERM)",
        "pod": "customer-status-run1-x"}})
    await put_migration(api, kmock, body)
    report = {"state": "halted", "exitCode": 65, "reason": "FailedRowsExceeded", "run": 2,
              "message": "11 rows failed, more than haltOn.failedRows=10"}
    await put_pod(kmock, "customer-status-run2-y", {"state": {"terminated": {
        "exitCode": 65, "message": json.dumps(report)}}}, run="2")
    job = failed_job()
    job["metadata"].update(name="customer-status-run2", labels=labels)
    await api.call(job_changed, job)
    status = stored(kmock, MIGRATIONS, "customer-status")["status"]
    assert (status["phase"], status["worker"]["exitCode"], status["worker"]["run"]) == (
        "Halted", 65, 2)


@pytest.mark.asyncio
async def test_a_crd_default_added_since_the_job_was_made_does_not_replace_it_on_resume(
        api: Api, kmock: Any) -> None:
    """An upgrade's CRD gives a new field a default (spec.retryFailed: false), and the API
    server shows it in every DataMigration's spec: the Job a resumed run needs is the same
    Job, so it is resumed, not replaced by a new run."""
    await api.call(start_run, migration(suspend=True), {}, run=1)
    suspended = migration({"phase": "Suspended", "run": 1, "conditions": []}, suspend=True,
                          retryFailed=False)
    old_spec = dict(suspended["spec"])
    resumed = migration(suspended["status"], retryFailed=False)  # suspend: False
    await put_migration(api, kmock, resumed)
    await api.call(spec_changed, resumed, old_spec, dict(resumed["spec"]), {})
    jobs = sorted(k[2] for k in kmock.objects
                  if k[0].plural == "jobs" and not kmock.objects[k].deleted)
    assert jobs == ["customer-status-run1"]
    assert stored(kmock, JOBS, "customer-status-run1")["spec"]["suspend"] is False
    assert ("Normal", "Resumed") in api.posted


@pytest.mark.asyncio
async def test_a_job_of_an_earlier_chunkwise_is_judged_by_its_spec_digest(
        api: Api, kmock: Any) -> None:
    """A Job made before the job digest carries only the spec's digest: a new image while
    it was suspended still replaces it on resume."""
    await api.call(start_run, migration(suspend=True), {}, run=1)
    key = next(k for k in kmock.objects if k[0].plural == "jobs")
    older = _plain(kmock.objects[key])
    del older["metadata"]["annotations"]["chunkwise.dev/job-digest"]
    kmock.objects[key] = older
    suspended = migration({"phase": "Suspended", "run": 1, "conditions": []}, suspend=True)
    resumed = migration(suspended["status"], image="shop:2")
    await put_migration(api, kmock, resumed)
    await api.call(spec_changed, resumed, dict(suspended["spec"]), dict(resumed["spec"]), {})
    jobs = sorted(k[2] for k in kmock.objects
                  if k[0].plural == "jobs" and not kmock.objects[k].deleted)
    assert jobs == ["customer-status-run2"]


@pytest.mark.asyncio
async def test_a_run_that_completed_with_failed_rows_says_so_in_succeeded(
        api: Api, kmock: Any) -> None:
    """Issue 37, item 3: `Completed: every row was processed` read as if nothing had failed
    while 2 rows were recorded as failed and left unchanged."""
    body = migration({"phase": "Running", "run": 1, "conditions": [],
                      "worker": {"state": "done", "exitCode": 0, "reason": "Completed",
                                 "message": "all rows processed, but 2 of them failed"},
                      "progress": {"rowsProcessed": 100, "rowsEstimated": 100,
                                   "failedRows": 2}})
    await put_migration(api, kmock, body)
    job = failed_job()
    job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    await api.call(job_changed, job)
    status = stored(kmock, MIGRATIONS, "customer-status")["status"]
    succeeded = {c["type"]: c for c in status["conditions"]}["Succeeded"]
    assert (status["phase"], succeeded["status"], succeeded["reason"]) == (
        "Succeeded", "True", "CompletedWithFailedRows")
    assert succeeded["message"].startswith(
        "every row was processed, but 2 failed: recorded with their error and not changed; "
        "list them with manage.py chunkwise_status APP --failed")


@pytest.mark.asyncio
async def test_a_sharded_runs_progress_is_written_at_most_every_2_s(api: Api,
                                                                     kmock: Any) -> None:
    """Each shard patches its entry about every 2 s: N shards made N operator writes as
    often (the design allows one per 2 s per migration). The sum that says every shard is
    done is written at once."""
    from chunkwise.operator.reconcile import sum_progress

    def shards(*rows: int, done: bool = False) -> dict[str, Any]:
        worker = {"state": "done", "exitCode": 0} if done else {"state": "running"}
        return {str(i): {"worker": worker, "done": done,
                         "progress": {"rowsProcessed": n, "rowsEstimated": 1000}}
                for i, n in enumerate(rows)}

    async def shard_patch(entries: dict[str, Any]) -> None:
        async with aiohttp.ClientSession() as session:
            async with session.patch(
                    f"{kmock.url}/apis/chunkwise.dev/v1alpha1/namespaces/shop/"
                    "datamigrations/customer-status/status",
                    json={"status": {"shards": entries}}) as response:
                assert response.status < 300

    def rows() -> int:
        return int(stored(kmock, MIGRATIONS, "customer-status")["status"]["progress"][
            "rowsProcessed"])

    memo: dict[str, Any] = {}
    clock = iter([100.0, 101.0, 102.5, 102.6]).__next__
    await put_migration(api, kmock, migration({"phase": "Running", "run": 1, "conditions": [],
                                               "shards": shards(100, 100)}, parallelism=2))
    for entries, expected in ((None, 200), (shards(200, 100), 200), (shards(200, 200), 400),
                              (shards(1000, 1000, done=True), 2000)):
        if entries:
            await shard_patch(entries)
        await api.call(sum_progress, stored(kmock, MIGRATIONS, "customer-status"), memo,
                       clock)
        assert rows() == expected


@pytest.mark.asyncio
async def test_a_field_a_crd_upgrade_defaults_does_not_restart_an_ended_run(
        api: Api, kmock: Any) -> None:
    """After an upgrade whose CRD gives a new field a default (spec.retryFailed: false),
    the API server shows it on every DataMigration and kopf's record of the last handled
    spec lacks it: that made every Halted or Failed migration start a new run (found in
    review). A real change still does."""
    spec = {"haltOn": {"failedRows": 10}, "batch": {"size": 1000}}
    body = migration({"phase": "Halted", "run": 1, "conditions": []}, **spec)
    await put_migration(api, kmock, body)
    defaulted = {**spec, "retryFailed": False, "dryRun": False,
                 "batch": {"size": 1000, "targetDuration": "500ms"}}
    patch: dict[str, Any] = {}
    await api.call(spec_changed, migration(body["status"], **defaulted), spec, defaulted,
                   patch)
    assert [key for key in kmock.objects if key[0].plural == "jobs"] == [] and patch == {}
    await api.call(spec_changed, migration(body["status"], **defaulted), spec,
                   {**defaulted, "retryFailed": True}, patch)
    await api.call(spec_changed, migration(body["status"], **defaulted), spec,
                   {**defaulted, "haltOn": {"failedRows": 50}}, patch)
    assert stored(kmock, JOBS, "customer-status-run2")


@pytest.mark.asyncio
async def test_a_pod_that_cannot_pull_its_image_keeps_the_run_pending_at_each_resync(
        api: Api, kmock: Any) -> None:
    """The Job counts a pod that cannot pull its image as active: the resync's read of
    the Job turned the Pending run check_pods had found stuck back to Running, at every
    interval (the e2e run found it). Once the pod runs, Running it is."""
    stuck = {"phase": "Pending", "run": 1, "conditions": [
        {"type": "Progressing", "status": "False", "reason": "ImagePullBackOff",
         "message": 'Back-off pulling image "shop:typo"'}]}
    await put_migration(api, kmock, migration(stuck))
    await put_pod(kmock, "customer-status-run1-x", {"state": {"waiting": {
        "reason": "ImagePullBackOff", "message": 'Back-off pulling image "shop:typo"'}}})
    job = failed_job()
    job["status"] = {"active": 1}
    await api.call(job_changed, job)
    assert stored(kmock, MIGRATIONS, "customer-status")["status"]["phase"] == "Pending"
    async with aiohttp.ClientSession() as session:  # the kubelet pulled it after all
        async with session.delete(f"{kmock.url}/api/v1/namespaces/shop/pods/"
                                  "customer-status-run1-x") as response:
            assert response.status < 300
    await put_pod(kmock, "customer-status-run1-y", {"state": {"running": {}}})
    await api.call(job_changed, job)
    assert stored(kmock, MIGRATIONS, "customer-status")["status"]["phase"] == "Running"
