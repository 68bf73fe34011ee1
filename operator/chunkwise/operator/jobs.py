"""The Job a DataMigration runs as: built from the spec, nothing read from the cluster.

The operator never reads Secrets: database credentials reach the pod only through the
template's own ``env``/``envFrom``/volumes, which are copied as they are.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any, cast

import kopf

from chunkwise.contract import (
    ANNOTATION_PREFIX,
    GROUP_VERSION,
    KIND,
    WORKER_CONTAINER,
    Direction,
    Env,
    ExitCode,
    Label,
    Ports,
)
from chunkwise.engine import TUNABLES, spec_env

__all__ = ["FIELD_DEFAULTS", "JOB_DIGEST", "SPEC_DIGEST", "beyond_tuning", "build_job",
           "job_digest", "job_name", "spec_changed_from", "spec_digest", "worker_env",
           "worker_pod_spec"]

#: the Job's annotation: a digest of the Job its spec makes, beyond tuning, so a run
#: resumed after a change is seen to need a new Job exactly when the Job would differ
#: (a default a new CRD gives a field the Job does not depend on changes nothing)
JOB_DIGEST = f"{ANNOTATION_PREFIX}/job-digest"
#: what Jobs of chunkwise before JOB_DIGEST carry: a digest of the spec, beyond tuning
SPEC_DIGEST = f"{ANNOTATION_PREFIX}/spec-digest"


def beyond_tuning(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec without what a running worker takes live (the tunables), ``suspend`` and
    ``stallAfter`` (the operator's own): what only a new Job can change."""
    live = {t.spec_path[0] for t in TUNABLES} | {"suspend", "stallAfter"}
    return {k: v for k, v in spec.items() if k not in live}


#: what the CRD defaults outside the tunables (whose defaults are their own; a test keeps
#: both equal to the CRD's)
FIELD_DEFAULTS: dict[str, Any] = {"direction": Direction.FORWARD, "database": "default",
                                  "dryRun": False, "retryFailed": False, "parallelism": 1,
                                  "suspend": False}
_TUNABLE_AT = {t.spec_path: t for t in TUNABLES}


def _defaulted(path: tuple[str, ...], value: Any) -> bool:
    """Whether ``value`` is what the API server fills in at ``path`` when it is absent."""
    if len(path) == 1 and path[0] in FIELD_DEFAULTS:
        return bool(value == FIELD_DEFAULTS[path[0]])
    tunable = _TUNABLE_AT.get(cast(tuple[str, str], path))
    if tunable is not None:
        try:
            return bool(tunable.parse(str(value), tunable.spec) == tunable.default)
        except ValueError:
            return False
    if isinstance(value, Mapping):
        return all(_defaulted((*path, key), item) for key, item in value.items())
    return value in ({}, [], "", None)


def spec_changed_from(old: Mapping[str, Any], new: Mapping[str, Any],
                      path: tuple[str, ...] = ()) -> bool:
    """Whether ``new`` says something ``old`` did not. A field ``old`` lacks and ``new``
    holds at its default is no change: an upgrade that adds a defaulted field to the CRD
    makes the API server show it on every DataMigration, and kopf's record of the spec it
    last handled lacks it (restarting every halted run, or replacing every Job, for it)."""
    for key in old.keys() | new.keys():
        if key not in old:
            if not _defaulted((*path, key), new[key]):
                return True
        elif key not in new:
            return True
        elif isinstance(old[key], Mapping) and isinstance(new[key], Mapping):
            if spec_changed_from(old[key], new[key], (*path, key)):
                return True
        elif old[key] != new[key]:
            return True
    return False


