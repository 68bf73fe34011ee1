"""The operator's pure parts: the Job it builds, and status from a Job's state."""

from __future__ import annotations

import datetime
from typing import Any

from chunkwise.contract import Condition, Phase, WorkerState
from chunkwise.operator import build_job, job_name, run_state_of, status_for
from chunkwise.operator.conditions import set_condition, stall_status


def migration(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "chunkwise.dev/v1alpha1", "kind": "DataMigration",
        "metadata": {"name": "customer-status", "namespace": "shop", "uid": "u-1",
                     "generation": 3},
        "spec": {"image": "registry.example.com/shop:1.4.2",
                 "migration": {"app": "shop", "name": "0002_customer_status"},
                 "database": "default", "direction": "forward",
                 "batch": {"size": 2000, "targetDuration": "250ms"},
                 "haltOn": {"failedRows": 10, "failureRate": "0.05"}, **spec},
    }


def env_of(job: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]
            ["env"]}


def test_job_carries_the_spec_as_env_an_owner_and_the_failure_policy() -> None:
    job = build_job(migration(), run=2)
    assert job["metadata"]["name"] == "customer-status-run2"
    owner = job["metadata"]["ownerReferences"][0]
    assert owner == {"apiVersion": "chunkwise.dev/v1alpha1", "kind": "DataMigration",
                     "name": "customer-status", "uid": "u-1", "controller": True,
                     "blockOwnerDeletion": True}
    env = env_of(job)
    assert env["CHUNKWISE_APP"] == "shop" and env["CHUNKWISE_MIGRATION"] == "0002_customer_status"
    assert env["CHUNKWISE_RESOURCE"] == "shop/customer-status"
    assert env["CHUNKWISE_RUN"] == "2"  # its reports say so
    assert env["CHUNKWISE_BATCH_SIZE"] == "2000" and env["CHUNKWISE_TARGET_DURATION"] == "250ms"
    assert env["CHUNKWISE_HALT_FAILED_ROWS"] == "10"
    assert env["CHUNKWISE_HALT_FAILURE_RATE"] == "0.05"
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and rules[0]["onExitCodes"]["values"] == [64, 65]
    assert rules[1]["action"] == "Ignore"
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] == 6 and job["spec"]["suspend"] is False


def test_parallelism_makes_an_indexed_job_that_retries_each_shard_alone() -> None:
    job = build_job(migration(parallelism=4, backoffLimit=3), run=1)
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == \
        ("Indexed", 4, 4)
    assert spec["backoffLimitPerIndex"] == 3 and "backoffLimit" not in spec
    assert env_of(job)["CHUNKWISE_SHARDS"] == "4"
    assert spec["podFailurePolicy"]["rules"][0]["action"] == "FailJob"  # a halt stops all
    single = build_job(migration(parallelism=1), run=1)["spec"]
    assert "completionMode" not in single and "CHUNKWISE_SHARDS" not in env_of(
        build_job(migration(), run=1))


def test_the_shard_that_most_needs_a_person_speaks_for_the_run() -> None:
    from chunkwise.operator.conditions import worker_of

    def shard(code: int, reason: str) -> dict[str, Any]:
        return {"worker": {"state": "x", "exitCode": code, "reason": reason, "message": "m"}}

    assert worker_of({"worker": {"exitCode": 0, "reason": "Completed"}}) == {
        "exitCode": 0, "reason": "Completed"}
    halted = worker_of({"shards": {"0": shard(75, "Interrupted"), "1": shard(1, "Lost"),
                                   "2": shard(65, "FailedRowsExceeded"), "3": {"done": True}}})
    assert halted is not None and halted["reason"] == "FailedRowsExceeded"
    assert halted["message"] == "shard 2: m"
    failed = worker_of({"shards": {"0": shard(75, "Interrupted"), "1": shard(1, "Lost")}})
    assert failed is not None and failed["reason"] == "Lost"
    assert worker_of({"shards": {"0": shard(0, "Completed"), "1": shard(75, "I")}}) is None
    assert worker_of({"shards": [{"index": 0}]}) is None  # the old list form: no outcome


