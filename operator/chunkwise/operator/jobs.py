"""The Job a DataMigration runs as: built from the spec, nothing read from the cluster.

The operator never reads Secrets: database credentials reach the pod only through
``spec.template.spec.env``/``envFrom``, which are copied as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chunkwise.engine import ExitCode

__all__ = ["CONTAINER", "LABEL_MANAGED_BY", "LABEL_MIGRATION", "LABEL_RUN", "build_job",
           "job_name", "worker_env"]

CONTAINER = "worker"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_MIGRATION = "chunkwise.dev/datamigration"
LABEL_RUN = "chunkwise.dev/run"
_SPEC_TO_ENV = {  # spec path -> the worker's CHUNKWISE_* env var (see chunkwise.django.config)
    ("batch", "size"): "CHUNKWISE_BATCH_SIZE",
    ("batch", "minSize"): "CHUNKWISE_MIN_BATCH_SIZE",
    ("batch", "maxSize"): "CHUNKWISE_MAX_BATCH_SIZE",
    ("batch", "targetDuration"): "CHUNKWISE_TARGET_DURATION",
    ("batch", "pause"): "CHUNKWISE_PAUSE",
    ("batch", "maxRowsPerSecond"): "CHUNKWISE_MAX_ROWS_PER_SECOND",
    ("batch", "maxLockedFraction"): "CHUNKWISE_MAX_LOCKED_FRACTION",
    ("timeouts", "lock"): "CHUNKWISE_LOCK_TIMEOUT",
    ("timeouts", "statement"): "CHUNKWISE_STATEMENT_TIMEOUT",
    ("retries", "maxAttempts"): "CHUNKWISE_MAX_ATTEMPTS",
    ("retries", "backoff"): "CHUNKWISE_BACKOFF",
    ("haltOn", "failedRows"): "CHUNKWISE_HALT_FAILED_ROWS",
    ("haltOn", "failureRate"): "CHUNKWISE_HALT_FAILURE_RATE",
    ("haltOn", "minSample"): "CHUNKWISE_HALT_MIN_SAMPLE",
    ("haltOn", "consecutiveFailedBatches"): "CHUNKWISE_HALT_CONSECUTIVE_FAILED_BATCHES",
}


def job_name(migration: str, run: int) -> str:
    """Deterministic, so a restarted operator finds the Job it made instead of a second one."""
    suffix = f"-run{run}"
    return migration[: 63 - len(suffix)].rstrip("-.") + suffix


def worker_env(spec: Mapping[str, Any], namespace: str, name: str) -> list[dict[str, str]]:
    migration = spec["migration"]
    env = {
        "CHUNKWISE_APP": migration["app"],
        "CHUNKWISE_MIGRATION": migration["name"],
        "CHUNKWISE_DIRECTION": spec.get("direction", "forward"),
        "CHUNKWISE_DATABASE": spec.get("database", "default"),
        "CHUNKWISE_RESOURCE": f"{namespace}/{name}",
    }
    if migration.get("operation") is not None:
        env["CHUNKWISE_OPERATION"] = str(migration["operation"])
    for (group, key), var in _SPEC_TO_ENV.items():
        value = spec.get(group, {}).get(key)
        if value is not None:
            env[var] = str(value)
    return [{"name": key, "value": value} for key, value in env.items()]


def build_job(body: Mapping[str, Any], run: int) -> dict[str, Any]:
    meta, spec = body["metadata"], body["spec"]
    name, namespace = meta["name"], meta["namespace"]
    template = spec.get("template", {})
    pod = template.get("spec", {})
    labels = {LABEL_MANAGED_BY: "chunkwise", LABEL_MIGRATION: name, LABEL_RUN: str(run)}
    container: dict[str, Any] = {
        "name": CONTAINER,
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
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(name, run),
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [{
                "apiVersion": body.get("apiVersion", "chunkwise.dev/v1alpha1"),
                "kind": body.get("kind", "DataMigration"),
                "name": name,
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }],
        },
        "spec": {
            "suspend": bool(spec.get("suspend", False)),
            "backoffLimit": int(spec.get("backoffLimit", 6)),
            "podFailurePolicy": {"rules": [
                {   # halted or bad usage: retrying cannot help, fail the Job at once
                    "action": "FailJob",
                    "onExitCodes": {"containerName": CONTAINER, "operator": "In",
                                    # the API server wants them in ascending order
                                    "values": sorted([int(ExitCode.HALTED),
                                                      int(ExitCode.USAGE)])},
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
