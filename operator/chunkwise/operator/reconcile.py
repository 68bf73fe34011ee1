"""What the operator does, as plain async functions over a KubeApi: testable without kopf.

- a new DataMigration (or a halted/failed one whose spec changed) gets a new run: a Job;
- spec.suspend is mirrored onto the run's Job (the Job controller stops/starts the pod);
- the Job's state becomes the DataMigration's phase, conditions and Events;
- a running migration whose checkpoint stops advancing is marked Stalled.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from chunkwise.engine import parse_duration

from .conditions import Event, Outcome, job_outcome, now_iso, stall_status, status_for
from .jobs import LABEL_MIGRATION, LABEL_RUN, build_job, job_name
from .kube import KubeApi

__all__ = ["check_stall", "job_changed", "spec_changed", "start_run"]

_RESTARTABLE = ("Halted", "Failed")


async def _post(api: KubeApi, body: Mapping[str, Any], events: list[Event]) -> None:
    for event in events:
        await api.post_event(body, event.type, event.reason, event.message)


async def start_run(api: KubeApi, body: Mapping[str, Any], patch: MutableMapping[str, Any],
                    run: int) -> None:
    """Create run ``run``'s Job; idempotent (the Job name is derived from the run)."""
    status = body.get("status") or {}
    spec = body["spec"]
    job = build_job(body, run)
    created = await api.create_job(job)
    outcome = Outcome("Suspended", "SuspendRequested", "created suspended (spec.suspend)") \
        if spec.get("suspend") else Outcome("Pending", "JobCreated",
                                            f"Job {job['metadata']['name']} created")
    new_status, _ = status_for(status, outcome, body["metadata"].get("generation"))
    migration = spec["migration"]
    new_status.update(run=run, jobName=job["metadata"]["name"],
                      migrationRef=f"{migration['app']}.{migration['name']}",
                      startedAt=status.get("startedAt") or now_iso(), completedAt=None)
    if run > 1:
        new_status["worker"] = None  # the last run's outcome is history now
    patch.setdefault("status", {}).update(new_status)
    if created:
        verb = "resumes from the checkpoint" if run > 1 else "starts"
        await _post(api, body, [Event("Normal", "JobCreated",
                                      f"created Job {job['metadata']['name']}: run {run} {verb}")])


async def spec_changed(api: KubeApi, body: Mapping[str, Any], old: Mapping[str, Any] | None,
                       new: Mapping[str, Any] | None, patch: MutableMapping[str, Any]) -> None:
    old, new = old or {}, new or {}
    status = body.get("status") or {}
    run = int(status.get("run") or 0)
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    if not run:
        return  # the create handler has not made a run yet; it will read the new spec
    if bool(old.get("suspend")) != bool(new.get("suspend")):
        if status.get("phase") not in _RESTARTABLE + ("Succeeded",):
            await api.patch_job(namespace, job_name(name, run),
                                {"spec": {"suspend": bool(new.get("suspend"))}})
            if new.get("suspend"):
                outcome = Outcome("Suspended", "SuspendRequested",
                                  "spec.suspend is true; the worker stops after its batch")
                new_status, events = status_for(status, outcome,
                                                body["metadata"].get("generation"))
                patch.setdefault("status", {}).update(new_status)
                await _post(api, body, events)
            else:
                await _post(api, body, [Event("Normal", "Resumed",
                                              "spec.suspend is false; resuming from the "
                                              "checkpoint")])
    others_changed = {k: v for k, v in old.items() if k != "suspend"} != \
        {k: v for k, v in new.items() if k != "suspend"}
    if not others_changed:
        return
    if status.get("phase") in _RESTARTABLE and not new.get("suspend"):
        await start_run(api, body, patch, run + 1)
    elif status.get("phase") in ("Running", "Pending", "Suspended"):
        await _post(api, body, [Event("Normal", "SpecChangeDeferred",
                                      "the spec changed; tuning takes effect at the next run "
                                      "(suspend and resume to apply it now)")])


async def job_changed(api: KubeApi, job: Mapping[str, Any]) -> None:
    labels = job.get("metadata", {}).get("labels", {})
    name, namespace = labels.get(LABEL_MIGRATION), job["metadata"].get("namespace")
    if not name:
        return
    migration = await api.get_migration(namespace, name)
    if migration is None:
        return  # being deleted: the garbage collector takes the Job
    status = migration.get("status") or {}
    if str(status.get("run")) != labels.get(LABEL_RUN):
        return  # an earlier run's Job
    outcome = job_outcome(job, status.get("worker"))
    if outcome.phase == status.get("phase") and outcome.phase != "Halted":
        return
    if outcome.phase == "Pending" and status.get("phase") == "Suspended" \
            and migration["spec"].get("suspend"):
        return  # the pod is gone because we suspended; nothing new
    new_status, events = status_for(status, outcome, migration["metadata"].get("generation"))
    if outcome.phase == status.get("phase"):
        events = []  # Halted again with a fresher reason: update the text, no new Event
    await api.patch_status(namespace, name, new_status)
    await _post(api, migration, events)


async def check_stall(api: KubeApi, body: Mapping[str, Any],
                      patch: MutableMapping[str, Any]) -> None:
    status = body.get("status") or {}
    stall_after = parse_duration(body["spec"].get("stallAfter", "5m"), field_name="stallAfter")
    new_status, events = stall_status(status, stall_after, body["metadata"].get("generation"))
    if new_status is not None:
        patch.setdefault("status", {}).update(new_status)
        await _post(api, body, events)
