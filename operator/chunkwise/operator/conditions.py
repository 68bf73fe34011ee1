"""Status in Kubernetes style: conditions, a display phase, and what changed (for Events).

Pure functions: given the current status and what the Job says, compute the new status
and the Events to post. The handlers only fetch, call these, and write.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from chunkwise.contract import (
    RETRIED_FAILED_ROWS,
    WORKER_CONTAINER,
    Condition,
    ExitCode,
    JobCondition,
    Phase,
    ProgressStatus,
    WorkerState,
    WorkerStatus,
    format_utc,
    parse_utc,
    throttle_of,
    utc_now_text,
)
from chunkwise.engine import format_duration

__all__ = ["COMPLETED_WITH_FAILED_ROWS", "COMPLETION_INDEX", "DRY_RUN_COMPLETED", "FAILED_CREATE",
           "OOM_KILLED", "STUCK", "Event", "RunState", "ended_at", "final_report", "final_reports",
           "find_condition",
           "job_problem", "oom_problem", "pod_problem", "run_state_of", "set_condition",
           "shard_of", "shards_progress", "stall_status", "status_for", "throttle_status",
           "verification_of", "with_failed_rows", "worker_of"]

#: why a container waits that no amount of waiting fixes (the kubelet's reasons)
_CONTAINER_STUCK = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName",
                    "CreateContainerConfigError", "CreateContainerError")
#: the Job controller's Event when the API server refuses the run's pod (admission: Pod
#: Security, quota, LimitRange, a webhook); it retries with backoff, and says so only there
FAILED_CREATE = "FailedCreate"
#: a dry run's worker says so; the plan is in status.plan and nothing was written
DRY_RUN_COMPLETED = "DryRunCompleted"
#: the kubelet's reason for a container the kernel killed at its cgroup's memory limit
OOM_KILLED = "OOMKilled"
#: the reasons a run's pod cannot start: a spec change replaces such a run at once
STUCK = (*_CONTAINER_STUCK, FAILED_CREATE)
#: the Job controller's annotation (and label) on each pod of an Indexed Job: its shard
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


@dataclass(frozen=True)
class RunState:
    """Where a run stands, as read from its Job and the worker's own report."""

    phase: Phase
    reason: str
    message: str


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


def _job_condition(job: Mapping[str, Any], kind: JobCondition) -> Mapping[str, Any] | None:
    for condition in job.get("status", {}).get("conditions", []) or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition  # type: ignore[no-any-return]
    return None


def ended_at(job: Mapping[str, Any]) -> str | None:
    """When the Job ended, as it says: ``completionTime`` once complete, else the time its
    Complete or Failed condition became true; None while it runs. Written as Kubernetes
    writes times (the client's models say ``+00:00`` where the API server says ``Z``)."""
    completed = job.get("status", {}).get("completionTime")
    for kind in (JobCondition.COMPLETE, JobCondition.SUCCESS_CRITERIA_MET, JobCondition.FAILED,
                 JobCondition.FAILURE_TARGET):
        condition = _job_condition(job, kind)
        if not completed and condition is not None:
            completed = condition.get("lastTransitionTime")
    return format_utc(parse_utc(str(completed))) if completed else None


def final_report(status: Mapping[str, Any], shard: str | None = None) -> WorkerStatus:
    """The report with an exit code that this run's worker (or shard) wrote, else {}: a
    report an earlier run's pod wrote late (it says its run) is not this run's."""
    entry = status.get("worker") if shard is None else \
        ((status.get("shards") or {}).get(shard) or {}).get("worker")
    if not isinstance(entry, Mapping) or "exitCode" not in entry or not _this_runs(status,
                                                                                   entry):
        return {}
    return cast(WorkerStatus, entry)


def _this_runs(status: Mapping[str, Any], report: Mapping[str, Any]) -> bool:
    """Whether ``report`` is of the status's current run (a report from a worker before
    reports said their run is taken to be)."""
    return report.get("run") is None or str(report["run"]) == str(status.get("run"))


