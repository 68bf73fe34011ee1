"""The Job a DataMigration runs as: built from the spec, nothing read from the cluster.

The operator never reads Secrets: database credentials reach the pod only through
``spec.template.spec.env``/``envFrom``, which are copied as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import kopf

from chunkwise.contract import GROUP_VERSION, KIND, WORKER_CONTAINER, Env, ExitCode, Label
from chunkwise.engine import TUNABLES

__all__ = ["build_job", "job_name", "worker_env"]


def job_name(migration: str, run: int) -> str:
    """Deterministic, so a restarted operator finds the Job it made instead of a second one."""
    suffix = f"-run{run}"
    return migration[: 63 - len(suffix)].rstrip("-.") + suffix


def worker_env(spec: Mapping[str, Any], namespace: str, name: str) -> list[dict[str, str]]:
    migration = spec["migration"]
    env = {
        Env.APP: migration["app"],
        Env.MIGRATION: migration["name"],
        Env.DIRECTION: spec.get("direction", "forward"),
        Env.DATABASE: spec.get("database", "default"),
        Env.RESOURCE: f"{namespace}/{name}",
    }
    if migration.get("operation") is not None:
        env[Env.OPERATION] = str(migration["operation"])
    for tunable in TUNABLES:  # spec.batch.size -> CHUNKWISE_BATCH_SIZE, and so on
        group, key = tunable.spec_path
        value = spec.get(group, {}).get(key)
        if value is not None:
            env[tunable.env] = str(value)
    return [{"name": key, "value": value} for key, value in env.items()]


def build_job(body: Mapping[str, Any], run: int) -> dict[str, Any]:
    meta, spec = body["metadata"], body["spec"]
    name, namespace = meta["name"], meta["namespace"]
    template = spec.get("template", {})
    pod = template.get("spec", {})
    labels = {Label.MANAGED_BY: Label.MANAGER, Label.MIGRATION: name, Label.RUN: str(run)}
    container: dict[str, Any] = {
        "name": WORKER_CONTAINER,
        "image": spec["image"],
        "command": list(spec.get("command", ["python", "manage.py", "chunkwise_run"])),
        # the user's env comes after ours, so they may override a tunable on purpose
        "env": worker_env(spec, namespace, name) + list(pod.get("env", [])),
    }
    for key, target in (("envFrom", "envFrom"), ("resources", "resources"),
                        ("containerSecurityContext", "securityContext"),
                        ("workingDir", "workingDir")):
        if key in pod:
            container[target] = pod[key]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",  # a podFailurePolicy needs it; the Job retries instead
        "containers": [container],
    }
    for key in ("serviceAccountName", "nodeSelector", "tolerations", "imagePullSecrets",
                "securityContext"):
        if key in pod:
            pod_spec[key] = pod[key]
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
    # the garbage collector deletes the Job (and its pods) with its DataMigration
    owner = {"apiVersion": GROUP_VERSION, "kind": KIND, **body}
    kopf.append_owner_reference(job, owner=cast(kopf.Body, owner))
    return job