def spec_digest(spec: Mapping[str, Any]) -> str:
    text = json.dumps(beyond_tuning(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def job_digest(body: Mapping[str, Any]) -> str:
    """A digest of the Job ``body``'s spec makes, beyond tuning (any run's: the run's
    number is left out)."""
    meta = body["metadata"]
    shape = _job({"metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                  "spec": beyond_tuning(body["spec"])}, run=0)["spec"]
    text = json.dumps(shape, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def job_name(migration: str, run: int) -> str:
    """Deterministic, so a restarted operator finds the Job it made instead of a second one."""
    suffix = f"-run{run}"
    return migration[: 63 - len(suffix)].rstrip("-.") + suffix


def _shards(spec: Mapping[str, Any]) -> int:
    """Pods of the run: one per shard; one for a retry of the failed rows, which does
    every shard's in one process (two would wait for each other's runner locks)."""
    return 1 if spec.get("retryFailed") else int(spec.get("parallelism", 1))


def worker_env(spec: Mapping[str, Any], namespace: str, name: str,
               run: int | None = None) -> list[dict[str, str]]:
    migration = spec["migration"]
    env = {
        Env.APP: migration["app"],
        Env.MIGRATION: migration["name"],
        Env.DIRECTION: spec.get("direction", Direction.FORWARD),
        Env.DATABASE: spec.get("database", "default"),
        Env.RESOURCE: f"{namespace}/{name}",
        **({Env.RUN: str(run)} if run is not None else {}),
        Env.METRICS_PORT: str(Ports.WORKER_METRICS),  # declared as the pod's "metrics" port
    }
    if migration.get("operation") is not None:
        env[Env.OPERATION] = str(migration["operation"])
    if spec.get("dryRun"):
        env[Env.DRY_RUN] = "1"
    if spec.get("retryFailed"):
        env[Env.RETRY_FAILED] = "1"
    if _shards(spec) > 1:  # each pod's shard: JOB_COMPLETION_INDEX
        env[Env.SHARDS] = str(spec["parallelism"])
    env.update(spec_env(spec))  # spec.batch.size -> CHUNKWISE_BATCH_SIZE, and so on
    return [{"name": key, "value": value} for key, value in env.items()]


#: what the worker pod gets unless the template says otherwise (key by key): the
#: restricted Pod Security Standard, and a numeric UID so runAsNonRoot can check it
POD_SECURITY: Mapping[str, Any] = {
    "runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY: Mapping[str, Any] = {
    "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
#: Kubernetes' default terminationMessagePath; the kubelet mounts it writable even on a
#: read-only root filesystem
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
#: a writable /tmp on the read-only root (Python, Django's file uploads, the user's code)
TMP_VOLUME = "chunkwise-tmp"


def worker_pod_spec(spec: Mapping[str, Any], namespace: str, name: str,
                    run: int | None = None) -> dict[str, Any]:
    """``spec.template.spec`` (a PodSpec) with the worker container filled in.

    A container named ``worker`` in the template is merged with what the operator sets
    (image, command, CHUNKWISE_* env, placed before the user's env so the user may
    override a tunable on purpose); other containers, init containers and sidecars,
    volumes and everything else are kept as they are. Secure defaults fill in only the
    keys the template leaves out."""
    pod = copy.deepcopy(dict(spec.get("template", {}).get("spec", {})))
    containers = list(pod.get("containers", []))
    given: dict[str, Any] = next(
        (c for c in containers if c.get("name") == WORKER_CONTAINER), {})
    # the worker writes its final report there too, so the verdict survives a lost patch
    message_path = given.get("terminationMessagePath") or TERMINATION_MESSAGE_PATH
    worker = {**given, "name": WORKER_CONTAINER, "image": spec["image"],
              "command": list(spec.get("command", ["python", "manage.py", "chunkwise_run"])),
              "terminationMessagePath": message_path,
              "env": worker_env(spec, namespace, name, run)
              + [{"name": Env.TERMINATION_LOG, "value": message_path}]
              + list(given.get("env", []))}
    worker["securityContext"] = {**CONTAINER_SECURITY, **given.get("securityContext", {})}
    mounts = list(given.get("volumeMounts", []))
    if not any(m.get("mountPath") == "/tmp" for m in mounts):
        mounts.append({"name": TMP_VOLUME, "mountPath": "/tmp"})
        pod["volumes"] = [*pod.get("volumes", []), {"name": TMP_VOLUME, "emptyDir": {}}]
    worker["volumeMounts"] = mounts
    ports = list(given.get("ports", []))
    if not any(p.get("name") == Ports.NAME for p in ports):  # what a PodMonitor scrapes
        ports.append({"name": Ports.NAME, "containerPort": Ports.WORKER_METRICS,
                      "protocol": "TCP"})
    worker["ports"] = ports
    # the worker first: it is the one whose exit code the podFailurePolicy reads
    pod["containers"] = [worker] + [c for c in containers if c.get("name") != WORKER_CONTAINER]
    pod["securityContext"] = {**POD_SECURITY, **pod.get("securityContext", {})}
    pod.setdefault("automountServiceAccountToken", True)  # the worker patches the status
    pod["restartPolicy"] = "Never"  # a podFailurePolicy needs it; the Job retries instead
    return pod


def build_job(body: Mapping[str, Any], run: int) -> dict[str, Any]:
    job = _job(body, run)
    job["metadata"]["annotations"] = {JOB_DIGEST: job_digest(body),
                                      SPEC_DIGEST: spec_digest(body["spec"])}
    # the garbage collector deletes the Job (and its pods) with its DataMigration
    owner = {"apiVersion": GROUP_VERSION, "kind": KIND, **body}
    kopf.append_owner_reference(job, owner=cast(kopf.Body, owner))
    return job


def _job(body: Mapping[str, Any], run: int) -> dict[str, Any]:
    meta, spec = body["metadata"], body["spec"]
    name, namespace = meta["name"], meta["namespace"]
    template = spec.get("template", {})
    labels = {Label.MANAGED_BY: Label.MANAGER, Label.MIGRATION: name, Label.RUN: str(run)}
    pod_spec = worker_pod_spec(spec, namespace, name, run)
    pod_meta = template.get("metadata", {})
    job: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(name, run),
            "namespace": namespace,
            "labels": labels,
        },
        "spec": {
            "suspend": bool(spec.get("suspend", False)),
            "backoffLimit": int(spec.get("backoffLimit", 6)),
            "podFailurePolicy": {"rules": [
                {   # halted or bad usage: retrying cannot help, fail the Job at once
                    "action": "FailJob",
                    "onExitCodes": {"containerName": WORKER_CONTAINER, "operator": "In",
                                    # the API server wants them in ascending order
                                    "values": sorted(int(code) for code in ExitCode
                                                     if code and not code.retryable)},
                },
                {   # evictions and node drains do not count against backoffLimit
                    "action": "Ignore",
                    "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                },
            ]},
            "template": {
                "metadata": {
                    "labels": {**pod_meta.get("labels", {}), **labels},
                    "annotations": dict(pod_meta.get("annotations", {})),
                },
                "spec": pod_spec,
            },
        },
    }
    shards = _shards(spec)
    if shards > 1:
        # one pod per shard, numbered by Kubernetes (JOB_COMPLETION_INDEX); a crashing
        # shard is retried alone, up to backoffLimit times; a halt still fails the Job
        job["spec"].update(completionMode="Indexed", completions=shards, parallelism=shards,
                           backoffLimitPerIndex=job["spec"].pop("backoffLimit"))
    return job