def test_the_template_is_a_pod_spec_merged_with_the_worker_container() -> None:
    secret_ref = {"name": "DATABASE_PASSWORD",
                  "valueFrom": {"secretKeyRef": {"name": "shop-db", "key": "password"}}}
    proxy = {"name": "cloud-sql-proxy", "image": "gcr.io/proxy:2", "restartPolicy": "Always",
             "args": ["--port=5432", "shop:db"]}
    ca = {"name": "db-ca", "secret": {"secretName": "shop-db-ca"}}
    job = build_job(migration(template={
        "metadata": {"labels": {"team": "shop"}, "annotations": {"note": "x"}},
        "spec": {"serviceAccountName": "shop-migrator", "nodeSelector": {"pool": "batch"},
                 "tolerations": [{"key": "batch", "operator": "Exists"}],
                 "initContainers": [proxy], "volumes": [ca],
                 "priorityClassName": "batch-low", "activeDeadlineSeconds": 86400,
                 "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
                                                "whenUnsatisfiable": "ScheduleAnyway"}],
                 "containers": [{"name": "worker", "env": [secret_ref],
                                 "envFrom": [{"secretRef": {"name": "shop-db-env"}}],
                                 "resources": {"limits": {"memory": "256Mi"}},
                                 "volumeMounts": [{"name": "db-ca", "mountPath": "/ca"}],
                                 "securityContext": {"readOnlyRootFilesystem": False}}]}},
        suspend=True, backoffLimit=2), run=1)
    pod = job["spec"]["template"]["spec"]
    (worker,) = pod["containers"]
    assert worker["image"] == "registry.example.com/shop:1.4.2"  # from spec.image
    assert worker["env"][-1] == secret_ref  # the user's env after ours: they may override
    assert worker["envFrom"] == [{"secretRef": {"name": "shop-db-env"}}]
    assert worker["resources"] == {"limits": {"memory": "256Mi"}}
    assert worker["volumeMounts"] == [{"name": "db-ca", "mountPath": "/ca"},
                                      {"name": "chunkwise-tmp", "mountPath": "/tmp"}]
    # the template's key wins, the other secure defaults stay
    assert worker["securityContext"] == {"allowPrivilegeEscalation": False,
                                         "readOnlyRootFilesystem": False,
                                         "capabilities": {"drop": ["ALL"]}}
    assert pod["initContainers"] == [proxy] and ca in pod["volumes"]
    assert pod["priorityClassName"] == "batch-low" and pod["activeDeadlineSeconds"] == 86400
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "zone"
    assert pod["serviceAccountName"] == "shop-migrator" and pod["nodeSelector"] == {"pool": "batch"}
    assert job["spec"]["template"]["metadata"]["labels"]["team"] == "shop"
    assert job["spec"]["template"]["metadata"]["annotations"] == {"note": "x"}
    assert job["spec"]["suspend"] is True and job["spec"]["backoffLimit"] == 2