def worker_of(status: Mapping[str, Any]) -> WorkerStatus | None:
    """What the worker said of the run: ``status.worker`` for one shard; with shards, the
    shard outcome that most needs a person (a halt, then bad usage, then any other
    failure), its message prefixed with the shard. A report from an earlier run's pod
    (one that stopped late, after this run had started) is ignored."""
    if status.get("worker"):
        own = _this_runs(status, status["worker"])
        return cast(WorkerStatus, status["worker"]) if own else None
    shards = status.get("shards")
    if not isinstance(shards, Mapping):
        return None
    reports = [(index, entry["worker"]) for index, entry in sorted(shards.items())
               if isinstance(entry, Mapping) and entry.get("worker")
               and _this_runs(status, entry["worker"])]
    stopped = [(index, report) for index, report in reports
               if report.get("exitCode") not in (None, ExitCode.DONE, ExitCode.INTERRUPTED)]
    for wanted in (ExitCode.HALTED, ExitCode.USAGE, None):
        for index, report in stopped:
            if wanted is None or report.get("exitCode") == wanted:
                return cast(WorkerStatus, {**report, "message":
                                           f"shard {index}: {report.get('message', '')}"})
    return None


#: a run that completed with rows recorded as failed: Succeeded says so, since those rows
#: were skipped, not changed, and the next release may need them
COMPLETED_WITH_FAILED_ROWS = "CompletedWithFailedRows"


def with_failed_rows(state: RunState, status: Mapping[str, Any]) -> RunState:
    """``state``, told that rows failed when a run of every row completed with some
    recorded as failed (``status.progress.failedRows``)."""
    failed = int((status.get("progress") or {}).get("failedRows") or 0)
    if state.phase != Phase.SUCCEEDED or state.reason != "Completed" or not failed:
        return state
    return RunState(Phase.SUCCEEDED, COMPLETED_WITH_FAILED_ROWS, (
        f"every row was processed, but {failed:,} failed: recorded with their error and not "
        f"changed; list them with manage.py chunkwise_status APP --failed, and once the code "
        f"or the data is fixed, run them again with spec.retryFailed: true"))


def run_state_of(job: Mapping[str, Any], worker: WorkerStatus | None = None) -> RunState:
    """The run's state from its Job's conditions; why it stopped from the worker's report.

    A halt is known from the worker's structured outcome (``status.worker``: its exit code,
    the engine's reason and message), never from the Job controller's message text. When
    the worker could not report (killed, no network), the Job's own reason is shown."""
    worker = worker or {}
    if _job_condition(job, JobCondition.COMPLETE) or \
            _job_condition(job, JobCondition.SUCCESS_CRITERIA_MET):
        if worker.get("reason") in (DRY_RUN_COMPLETED, RETRIED_FAILED_ROWS):
            # not a run of every row: what the worker did, in its words
            return RunState(Phase.SUCCEEDED, worker["reason"], worker.get("message", ""))
        return RunState(Phase.SUCCEEDED, "Completed", "every row was processed")
    failed = _job_condition(job, JobCondition.FAILED) or \
        _job_condition(job, JobCondition.FAILURE_TARGET)
    if failed:
        reported = worker.get("exitCode")
        if reported == ExitCode.HALTED and worker.get("reason"):
            return RunState(Phase.HALTED, worker["reason"], worker.get("message", ""))
        if reported is not None and reported != ExitCode.DONE and worker.get("reason"):
            return RunState(Phase.FAILED, worker["reason"], worker.get("message", ""))
        return RunState(Phase.FAILED, str(failed.get("reason") or "JobFailed"),
                        str(failed.get("message", "")))
    if _job_condition(job, JobCondition.SUSPENDED):
        return RunState(Phase.SUSPENDED, "SuspendRequested",
                        "spec.suspend is true; the worker stopped after a committed batch")
    if job.get("status", {}).get("active"):
        return RunState(Phase.RUNNING, Phase.RUNNING, "the worker is processing batches")
    return RunState(Phase.PENDING, "JobCreated", "waiting for the worker pod to start")


