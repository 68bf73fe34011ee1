"""What the operator does, as plain functions the kopf handlers call.

- create: make run 1's Job (Indexed later; one pod now), record it in the status.
- spec change: suspend/resume patches the Job; any other change restarts a Halted or
  Failed migration as a new run (from the checkpoint), replaces a run whose pod cannot
  start, and while running is deferred; turning dryRun off after a dry run starts the
  real run; retryFailed on a Succeeded one starts a retry of its failed rows.
- Job change: mirror the Job's state into phase and conditions, with Events.
- timer: a Running migration whose checkpoint stops advancing is marked Stalled; every
  migration that has not ended is converged from a fresh read of its Job (a missed or
  failed Job event), and its pods are looked at for one that cannot start.

Events are handed to ``post`` (``kopf.event`` in the operator; a list in unit tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

import kopf

from chunkwise.contract import ANNOTATION_PREFIX, Condition, ExitCode, Label, Phase, utc_now_text
from chunkwise.engine import TUNABLES, parse_duration, spec_env

from .cluster import REFUSED, ApiRefused, Cluster
from .conditions import (
    FAILED_CREATE,
    OOM_KILLED,
    STUCK,
    Event,
    RunState,
    ended_at,
    final_report,
    final_reports,
    find_condition,
    job_problem,
    oom_problem,
    pod_problem,
    run_state_of,
    set_condition,
    shards_progress,
    stall_status,
    status_for,
    throttle_status,
    with_failed_rows,
    worker_of,
)
from .jobs import (
    JOB_DIGEST,
    SPEC_DIGEST,
    beyond_tuning,
    build_job,
    job_digest,
    job_name,
    spec_changed_from,
    spec_digest,
)

__all__ = ["OPERATOR_FIELDS", "Compute", "PostEvent", "announce_retune", "announce_throttle",
           "check_pods", "check_stall", "decided", "job_changed", "job_deleted",
           "migration_of_job", "refused_create", "resync", "say_refused", "spec_changed",
           "start_run", "sum_progress", "write_status"]

#: the last spec generation whose retuning was announced as an Event
RETUNED_ANNOTATION = f"{ANNOTATION_PREFIX}/retuned-generation"
PostEvent = Callable[[Mapping[str, Any], Event], None]
#: what a writer would write, from the DataMigration as read: the status patch (None:
#: nothing to write) and the Events its transition calls for
Compute = Callable[[Mapping[str, Any]], tuple[dict[str, Any] | None, list[Event]]]

#: the status fields the operator writes; every other one is the worker's (its shard's
#: entry, progress, worker, throttle, tuning, plan, verification), but for a final report
#: the worker's last patch never delivered, copied from its pod's termination message
OPERATOR_FIELDS = ("phase", "conditions", "observedGeneration", "run", "jobName",
                   "migrationRef", "startedAt", "completedAt")
#: how many times a status write is decided afresh when the resource moved on under it
_WRITE_ATTEMPTS = 5


def write_status(cluster: Cluster, post: PostEvent, migration: Mapping[str, Any],
                 compute: Compute) -> bool:
    """The operator's one way to write a status. ``compute`` decides the patch from the
    DataMigration as read; the patch carries that read's resourceVersion, so the API
    server takes it only if nothing was written since (a worker's patch, another handler,
    a timer's stale view). If something was, the DataMigration is read again and
    ``compute`` decides afresh. A patch never takes the status out of an ended phase
    (Succeeded, Halted, Failed) unless it starts a new run (a spec change restarting it).
    The Events are posted once the patch is taken. False when nothing was written."""
    namespace, name = migration["metadata"]["namespace"], migration["metadata"]["name"]
    for _attempt in range(_WRITE_ATTEMPTS):
        patch, events = compute(migration)
        if not patch or not _may_write(migration.get("status") or {}, patch):
            return False
        if cluster.patch_status(namespace, name, patch,
                                migration["metadata"].get("resourceVersion")):
            for event in events:
                post(migration, event)
            return True
        fresh = cluster.get_migration(namespace, name)
        if fresh is None or fresh["metadata"].get("deletionTimestamp"):
            return False
        migration = fresh
    raise kopf.TemporaryError(f"the status of DataMigration {namespace}/{name} changed under "
                              f"{_WRITE_ATTEMPTS} writes in a row; trying again", delay=1)


def _may_write(status: Mapping[str, Any], patch: Mapping[str, Any]) -> bool:
    """An ended phase is final: only a patch that starts a new run leaves it."""
    if status.get("phase") not in Phase.ENDED or patch.get("phase") in (None,
                                                                          status["phase"]):
        return True
    return int(patch.get("run") or 0) > int(status.get("run") or 0)


def decided(base: Mapping[str, Any], patch: Mapping[str, Any] | None) -> Compute:
    """A patch a handler decided from ``base`` (and acted on: a Job made or suspended):
    still right for a fresher read in which the operator's own fields have not moved (the
    worker's patches came between), or when it starts a new run; else dropped, its
    premise gone (a run that ended meanwhile stays ended; the timer converges the rest)."""
    then = base.get("status") or {}

    def compute(migration: Mapping[str, Any]) -> tuple[dict[str, Any] | None, list[Event]]:
        now = migration.get("status") or {}
        if not patch:
            return None, []
        new_run = int(patch.get("run") or 0) > int(now.get("run") or 0)
        if new_run or all(now.get(f) == then.get(f) for f in OPERATOR_FIELDS):
            return dict(patch), []
        return None, []
    return compute


def start_run(cluster: Cluster, post: PostEvent, body: Mapping[str, Any],
              patch: MutableMapping[str, Any], run: int) -> None:
    """Create run ``run``'s Job; idempotent (the Job name is derived from the run).

    When the Job exists already, an operator was stopped between creating it and
    recording the run, and the Job may have run, or even finished, since: its state is
    read now, since no later Job event may ever come to say so."""
    status = body.get("status") or {}
    spec = body["spec"]
    job = build_job(body, run)
    created = cluster.create_job(job)
    state = RunState(Phase.SUSPENDED, "SuspendRequested", "created suspended (spec.suspend)") \
        if spec.get("suspend") else RunState(Phase.PENDING, "JobCreated",
                                             f"Job {job['metadata']['name']} created")
    existing = None if created else cluster.get_job(job["metadata"]["namespace"],
                                                    job["metadata"]["name"])
    reported: dict[str, Any] = {}
    if existing is not None:
        # a report in the status is this run's only if the status already records it
        own = status if str(status.get("run")) == str(run) else {
            k: v for k, v in status.items() if k not in ("worker", "shards", "verification")}
        found, reported = _judged(cluster, existing, own)
        if found.phase != Phase.PENDING or not spec.get("suspend"):
            state = found
    new_status, events = status_for(status, state, body["metadata"].get("generation"))
    migration = spec["migration"]
    # status_for dates an ended run now; a Job found ended says when it really ended, and
    # no later Job event comes to fill it in. A run not ended has no completedAt (a new
    # run's status drops the last run's).
    completed = new_status.get("completedAt")
    if completed and existing is not None:
        completed = ended_at(existing) or completed
    new_status.update(run=run, jobName=job["metadata"]["name"],
                      migrationRef=f"{migration['app']}.{migration['name']}",
                      startedAt=status.get("startedAt") or utc_now_text(),
                      completedAt=completed)
    if run > 1:  # the last run's outcome is history now; its figures come afresh
        new_status.update(worker=None, shards=None, verification=None, plan=None,
                          tuning=None, progress=None)
    new_status.update(reported)
    patch.setdefault("status", {}).update(new_status)
    if created:
        verb = "resumes from the checkpoint" if run > 1 else "starts"
        post(body, Event("Normal", "JobCreated",
                         f"created Job {job['metadata']['name']}: run {run} {verb}"))
    elif state.phase not in (Phase.PENDING, Phase.SUSPENDED):
        for event in events:  # what the found Job did while nobody recorded it
            post(body, event)


def spec_changed(cluster: Cluster, post: PostEvent, body: Mapping[str, Any],
                 old: Mapping[str, Any] | None, new: Mapping[str, Any] | None,
                 patch: MutableMapping[str, Any]) -> None:
    old, new = old or {}, new or {}
    status = body.get("status") or {}
    run = int(status.get("run") or 0)
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    if not run:
        if refused_create(status):  # kopf gave the create up
            start_run(cluster, post, body, patch, 1)
        return  # else the create handler has not made a run yet; it will read the new spec
    if bool(old.get("suspend")) != bool(new.get("suspend")):
        if status.get("phase") not in Phase.ENDED:
            if not new.get("suspend") and _made_from_another_spec(cluster, body, run):
                # resumed after a change only a new Job takes (image, template, ...):
                # run N+1 resumes from the checkpoint with it; run N's pod template cannot
                # change, and unsuspending it would run the old image
                _replace_run(cluster, post, body, run, "the spec changed beyond tuning "
                             f"while run {run} was suspended")
                return
            cluster.patch_job(namespace, job_name(name, run),
                              {"spec": {"suspend": bool(new.get("suspend"))}})
            if new.get("suspend"):
                state = RunState(Phase.SUSPENDED, "SuspendRequested",
                                 "spec.suspend is true; the worker stops after its batch")
                new_status, events = status_for(status, state,
                                                body["metadata"].get("generation"))
                patch.setdefault("status", {}).update(new_status)
                for event in events:
                    post(body, event)
            else:
                post(body, Event("Normal", "Resumed",
                                 "spec.suspend is false; resuming from the checkpoint"))
    others_changed = spec_changed_from({k: v for k, v in old.items() if k != "suspend"},
                                       {k: v for k, v in new.items() if k != "suspend"})
    if not others_changed:
        return
    dry_run_over = status.get("phase") == Phase.SUCCEEDED and bool(old.get("dryRun")) \
        and not new.get("dryRun")
    # the run is done and its failed rows are to be retried (with a fixed image, say): a
    # new run, and another at each change beyond tuning while retryFailed stays true
    retry = status.get("phase") == Phase.SUCCEEDED and bool(new.get("retryFailed")) \
        and spec_changed_from(beyond_tuning(old), beyond_tuning(new))
    if (status.get("phase") in Phase.RESTARTABLE or dry_run_over or retry) \
            and not new.get("suspend"):
        start_run(cluster, post, body, patch, run + 1)  # a dry run done: now the real one
    elif _cannot_start(status):
        # its pod cannot run a batch (refused, or its image or config is wrong): the fix
        # in the new spec needs a new Job
        _replace_run(cluster, post, body, run, f"the spec changed while run {run}'s pod "
                     f"could not start ({_progressing(status).get('reason')})")
    elif status.get("phase") in Phase.GOING_ON:
        tuned = _tunables_changed(old, new)
        if tuned:
            post(body, Event("Normal", "Retuning",
                             f"{tuned}: the running worker takes it between two batches, "
                             "within seconds (Event Retuned when it has)"))
        if beyond_tuning(old) != beyond_tuning(new):
            when = "when it is resumed (a new run, from the checkpoint)" \
                if new.get("suspend") else "at the next run (suspend and resume to " \
                "start one now, from the checkpoint)"
            post(body, Event("Normal", "SpecChangeDeferred",
                             "the spec changed beyond tuning (image, template, command, "
                             f"backoffLimit, ...); that takes effect {when}"))


def _made_from_another_spec(cluster: Cluster, body: Mapping[str, Any], run: int) -> bool:
    """Whether run ``run``'s Job was made from a spec that differs from today's beyond
    tuning (a Job made before the digest annotation existed counts as today's)."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    job = cluster.get_job(namespace, job_name(name, run))
    annotations = (job or {}).get("metadata", {}).get("annotations") or {}
    if JOB_DIGEST in annotations:
        return bool(annotations[JOB_DIGEST] != job_digest(body))
    made_from = annotations.get(SPEC_DIGEST)  # a Job of chunkwise before JOB_DIGEST
    return made_from is not None and made_from != spec_digest(body["spec"])


def _replace_run(cluster: Cluster, post: PostEvent, body: Mapping[str, Any], run: int,
                 why: str) -> None:
    """Run ``run + 1`` of today's spec in place of run ``run``, from the checkpoint. The
    new run is recorded before the old Job is deleted, so the deletion is not taken for a
    Job lost by hand and made again."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    replaced: dict[str, Any] = {}
    start_run(cluster, post, body, replaced, run + 1)
    write_status(cluster, post, body, decided(body, replaced["status"]))
    cluster.delete_job(namespace, job_name(name, run))
    post(body, Event("Normal", "RunReplaced",
                     f"{why}; its Job is replaced by run {run + 1}'s"))


def _tunables_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """What changed among the tunables, as ``batch.size 5000 -> 2000, ...``."""
    before, after = spec_env(old), spec_env(new)
    names = {t.env: t.spec for t in TUNABLES}
    return ", ".join(f"{names[env]} {before.get(env, 'default')} -> {after.get(env, 'default')}"
                     for env in sorted(set(before) | set(after))
                     if before.get(env) != after.get(env))


def announce_retune(cluster: Cluster, post: PostEvent, body: Mapping[str, Any]) -> None:
    """The worker wrote ``status.tuning`` when new settings took effect: say so once, as an
    Event, and remember the generation announced in an annotation."""
    tuning = (body.get("status") or {}).get("tuning") or {}
    generation = tuning.get("generation")
    annotations = body["metadata"].get("annotations") or {}
    if not generation or annotations.get(RETUNED_ANNOTATION) == str(generation):
        return
    changes = ", ".join(f"{name} {c.get('from')} -> {c.get('to')}"
                        for name, c in (tuning.get("changes") or {}).items())
    post(body, Event("Normal", "Retuned",
                     f"spec generation {generation} took effect in pod {tuning.get('pod')} at "
                     f"{tuning.get('appliedAt')}: {changes or 'no tunable changed'}"))
    cluster.patch_migration(body["metadata"]["namespace"], body["metadata"]["name"],
                            {"metadata": {"annotations": {RETUNED_ANNOTATION: str(generation)}}})


def announce_throttle(cluster: Cluster, post: PostEvent, body: Mapping[str, Any]) -> None:
    """The worker wrote ``status.throttle`` (or cleared it): mirror it into the Throttled
    condition, with an Event when it starts or ends."""
    write_status(cluster, post, body, lambda migration: throttle_status(
        migration.get("status") or {}, migration["metadata"].get("generation")))


#: seconds between two writes of a sharded run's summed progress: each shard patches
#: its entry about every 2 s, and N shards must not make N operator writes as often
PROGRESS_EVERY = 2.0


def sum_progress(cluster: Cluster, post: PostEvent, body: Mapping[str, Any],
                 memo: MutableMapping[str, Any] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
    """A sharded run's ``progress``, summed from its shards' entries whenever one of them
    changed: the operator is the one writer of the run's totals, so they never go down
    (each shard's worker writing them did, whenever an older patch landed last). At most
    one write per PROGRESS_EVERY per migration (``memo`` is kopf's, per object), except
    the one that says every shard is done; a skipped sum is made by the next change."""
    memo = {} if memo is None else memo
    now = clock()

    def compute(migration: Mapping[str, Any]) -> tuple[dict[str, Any] | None, list[Event]]:
        status = migration.get("status") or {}
        progress = shards_progress(status)
        if progress is None or progress == status.get("progress"):
            return None, []
        shards = status.get("shards") or {}
        finished = all(isinstance(e, Mapping) and (e.get("worker") or {}).get("exitCode")
                       == ExitCode.DONE for e in shards.values())
        last = memo.get("progress_summed_at")
        # the same call deciding again after a 409 (its own decision stands)
        if not finished and last is not None and last != now and \
                now - last < PROGRESS_EVERY:
            return None, []
        memo["progress_summed_at"] = now
        return {"progress": progress}, []
    write_status(cluster, post, body, compute)


def say_refused(cluster: Cluster, post: PostEvent, body: Mapping[str, Any],
                refusal: ApiRefused) -> None:
    """The API server refused the operator a call that retrying cannot fix: say it on the
    DataMigration, once, as Progressing=False and a Warning Event, both naming the verb
    and resource (and, for a 403, the missing RBAC rule), as far as the API server lets
    the operator write."""
    def said(status: Mapping[str, Any]) -> bool:
        current = _progressing(status)
        return (current.get("status"), current.get("reason"), current.get("message")) == \
            ("False", refusal.reason, refusal.message)

    def compute(migration: Mapping[str, Any]) -> tuple[dict[str, Any] | None, list[Event]]:
        status = migration.get("status") or {}
        if said(status):
            return None, []
        return {"conditions": set_condition(
            status.get("conditions", []), Condition.PROGRESSING, "False", refusal.reason,
            refusal.message, migration["metadata"].get("generation"), utc_now_text())}, []

    if said(body.get("status") or {}):
        return  # said already (a timer meets the same refusal at every tick)
    try:
        write_status(cluster, post, body, compute)
    except (ApiRefused, kopf.TemporaryError):
        pass  # the Event still says it
    post(body, Event("Warning", refusal.reason, refusal.message))


def migration_of_job(cluster: Cluster, job: Mapping[str, Any]) -> dict[str, Any] | None:
    """The DataMigration a Job of ours belongs to, or None when it cannot be read."""
    name = job.get("metadata", {}).get("labels", {}).get(Label.MIGRATION)
    try:
        return cluster.get_migration(job["metadata"].get("namespace"), name) if name else None
    except (ApiRefused, kopf.TemporaryError):
        return None


def _run_pods(cluster: Cluster, namespace: str, name: str, run: object) -> list[dict[str, Any]]:
    """The pods of run ``run`` of DataMigration ``name`` (the Job's labels on its pods)."""
    return cluster.list_pods(namespace, f"{Label.MIGRATION}={name},{Label.RUN}={run}")


def refused_create(status: Mapping[str, Any]) -> bool:
    """Whether the API server refused run 1's Job for good (kopf gave the create up)."""
    return not status.get("run") and _progressing(status).get("reason") in REFUSED


def _progressing(status: Mapping[str, Any]) -> Mapping[str, Any]:
    return find_condition(status.get("conditions", []), Condition.PROGRESSING)


def _cannot_start(status: Mapping[str, Any]) -> bool:
    progressing = _progressing(status)
    return status.get("phase") == Phase.PENDING and progressing.get("status") == "False" \
        and progressing.get("reason") in STUCK


def _current_run_of(cluster: Cluster, job: Mapping[str, Any]) -> dict[str, Any] | None:
    """The DataMigration whose current run ``job`` is; None for an earlier run's Job, or
    when the DataMigration is gone or going (the garbage collector takes the Job)."""
    labels = job.get("metadata", {}).get("labels", {})
    name = labels.get(Label.MIGRATION)
    if not name:
        return None
    migration = cluster.get_migration(job["metadata"].get("namespace"), name)
    if migration is None or migration["metadata"].get("deletionTimestamp"):
        return None
    run = (migration.get("status") or {}).get("run")
    return migration if str(run) == labels.get(Label.RUN) else None


def _judged(cluster: Cluster, job: Mapping[str, Any],
            status: Mapping[str, Any]) -> tuple[RunState, dict[str, Any]]:
    """The run's state from its Job, and why it stopped from the worker's final report:
    the status's, else (the last patch lost to an API server that was away) the one the
    kubelet kept from the worker's termination message. Also what of those reports the
    status lacks, for the caller to record: the worker's report and, when higher, the
    run's final figures (progress never goes down)."""
    worker = worker_of(status)
    state = run_state_of(job, worker)
    if state.phase not in Phase.ENDED:
        return state, {}
    sharded = (job.get("spec") or {}).get("completionMode") == "Indexed"
    shards = int((job.get("spec") or {}).get("completions") or 1) if sharded else 1
    unexplained = state.phase == Phase.FAILED and not (worker or {}).get("reason")
    if not unexplained and not _reports_missing(status, shards, sharded):
        return with_failed_rows(state, status), {}
    namespace = job["metadata"]["namespace"]
    labels = job["metadata"]["labels"]
    pods = _run_pods(cluster, namespace, labels[Label.MIGRATION], labels[Label.RUN])
    recorded = _missing_reports(status, final_reports(pods), sharded)
    if recorded:
        worker = worker_of(_merged(status, recorded))
        state = with_failed_rows(run_state_of(job, worker), _merged(status, recorded))
    if state.phase == Phase.FAILED and not (worker or {}).get("reason"):
        # the worker could not say why (killed): the kubelet may know
        state = oom_problem(pods) or state
    return state, recorded


def _reports_missing(status: Mapping[str, Any], shards: int, sharded: bool) -> bool:
    """Whether a final report (one with an exit code) is missing from the status."""
    if not sharded:
        return not final_report(status)
    return any(not final_report(status, str(index)) for index in range(shards))


def _missing_reports(status: Mapping[str, Any], reports: Mapping[str, Mapping[str, Any]],
                     sharded: bool) -> dict[str, Any]:
    """The status fields the pods' final reports add: each report the worker's own
    patch did not deliver, and the final figures when above the status's."""
    added: dict[str, Any] = {}
    for shard, report in sorted(reports.items()):
        if report.get("run") is not None and str(report["run"]) != str(status.get("run")):
            continue  # another run's pod (its labels said otherwise: not ours to record)
        worker = {k: report[k] for k in ("state", "reason", "message", "exitCode", "pod",
                                         "run") if k in report}
        if sharded:
            if not final_report(status, shard):
                added.setdefault("shards", {})[shard] = {"worker": worker}
        elif not final_report(status):
            added["worker"] = worker
    progress = status.get("progress") or {}
    done = max((int(r.get("rowsProcessed") or 0) for r in reports.values()), default=0)
    if done > int(progress.get("rowsProcessed") or 0):
        total = max(int(r.get("rowsEstimated") or 0) for r in reports.values()) or None
        percent = min(100, int(100 * done / total)) if total else 0
        added["progress"] = {"rowsProcessed": done, "percent": percent,
                             "percentText": f"{percent}%"}
        if total:
            added["progress"]["rowsEstimated"] = total
    return added


def _merged(earlier: Mapping[str, Any], later: Mapping[str, Any]) -> dict[str, Any]:
    """``later`` merged into ``earlier`` as a JSON merge patch merges (maps key by key)."""
    merged = dict(earlier)
    for key, value in later.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def job_changed(cluster: Cluster, post: PostEvent, job: Mapping[str, Any]) -> None:
    migration = _current_run_of(cluster, job)
    if migration is None:
        return
    write_status(cluster, post, migration, lambda current: _job_status(cluster, job, current))


def _job_status(cluster: Cluster, job: Mapping[str, Any],
                migration: Mapping[str, Any]) -> tuple[dict[str, Any] | None, list[Event]]:
    """The status patch that mirrors the Job's state, and its Events."""
    status = migration.get("status") or {}
    if str(status.get("run")) != job["metadata"]["labels"].get(Label.RUN):
        return None, []  # a new run started meanwhile
    state, new_status = _judged(cluster, job, status)
    if state.phase == Phase.RUNNING and _cannot_start(status):
        # the Job counts a pod that cannot start (image pull, config) as active: while it
        # still cannot, the run stays Pending with the pod's reason (the resync asks every
        # interval, and flipping it to Running would undo check_pods each time)
        labels = job["metadata"]["labels"]
        if pod_problem(_run_pods(cluster, job["metadata"]["namespace"],
                                 labels[Label.MIGRATION], labels[Label.RUN])) is not None:
            return None, []
    summed = shards_progress(_merged(status, new_status))
    if summed is not None and summed != status.get("progress"):  # the shards' last word
        new_status["progress"] = summed
    status = _merged(status, new_status)
    events: list[Event] = []
    if state.phase == status.get("phase") and state.phase != Phase.HALTED:
        if state.phase in Phase.ENDED and not status.get("completedAt"):
            # ended while no one recorded when (an operator before this fix lost it)
            new_status["completedAt"] = ended_at(job) or utc_now_text()
    elif state.phase == Phase.PENDING and status.get("phase") == Phase.SUSPENDED \
            and migration["spec"].get("suspend"):
        pass  # the pod is gone because we suspended; nothing new
    else:
        changed, events = status_for(status, state, migration["metadata"].get("generation"))
        if "completedAt" in changed:  # the Job's own time, not when we heard of it
            changed["completedAt"] = ended_at(job) or changed["completedAt"]
        if state.phase == status.get("phase"):
            events = []  # Halted again with a fresher reason: update the text, no new Event
        new_status.update(changed)
    return new_status or None, events


def job_deleted(cluster: Cluster, post: PostEvent, job: Mapping[str, Any]) -> None:
    """The current run's Job was deleted by hand while the run had not ended: make it
    again under the same name (so never two at once); its pod resumes from the checkpoint.
    A Job deleted with its DataMigration, or after its run ended, is left gone."""
    migration = _current_run_of(cluster, job)
    status = (migration or {}).get("status") or {}
    phase = status.get("phase")
    if migration is None or phase in Phase.ENDED:
        return
    name, run = migration["metadata"]["name"], int(status["run"])
    if cluster.create_job(build_job(migration, run)):
        post(migration, Event("Warning", "JobRecreated",
                              f"Job {job_name(name, run)} was deleted while the migration was "
                              f"{phase}; created it again: run {run} resumes from the "
                              "checkpoint"))


def resync(cluster: Cluster, post: PostEvent, body: Mapping[str, Any]) -> None:
    """Level-triggered: what the current run's Job says now, read fresh, whatever events
    were missed. kopf never retries an event handler that failed (a Job's last
    transition met an API server that was away), nor sees events while the operator is
    down; this converges the DataMigration all the same, at the next tick of its timer
    (and at the operator's start), the same way the Job's event would have. So is the
    Throttled condition, from the worker's ``status.throttle`` as read now: a throttle
    that ended while the operator's watch was down (kopf watches again only after its
    backoff, and shows what it missed as a listing, not a change) clears here."""
    status = body.get("status") or {}
    run = status.get("run")
    if not run and refused_create(status):
        # the 403 may not last (a RoleBinding that lands after the DataMigration, a
        # webhook not ready yet): run 1 is made as soon as the API server lets it
        made: dict[str, Any] = {}
        start_run(cluster, post, body, made, 1)
        write_status(cluster, post, body, decided(body, made["status"]))
        return
    if not run or status.get("phase") in Phase.ENDED:
        return
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    if int(run) > 1:
        _delete_if_replaced(cluster, namespace, job_name(name, int(run) - 1))
    job = cluster.get_job(namespace, job_name(name, int(run)))
    if job is None:  # deleted by hand while no one watched: made again
        job_deleted(cluster, post, {"metadata": {
            "name": job_name(name, int(run)), "namespace": namespace,
            "labels": {Label.MIGRATION: name, Label.RUN: str(run)}}})
    else:
        job_changed(cluster, post, job)
        # from a fresh read: kopf's body is as old as its watch, which may still be down
        fresh = cluster.get_migration(namespace, name)
        if fresh is not None:
            announce_throttle(cluster, post, fresh)


def _delete_if_replaced(cluster: Cluster, namespace: str, name: str) -> None:
    """The last run's Job, if it never ended: a replaced run whose delete failed (the new
    run was recorded first, so a retried handler saw nothing left to replace). An ended
    run's Job stays, with its pods and their logs, until the DataMigration goes."""
    job = cluster.get_job(namespace, name)
    if job is not None and run_state_of(job).phase not in Phase.ENDED:
        cluster.delete_job(namespace, name)


def check_stall(cluster: Cluster, post: PostEvent, body: Mapping[str, Any]) -> None:
    stall_after = parse_duration(body["spec"].get("stallAfter", "5m"), field_name="stallAfter")
    write_status(cluster, post, body, lambda migration: stall_status(
        migration.get("status") or {}, stall_after, migration["metadata"].get("generation")))


def check_pods(cluster: Cluster, post: PostEvent, body: Mapping[str, Any]) -> None:
    """While Pending or Running (the Job counts a pod that cannot start as active): a pod of
    the run that cannot start (image pull, config), or a pod the API server refuses to
    create, puts the DataMigration back to Pending with Progressing=False and the
    kubelet's or the Job controller's reason, and a Warning Event, instead of a silent
    Pending or a Running that runs nothing. A newest pod that was OOMKilled says so the
    same way, the phase kept (the Job retries it), until a newer pod takes over."""
    write_status(cluster, post, body, lambda migration: _pods_status(cluster, migration))


def _pods_status(cluster: Cluster, migration: Mapping[str, Any]) -> tuple[dict[str, Any] | None,
                                                                           list[Event]]:
    status = migration.get("status") or {}
    run = status.get("run")
    if status.get("phase") not in Phase.ACTIVE or not run:
        return None, []
    name, namespace = migration["metadata"]["name"], migration["metadata"]["namespace"]
    generation = migration["metadata"].get("generation")
    pods = _run_pods(cluster, namespace, name, run)
    problem = pod_problem(pods)
    phase = Phase(status["phase"])
    if problem is None:
        killed = oom_problem(pods)
        if killed is not None:  # the Job retries it; the run is not back to Pending
            problem = RunState(phase, killed.reason,
                               f"{killed.message}. The Job retries it up to spec.backoffLimit")
    if problem is None and not pods:
        job = job_name(name, int(run))
        problem = job_problem(job, cluster.list_events(
            namespace, f"involvedObject.kind=Job,involvedObject.name={job},"
                       f"reason={FAILED_CREATE}"))
    if problem is None:
        if _progressing(status).get("reason") == OOM_KILLED:  # a newer pod took over
            return {"conditions": set_condition(
                status.get("conditions", []), Condition.PROGRESSING, "True", Phase.RUNNING,
                "a new worker pod took over from the OOMKilled one", generation,
                utc_now_text())}, []
        return None, []
    current = _progressing(status)
    if (current.get("reason"), current.get("message")) == (problem.reason, problem.message):
        return None, []
    return {"phase": problem.phase, "conditions": set_condition(
        status.get("conditions", []), Condition.PROGRESSING, "False", problem.reason,
        problem.message, generation, utc_now_text())}, [
        Event("Warning", problem.reason, problem.message)]