def test_worker_pods_are_secure_unless_the_template_says_otherwise() -> None:
    pod = build_job(migration(), run=1)["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 65532,
                                      "runAsGroup": 65532,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]}}
    assert pod["volumes"] == [{"name": "chunkwise-tmp", "emptyDir": {}}]
    assert pod["automountServiceAccountToken"] is True  # the worker patches its status
    own = build_job(migration(template={"spec": {
        "securityContext": {"runAsUser": 1000, "runAsGroup": 1000},
        "volumes": [{"name": "scratch", "emptyDir": {}}],
        "containers": [{"name": "worker",
                        "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}]}]}}),
        run=1)["spec"]["template"]["spec"]
    assert own["securityContext"]["runAsUser"] == 1000
    assert own["securityContext"]["runAsNonRoot"] is True
    assert own["volumes"] == [{"name": "scratch", "emptyDir": {}}]  # their /tmp, not ours


def test_job_name_is_deterministic_and_fits_63_characters() -> None:
    long = "x" * 80
    assert job_name(long, 12) == "x" * 57 + "-run12"
    assert job_name("a", 1) == job_name("a", 1)


def job(conditions: list[dict[str, str]] | None = None, active: int = 0) -> dict[str, Any]:
    return {"status": {"conditions": conditions or [], "active": active}}


def test_run_states_from_the_job() -> None:
    assert run_state_of(job()).phase == "Pending"
    assert run_state_of(job(active=1)).phase == "Running"
    assert run_state_of(job([{"type": "Suspended", "status": "True"}])).phase == "Suspended"
    assert run_state_of(job([{"type": "Complete", "status": "True"}])).phase == "Succeeded"
    crashed = run_state_of(job([{"type": "Failed", "status": "True",
                                 "reason": "BackoffLimitExceeded", "message": "too many"}]))
    assert (crashed.phase, crashed.reason) == ("Failed", "BackoffLimitExceeded")


POLICY_FAILURE = {"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
                  "message": "Container worker for pod shop/x failed with exit code 65 "
                             "matching FailJob rule at index 0"}


def test_a_halt_is_read_from_the_workers_report_not_the_job_message() -> None:
    halted = run_state_of(job([POLICY_FAILURE]), {
        "state": WorkerState.HALTED, "exitCode": 65, "reason": "FailedRowsExceeded",
        "message": "11 rows failed"})
    assert (halted.phase, halted.reason, halted.message) == (
        "Halted", "FailedRowsExceeded", "11 rows failed")
    usage = run_state_of(job([POLICY_FAILURE]), {
        "state": WorkerState.FAILED, "exitCode": 64, "reason": "InvalidSettings",
        "message": "batch.size (CHUNKWISE_BATCH_SIZE): expected an integer, got 'x'"})
    assert (usage.phase, usage.reason) == ("Failed", "InvalidSettings")


def test_without_a_worker_report_the_jobs_own_reason_is_shown() -> None:
    """The text says exit code 65, but no worker said it halted: no halt reason is made up."""
    unreported = run_state_of(job([POLICY_FAILURE]), {"state": WorkerState.RUNNING, "reason": ""})
    assert (unreported.phase, unreported.reason) == ("Failed", "PodFailurePolicy")
    assert unreported.message == POLICY_FAILURE["message"]


def test_status_for_sets_conditions_and_one_event_per_transition() -> None:
    running = run_state_of(job(active=1))
    status, events = status_for({"phase": "Pending"}, running, 3, now="2026-11-21T10:00:00Z")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert status["phase"] == "Running" and status["observedGeneration"] == 3
    assert conditions["Succeeded"]["status"] == "Unknown"
    assert conditions["Progressing"]["status"] == "True"
    assert conditions["Progressing"]["reason"] == "Running"
    assert conditions["Halted"]["status"] == "False"
    assert [(e.type, e.reason) for e in events] == [("Normal", "Started")]
    again, no_events = status_for(status, running, 3, now="2026-11-21T10:05:00Z")
    assert no_events == []
    assert [c["lastTransitionTime"] for c in again["conditions"]] == [
        c["lastTransitionTime"] for c in status["conditions"]]
    suspended, events = status_for(status, run_state_of(job([{"type": "Suspended",
                                                             "status": "True"}])), 4)
    assert [(e.reason) for e in events] == ["Suspended"]
    resumed, events = status_for(suspended, running, 4)
    assert [(e.reason) for e in events] == ["Resumed"]
    done, events = status_for(resumed, run_state_of(job([{"type": "Complete",
                                                         "status": "True"}])), 4)
    assert done["phase"] == "Succeeded" and "completedAt" in done
    assert {c["type"]: c["status"] for c in done["conditions"]}["Succeeded"] == "True"
    assert [(e.type, e.reason) for e in events] == [("Normal", "Succeeded")]


def test_set_condition_keeps_transition_time_when_status_unchanged() -> None:
    first = set_condition([], Condition.STALLED, "False", "A", "a", 1, "t1")
    second = set_condition(first, Condition.STALLED, "False", "B", "b", 2, "t2")
    assert second[0]["lastTransitionTime"] == "t1" and second[0]["reason"] == "B"
    third = set_condition(second, Condition.STALLED, "True", "C", "c", 2, "t3")
    assert third[0]["lastTransitionTime"] == "t3"


def test_stall_is_marked_once_and_cleared_when_checkpoints_move() -> None:
    now = datetime.datetime(2026, 11, 21, 10, 10, tzinfo=datetime.UTC)
    status = {"phase": "Running", "conditions": [],
              "progress": {"lastCheckpointAt": "2026-11-21T10:00:00Z"}}
    patch, events = stall_status(status, 300, 1, now)
    assert patch is not None and [e.reason for e in events] == ["Stalled"]
    stalled = {**status, **patch}
    assert stall_status(stalled, 300, 1, now) == (None, [])
    fresh = {**stalled, "progress": {"lastCheckpointAt": "2026-11-21T10:09:59Z"}}
    patch, events = stall_status(fresh, 300, 1, now)
    assert patch is not None and [e.reason for e in events] == ["Unstalled"]
    assert stall_status({"phase": "Suspended"}, 300, 1, now) == (None, [])
    throttled = {**status, "throttle": {"reason": "ReplicationLag", "message": "lag",
                                         "since": "2026-11-21T10:00:00Z"}}
    assert stall_status(throttled, 300, 1, now) == (None, [])  # it waits on purpose


def test_pod_problem_names_the_pod_the_container_and_the_kubelets_reason() -> None:
    from chunkwise.operator.conditions import pod_problem

    waiting = {"metadata": {"name": "m-run1-abc"}, "status": {"containerStatuses": [
        {"name": "worker", "state": {"waiting": {"reason": "ImagePullBackOff",
                                                 "message": 'Back-off pulling image "x:9"'}}}]}}
    starting = {"metadata": {"name": "m-run1-def"}, "status": {"containerStatuses": [
        {"name": "worker", "state": {"waiting": {"reason": "ContainerCreating"}}}]}}
    problem = pod_problem([starting, waiting])
    assert problem is not None and problem.reason == "ImagePullBackOff"
    assert problem.message == ('pod m-run1-abc cannot start its worker container: '
                               'Back-off pulling image "x:9"')
    assert pod_problem([starting]) is None and pod_problem([]) is None


def test_oom_problem_names_the_newest_killed_pod_its_limit_and_what_to_change() -> None:
    from chunkwise.operator.conditions import oom_problem

    def pod(name: str, created: str, reason: str, limit: str | None) -> dict[str, Any]:
        resources = {"limits": {"memory": limit}} if limit else {}
        return {"metadata": {"name": name, "creationTimestamp": created},
                "spec": {"containers": [{"name": "worker", "resources": resources}]},
                "status": {"containerStatuses": [{"name": "worker", "state": {"terminated": {
                    "reason": reason, "exitCode": 137 if reason == "OOMKilled" else 1}}}]}}

    older = pod("m-run1-a", "2026-01-01T00:00:01Z", "OOMKilled", "32Mi")
    newer = pod("m-run1-b", "2026-01-01T00:00:09Z", "OOMKilled", "48Mi")
    crashed = pod("m-run1-c", "2026-01-01T00:00:20Z", "Error", "48Mi")
    assert oom_problem([older, crashed, newer]) is None  # the newest pod crashed otherwise
    problem = oom_problem([older, newer])
    assert problem is not None and (problem.phase, problem.reason) == ("Failed", "OOMKilled")
    assert problem.message == (
        "pod m-run1-b: the worker container was OOMKilled (exit code 137): it used more than "
        "its memory limit of 48Mi; raise spec.template.spec.containers[worker].resources."
        "limits.memory, or lower spec.batch.size and spec.batch.maxSize so a batch holds "
        "fewer rows in memory")
    unlimited = oom_problem([pod("m-run1-d", "2026-01-01T00:00:01Z", "OOMKilled", None)])
    assert unlimited is not None and "the node ran out of memory (it has no memory limit: " \
        "set spec.template.spec.containers[worker].resources.limits.memory)" in unlimited.message
    assert oom_problem([crashed]) is None and oom_problem([]) is None


def test_job_problem_is_the_newest_failed_create_of_the_runs_job() -> None:
    from chunkwise.operator.conditions import job_problem

    def event(job: str, when: str, message: str, reason: str = "FailedCreate") -> dict[str, Any]:
        return {"metadata": {"name": f"{job}.{when}"}, "reason": reason, "message": message,
                "lastTimestamp": when, "involvedObject": {"kind": "Job", "name": job}}

    events = [event("m-run2", "2026-01-01T00:00:05Z", "Error creating: quota"),
              event("m-run2", "2026-01-01T00:00:09Z", "Error creating: PodSecurity"),
              event("m-run1", "2026-01-01T00:00:20Z", "Error creating: older run"),
              event("m-run2", "2026-01-01T00:00:30Z", "Created pod", "SuccessfulCreate")]
    problem = job_problem("m-run2", events)
    assert problem is not None and problem.reason == "FailedCreate"
    assert problem.phase == "Pending"
    assert problem.message == "Job m-run2 cannot create its pod: Error creating: PodSecurity"
    assert job_problem("m-run3", events) is None


def test_verified_follows_the_workers_check_once_the_run_succeeded() -> None:
    from chunkwise.operator.conditions import RunState

    done = RunState(Phase.SUCCEEDED, "Completed", "every row was processed")
    check = {"rowsRemaining": 3, "failedRows": 2, "missedRows": 1, "upToKey": 9,
             "checkedAt": "2026-01-01T00:00:00Z"}
    patch, _ = status_for({"verification": check}, done, 1)
    verified = {c["type"]: c for c in patch["conditions"]}["Verified"]
    assert (verified["status"], verified["reason"]) == ("False", "RowsMissed")
    assert verified["message"].startswith("1 rows up to the high-water mark still match todo")
    shards = {"0": {"verification": {**check, "rowsRemaining": 2, "missedRows": 0}},
              "1": {"verification": {**check, "rowsRemaining": 0, "failedRows": 0,
                                     "missedRows": 0}}}
    patch, _ = status_for({"shards": shards}, done, 1)
    verified = {c["type"]: c for c in patch["conditions"]}["Verified"]
    assert (verified["status"], verified["reason"]) == ("True", "NoRowsMissed")
    assert "the 2 rows still matching todo are the recorded failed rows" in verified["message"]
    patch, _ = status_for({}, done, 1)  # no todo filter: nothing checked, no condition
    assert "Verified" not in {c["type"] for c in patch["conditions"]}
    running = RunState(Phase.RUNNING, "Running", "")
    patch, _ = status_for({"conditions": [verified]}, running, 2)  # a new run
    again = {c["type"]: c for c in patch["conditions"]}["Verified"]
    assert (again["status"], again["reason"]) == ("Unknown", "NotVerified")


def test_throttled_follows_the_workers_throttle_while_running_with_one_event_each_way() -> None:
    from chunkwise.operator.conditions import throttle_status

    now = "2026-11-22T10:00:00Z"
    throttle = {"reason": "ReplicationLag", "since": now,
                "message": "replication lag 12.3s > 5s (throttle.replicationLag)"}
    running: dict[str, Any] = {"phase": "Running", "conditions": [], "throttle": throttle}
    patch, events = throttle_status(running, 3, now)
    assert patch is not None
    [condition] = patch["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "Throttled", "True", "ReplicationLag")
    assert condition["message"] == ("replication lag 12.3s > 5s (throttle.replicationLag): "
                                    "the worker waits before its next batch")
    assert [(e.type, e.reason) for e in events] == [("Warning", "Throttled")]
    throttled = {**running, "conditions": patch["conditions"]}
    fresher = {**throttled, "throttle": {**throttle, "message": "replication lag 14s > 5s"}}
    assert throttle_status(fresher, 3, now) == (None, [])  # same reason: no write
    cleared, events = throttle_status({**throttled, "throttle": None}, 3, now)
    assert cleared is not None and cleared["conditions"][0]["status"] == "False"
    assert [e.reason for e in events] == ["Unthrottled"]
    assert throttle_status({"phase": "Succeeded", "throttle": throttle}, 3, now) == (None, [])
    shard = {"phase": "Running", "shards": {"1": {"throttle": throttle}}}
    patch, _ = throttle_status(shard, 3, now)
    assert patch is not None and patch["conditions"][0]["message"].startswith(
        "shard 1: replication lag 12.3s")


def test_a_run_that_ends_is_no_longer_throttled() -> None:
    from chunkwise.operator.conditions import RunState, status_for

    throttled = {"phase": "Running", "conditions": [
        {"type": "Throttled", "status": "True", "reason": "ReplicationLag", "message": "x"}]}
    patch, _ = status_for(throttled, RunState(Phase.SUCCEEDED, "Completed", "done"), 2)
    condition = next(c for c in patch["conditions"] if c["type"] == "Throttled")
    assert (condition["status"], condition["reason"]) == ("False", "NotRunning")


def test_each_condition_says_why_it_has_its_own_status() -> None:
    """Kubernetes convention: a condition's message explains that condition. A failed run's
    worker error belongs to Succeeded and Progressing, not to Suspended=False and
    Halted=False; a succeeded run's 'every row was processed' not to Suspended."""
    from chunkwise.operator.conditions import RunState

    failed = RunState(Phase.FAILED, "InvalidConfiguration", "direction: backward runs reverse=")
    done = RunState(Phase.SUCCEEDED, "Completed", "every row was processed")
    running = RunState(Phase.RUNNING, "Running", "the worker is processing batches")
    halted = RunState(Phase.HALTED, "FailedRowsExceeded", "11 rows failed")
    said = {}
    for outcome in (failed, done, running, halted):
        patch, _ = status_for({}, outcome, 1)
        said[outcome.phase] = {c["type"]: (c["status"], c["reason"], c["message"])
                               for c in patch["conditions"]}
    for phase in (Phase.FAILED, Phase.SUCCEEDED, Phase.RUNNING):
        assert said[phase]["Halted"][:2] == ("False", "NotHalted")
        assert "spec.haltOn" in said[phase]["Halted"][2]
        assert said[phase]["Suspended"][:2] == ("False", "NotSuspended")
        assert "suspend" in said[phase]["Suspended"][2]
    assert said[Phase.FAILED]["Succeeded"] == ("False", "InvalidConfiguration",
                                                 "direction: backward runs reverse=")
    assert said[Phase.SUCCEEDED]["Suspended"][2] == "the run has ended; nothing to suspend"
    assert said[Phase.RUNNING]["Suspended"][2] == "spec.suspend is false: the run goes on"
    assert said[Phase.HALTED]["Halted"] == ("True", "FailedRowsExceeded", "11 rows failed")
    assert said[Phase.HALTED]["Suspended"][2] == "the run has ended; nothing to suspend"


def test_the_worker_writes_its_final_report_where_the_kubelet_reads_it() -> None:
    """The container's terminationMessagePath, Kubernetes' default unless the template
    sets one, and the same path in the worker's env."""
    worker = build_job(migration(), run=1)["spec"]["template"]["spec"]["containers"][0]
    assert worker["terminationMessagePath"] == "/dev/termination-log"
    assert env_of(build_job(migration(), run=1))["CHUNKWISE_TERMINATION_LOG"] == \
        "/dev/termination-log"
    own = build_job(migration(template={"spec": {"containers": [
        {"name": "worker", "terminationMessagePath": "/tmp/verdict"}]}}), run=1)
    assert own["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] == \
        "/tmp/verdict"
    assert env_of(own)["CHUNKWISE_TERMINATION_LOG"] == "/tmp/verdict"