def pod_problem(pods: Sequence[Mapping[str, Any]]) -> RunState | None:
    """A run's pod that cannot start (its image cannot be pulled, its config is wrong), as
    the kubelet reports it in the container's waiting state."""
    for pod in pods:
        statuses = pod.get("status", {}).get("containerStatuses") or []
        for container in statuses:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in _CONTAINER_STUCK:
                return RunState(Phase.PENDING, str(waiting["reason"]),
                                 f"pod {pod['metadata']['name']} cannot start its "
                                 f"{container.get('name')} container: "
                                 f"{waiting.get('message') or waiting['reason']}")
    return None


def final_reports(pods: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The worker's final report from each shard's newest pod, as its container's
    termination message holds it (the kubelet keeps it in the pod's status): by shard
    index, "0" for a run of one shard. Each has the fields of ``status.worker`` (state,
    reason, message, exitCode, and the pod) and the run's figures when it ended
    (rowsProcessed, rowsEstimated). A pod killed before it could write one has none."""
    reports: dict[str, dict[str, Any]] = {}
    for shard, pod in _newest_per_shard(pods).items():
        for container in pod.get("status", {}).get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated") or {}
            if container.get("name") != WORKER_CONTAINER or not terminated.get("message"):
                continue
            try:
                report = json.loads(terminated["message"])
            except ValueError:  # a template's FallbackToLogsOnError: the log's tail
                continue
            if isinstance(report, dict) and isinstance(report.get("exitCode"), int):
                reports[shard] = {**report, "pod": pod["metadata"].get("name", "")}
    return reports


def shard_of(pod: Mapping[str, Any]) -> str:
    """A pod's shard: its completion index in an Indexed Job, "0" in a Job of one pod."""
    meta = pod.get("metadata", {})
    index = (meta.get("annotations") or {}).get(COMPLETION_INDEX) \
        or (meta.get("labels") or {}).get(COMPLETION_INDEX)
    return str(index) if index is not None else "0"


def _newest_per_shard(pods: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Each shard's newest pod: the one the Job retried last. Pods of different shards
    start in the same second, so newest is only meaningful within a shard."""
    newest: dict[str, Mapping[str, Any]] = {}
    for pod in sorted(pods, key=lambda p: (str(p["metadata"].get("creationTimestamp", "")),
                                           str(p.get("status", {}).get("startTime", "")),
                                           str(p["metadata"].get("name", "")))):
        newest[shard_of(pod)] = pod  # a later one replaces an earlier one
    return newest


def oom_problem(pods: Sequence[Mapping[str, Any]]) -> RunState | None:
    """A shard's newest pod whose container was OOMKilled, said in the user's terms: which
    shard, which limit it passed and what to change. A retry with the same limit and
    batch size ends the same way, so "exit 137" alone would only send the user hunting.
    Each shard is looked at apart: in an Indexed Job the shards' pods start in the same
    second, and one shard's retry must not hide another's kill; within a shard, an
    older pod's kill is history once a newer pod runs or failed otherwise."""
    newest = _newest_per_shard(pods)
    for shard in sorted(newest, key=lambda index: (len(index), index)):  # 2 before 10
        pod = newest[shard]
        meta = pod["metadata"]
        indexed = COMPLETION_INDEX in (meta.get("annotations") or {}) \
            or COMPLETION_INDEX in (meta.get("labels") or {})
        who = f"shard {shard} (pod {meta['name']})" if indexed else f"pod {meta['name']}"
        for container in pod.get("status", {}).get("containerStatuses") or []:
            terminated = ((container.get("state") or {}).get("terminated")
                          or (container.get("lastState") or {}).get("terminated") or {})
            if terminated.get("reason") != OOM_KILLED:
                continue
            name = container.get("name")
            containers = pod.get("spec", {}).get("containers", [])
            spec: Mapping[str, Any] = next((c for c in containers if c.get("name") == name), {})
            limit = ((spec.get("resources") or {}).get("limits") or {}).get("memory")
            where = f"spec.template.spec.containers[{name}].resources.limits.memory"
            cause = (f"it used more than its memory limit of {limit}; raise {where}" if limit
                     else f"the node ran out of memory (it has no memory limit: set {where})")
            return RunState(Phase.FAILED, OOM_KILLED,
                            f"{who}: the {name} container was "
                            f"OOMKilled (exit code {terminated.get('exitCode', 137)}): "
                            f"{cause}, or lower spec.batch.size and spec.batch.maxSize so a "
                            "batch holds fewer rows in memory")
    return None


def job_problem(job_name: str, events: Sequence[Mapping[str, Any]]) -> RunState | None:
    """The newest ``FailedCreate`` Event of the run's Job: the API server refused its pod,
    so there is no pod to look at, only the Job controller's word."""
    refused = [e for e in events if e.get("reason") == FAILED_CREATE
               and (e.get("involvedObject") or {}).get("name") == job_name]
    if not refused:
        return None
    newest = max(refused, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime")
                                           or e["metadata"].get("creationTimestamp") or ""))
    return RunState(Phase.PENDING, FAILED_CREATE,
                    f"Job {job_name} cannot create its pod: {newest.get('message', '')}")


def find_condition(conditions: Sequence[Mapping[str, Any]],
                   kind: Condition) -> Mapping[str, Any]:
    """The condition of type ``kind``, or {} when there is none yet."""
    return next((c for c in conditions if c.get("type") == kind), {})


def set_condition(conditions: Sequence[Mapping[str, Any]], kind: Condition, status: str,
                  reason: str, message: str, generation: int | None,
                  now: str) -> list[dict[str, Any]]:
    """Replace one condition; lastTransitionTime moves only when its status changes."""
    result: list[dict[str, Any]] = []
    previous = None
    for condition in conditions:
        if condition.get("type") == kind:
            previous = condition
        else:
            result.append(dict(condition))
    changed = previous is None or previous.get("status") != status
    entry = {"type": kind, "status": status, "reason": reason, "message": message,
             "lastTransitionTime": now if changed or previous is None
             else previous.get("lastTransitionTime", now)}
    if generation is not None:
        entry["observedGeneration"] = generation
    result.append(entry)
    return sorted(result, key=lambda c: _ORDER.get(str(c["type"]), 99))


_ORDER = {kind.value: index for index, kind in enumerate(Condition)}

#: the conditions every status has, set from its phase
_BY_PHASE = (Condition.SUCCEEDED, Condition.PROGRESSING, Condition.SUSPENDED, Condition.HALTED)
# phase -> (Succeeded, Progressing, Suspended, Halted) condition statuses
_TABLE = {
    Phase.PENDING: ("Unknown", "True", "False", "False"),
    Phase.RUNNING: ("Unknown", "True", "False", "False"),
    Phase.SUSPENDED: ("Unknown", "False", "True", "False"),
    Phase.HALTED: ("False", "False", "False", "True"),
    Phase.SUCCEEDED: ("True", "False", "False", "False"),
    Phase.FAILED: ("False", "False", "False", "False"),
}


#: (while the run goes on, once it has ended): why Suspended or Halted is False
_NOT = {
    Condition.SUSPENDED: ("spec.suspend is false: the run goes on",
                          "the run has ended; nothing to suspend"),
    Condition.HALTED: ("no threshold of spec.haltOn has been passed",
                       "the run ended without passing a threshold of spec.haltOn"),
}


def status_for(status: Mapping[str, Any], outcome: RunState, generation: int | None,
               now: str | None = None) -> tuple[dict[str, Any], list[Event]]:
    """The status patch for ``outcome``, and the Events its transition calls for."""
    now = now or utc_now_text()
    previous = status.get("phase")
    conditions: list[dict[str, Any]] = [dict(c) for c in status.get("conditions", [])]
    for kind, value in zip(_BY_PHASE, _TABLE[outcome.phase], strict=True):
        if kind in (Condition.SUCCEEDED, Condition.PROGRESSING) or value == "True":
            reason, message = outcome.reason, outcome.message
        else:  # says why this condition is False, never another condition's story
            reason, message = f"Not{kind}", _NOT[kind][outcome.phase in Phase.ENDED]
        conditions = set_condition(conditions, kind, value, reason, message,
                                   generation, now)
    conditions = _verified(conditions, status, outcome, generation, now)
    if outcome.phase != Phase.RUNNING:  # a stall only means something while running
        conditions = set_condition(conditions, Condition.STALLED, "False", "NotRunning",
                                   "the worker is not running", generation, now)
        if find_condition(conditions, Condition.THROTTLED).get("status") == "True":
            conditions = set_condition(conditions, Condition.THROTTLED, "False", "NotRunning",
                                       "the worker is not running", generation, now)
    patch: dict[str, Any] = {"phase": outcome.phase, "conditions": conditions,
                             "observedGeneration": generation}
    if outcome.phase in Phase.ENDED:
        patch["completedAt"] = now
    events: list[Event] = []
    if previous != outcome.phase:
        events.append(_event_for(previous, outcome))
    return patch, events


def verification_of(status: Mapping[str, Any]) -> tuple[int, int, int] | None:
    """(rows still matching todo, of them recorded as failed, missed) after a completed
    run, summed over its shards; None when the worker checked nothing (no todo filter)."""
    checks = [status["verification"]] if status.get("verification") else []
    shards = status.get("shards")
    if isinstance(shards, Mapping):
        checks += [e["verification"] for e in shards.values()
                   if isinstance(e, Mapping) and e.get("verification")]
    if not checks:
        return None
    return (sum(int(c.get("rowsRemaining", 0)) for c in checks),
            sum(int(c.get("failedRows", 0)) for c in checks),
            sum(int(c.get("missedRows", 0)) for c in checks))


def _verified(conditions: list[dict[str, Any]], status: Mapping[str, Any], outcome: RunState,
              generation: int | None, now: str) -> list[dict[str, Any]]:
    """``Verified`` once a run succeeded and its worker checked the todo filter."""
    known = any(c.get("type") == Condition.VERIFIED for c in conditions)
    check = verification_of(status) if outcome.phase == Phase.SUCCEEDED else None
    if check is None:
        if not known:
            return conditions
        return set_condition(conditions, Condition.VERIFIED, "Unknown", "NotVerified",
                             "checked when a run completes", generation, now)
    remaining, failed, missed = check
    if missed:
        return set_condition(conditions, Condition.VERIFIED, "False", "RowsMissed",
                             f"{missed} rows up to the high-water mark still match todo and "
                             f"were not recorded as failed ({failed} failed rows recorded)",
                             generation, now)
    message = "no row up to the high-water mark still matches todo" if not remaining else \
        f"the {remaining} rows still matching todo are the recorded failed rows"
    return set_condition(conditions, Condition.VERIFIED, "True", "NoRowsMissed", message,
                         generation, now)


def shards_progress(status: Mapping[str, Any]) -> ProgressStatus | None:
    """A sharded run's ``progress``, summed from its shards' entries (each written by its
    own worker, in order, so each only grows), never below what the status says already:
    the operator writes it, the one writer of the run's totals. None for a run of one
    shard (its worker writes ``progress`` itself) or before any shard reported."""
    shards = status.get("shards")
    if not isinstance(shards, Mapping):
        return None
    entries = [e for e in shards.values()
               if isinstance(e, Mapping) and isinstance(e.get("progress"), Mapping)]
    if not entries:
        return None
    figures = [e["progress"] for e in entries]

    def total(key: str) -> int:
        return sum(int(f.get(key) or 0) for f in figures)

    before = status.get("progress") or {}
    done = max(total("rowsProcessed"), int(before.get("rowsProcessed") or 0))
    estimated = max(total("rowsEstimated"), done)
    finished = len(entries) == len(shards) and all(
        (e.get("worker") or {}).get("exitCode") == ExitCode.DONE for e in entries)
    # the live rate of the shards still running; once none is, their runs' averages
    running = [e["progress"] for e in entries
               if (e.get("worker") or {}).get("state") == WorkerState.RUNNING]
    rate = sum(int(f.get("rowsPerSecond") or 0) for f in running or figures)
    eta = (estimated - done) / rate if rate > 0 and not finished else None
    percent = 100 if finished else (int(100 * done / estimated) if estimated else 0)
    progress: ProgressStatus = {
        "rowsProcessed": done, "rowsEstimated": estimated, "percent": percent,
        "percentText": f"{percent}%", "rowsPerSecond": rate,
        "etaSeconds": None if eta is None else int(eta),
        "eta": format_duration(eta, clock=False), "batches": total("batches"),
        "failedRows": total("failedRows"),
        "lockWaitSeconds": round(sum(float(f.get("lockWaitSeconds") or 0) for f in figures), 3)}
    checkpoints = [str(f["lastCheckpointAt"]) for f in figures if f.get("lastCheckpointAt")]
    if checkpoints:
        progress["lastCheckpointAt"] = max(checkpoints)
    return progress


def throttle_status(status: Mapping[str, Any], generation: int | None,
                    now: str | None = None) -> tuple[dict[str, Any] | None, list[Event]]:
    """While Running: the Throttled condition from what the worker said (``status.throttle``).
    Written when it starts, ends or changes its reason; a fresh reading of the same reason
    stays in ``status.throttle``, so this adds no write per reading."""
    if status.get("phase") != Phase.RUNNING:
        return None, []
    throttle = throttle_of(status)
    current = find_condition(status.get("conditions", []), Condition.THROTTLED)
    if throttle is None:
        if current.get("status") != "True":
            return None, []
        wanted = ("False", "NotThrottled", "the database's health no longer holds the run back")
        event = Event("Normal", "Unthrottled", wanted[2])
    else:
        reason, message = str(throttle.get("reason")), str(throttle.get("message"))
        if (current.get("status"), current.get("reason")) == ("True", reason):
            return None, []
        wanted = ("True", reason, f"{message}: the worker waits before its next batch")
        event = Event("Warning", Condition.THROTTLED, wanted[2])  # named as it turns True
    conditions = set_condition(status.get("conditions", []), Condition.THROTTLED, *wanted,
                               generation, now or utc_now_text())
    return {"conditions": conditions}, [event]


def _event_for(previous: str | None, outcome: RunState) -> Event:
    if outcome.phase == Phase.RUNNING and previous == Phase.SUSPENDED:
        return Event("Normal", "Resumed", "resumed from the checkpoint")
    # the Event's reason is the new phase, but for a run that starts
    reason = "Started" if outcome.phase == Phase.RUNNING else str(outcome.phase)
    # ended without succeeding: a person has to look
    kind = "Warning" if outcome.phase in Phase.RESTARTABLE else "Normal"
    text = outcome.message
    if outcome.phase == Phase.HALTED:
        text = f"{outcome.reason}: {outcome.message}"
    return Event(kind, reason, text)


def stall_status(status: Mapping[str, Any], stall_after: float, generation: int | None,
                 now: datetime.datetime | None = None) -> tuple[dict[str, Any] | None,
                                                                 list[Event]]:
    """While Running: Stalled=True once the checkpoint is older than ``stall_after`` s,
    unless the worker says it is throttled (then Throttled=True tells why it waits)."""
    if status.get("phase") != Phase.RUNNING:
        return None, []
    now = now or datetime.datetime.now(datetime.UTC)
    stamp = (status.get("progress") or {}).get("lastCheckpointAt") or status.get("startedAt")
    if not stamp:
        return None, []
    age = (now - parse_utc(str(stamp))).total_seconds()
    # a throttled worker holds its checkpoint still on purpose, and says why
    stalled = age > stall_after and throttle_of(status) is None
    current = find_condition(status.get("conditions", []), Condition.STALLED)
    if (current.get("status") == "True") == stalled:
        return None, []
    now_text = format_utc(now)
    if stalled:
        message = f"no checkpoint for {age:.0f}s (spec.stallAfter is {stall_after:.0f}s)"
        conditions = set_condition(status.get("conditions", []), Condition.STALLED, "True",
                                   "CheckpointTooOld", message, generation, now_text)
        return {"conditions": conditions}, [Event("Warning", Condition.STALLED, message)]
    conditions = set_condition(status.get("conditions", []), Condition.STALLED, "False",
                               "CheckpointAdvancing", "checkpoints are advancing again",
                               generation, now_text)
    return {"conditions": conditions}, [Event("Normal", "Unstalled",
                                              "checkpoints are advancing again")]
