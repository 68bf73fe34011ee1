"""Bad DataMigrations are rejected by the API server itself, with the CRD's messages."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.e2e.testenv.cluster import Cluster

pytestmark = pytest.mark.e2e

VALID: dict[str, Any] = {
    "apiVersion": "chunkwise.dev/v1alpha1", "kind": "DataMigration",
    "metadata": {"name": "valid", "namespace": "default"},
    "spec": {"image": "shop:1", "migration": {"app": "shop", "name": "0002"}},
}


def with_spec(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(VALID)
    for path, value in changes.items():
        target = body["spec"]
        keys = path.split("__")
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        if value is _DELETE:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value
    return body


_DELETE = object()

CASES = [
    (with_spec(image=_DELETE), "spec.image: Required value"),
    (with_spec(image=""), "spec.image: Invalid value"),
    (with_spec(migration=_DELETE), "spec.migration: Required value"),
    (with_spec(migration__app="shop-app"), "spec.migration.app"),
    (with_spec(direction="sideways"), 'supported values: "forward", "backward"'),
    (with_spec(batch__size=10, batch__minSize=100),
     "spec.batch.size: Invalid value: must lie between spec.batch.minSize and "
     "spec.batch.maxSize"),
    (with_spec(batch__size=0), "spec.batch.size: Invalid value: 0"),
    (with_spec(batch__targetDuration="soon"), "must be a duration above zero"),
    (with_spec(batch__targetDuration="0s"), "must be a duration above zero"),
    (with_spec(timeouts__lock="2 seconds"), "must be a duration above zero"),
    (with_spec(haltOn__failureRate="1.5"), "must be a fraction between 0 and 1"),
    (with_spec(haltOn__failedRows=-1), "spec.haltOn.failedRows: Invalid value: -1"),
    (with_spec(haltOn__consecutiveFailedBatches=0), "consecutiveFailedBatches"),
    (with_spec(retries__maxAttempts=0), "spec.retries.maxAttempts"),
    (with_spec(stallAfter="forever"), "must be a duration such as 30s"),
    (with_spec(backoffLimit=-1), "spec.backoffLimit"),
    (with_spec(batch__maxLockedFraction="half"), "must be a fraction between 0 and 1"),
    (with_spec(throttle__replicationLag="12 seconds"),
     'spec.throttle.replicationLag: Invalid value: "12 seconds": must be a duration such as '
     '0s, 5s or 1m (0s: off)'),
    (with_spec(throttle__autovacuum="yes"), "spec.throttle.autovacuum: Invalid value: "
     '"string": spec.throttle.autovacuum in body must be of type boolean'),
    (with_spec(throttle__checkInterval="0s"), "spec.throttle.checkInterval: Invalid value: "
     '"0s": must be a duration above zero such as 500ms or 1s'),
    (with_spec(haltOn__activeBackends=-5), "spec.haltOn.activeBackends: Invalid value: -5"),
    (with_spec(template={"spec": {"envFrom": [{"secretRef": {"name": "db"}}]}}),
     "spec.template.spec.envFrom: Forbidden: template.spec is a pod spec: put envFrom on the "
     "container named worker"),
    (with_spec(template={"spec": {"containers": [{"name": "worker", "image": "x:1"}]}}),
     "spec.template.spec.containers[0].image: Forbidden: the worker container's image comes "
     "from spec.image"),
    (with_spec(template={"spec": {"restartPolicy": "OnFailure"}}),
     "spec.template.spec.restartPolicy: Invalid value: must be Never"),
    (with_spec(template={"spec": {"volumes": [{"secret": {"secretName": "ca"}}]}}),
     "spec.template.spec.volumes[0].name: Required value"),
    (with_spec(template={"spec": {"containers": [{"name": "Bad_Name"}]}}),
     "spec.template.spec.containers[0].name"),
    (with_spec(image="   "), "spec.image: Invalid value: \"   \": must be an image reference"),
    (with_spec(image="shop:1 --privileged"), "(no spaces)"),
    (with_spec(migration__name="../../etc/passwd"),
     "spec.migration.name: Invalid value: \"../../etc/passwd\": must be a Django "
     "migration name"),
    (with_spec(migration__name="0002/customer"), "no path separators"),
    (with_spec(migration__app="shop/../x"), "spec.migration.app"),
    (with_spec(migration__operation=-1), "spec.migration.operation: Invalid value: -1"),
    (with_spec(batch__size="100"),
     'spec.batch.size: Invalid value: "string": spec.batch.size in body must be of type '
     "integer"),
    (with_spec(backoffLimit=1000), "spec.backoffLimit: Invalid value: 1000"),
    (with_spec(timeouts__statement="-5s"), "must be a duration above zero"),
    (with_spec(retries__backoff="5"), "spec.retries.backoff"),
    (with_spec(database="other/db"), "spec.database: Invalid value: \"other/db\": must be a "
     "database alias"),
    (with_spec(command=[""]), "spec.command[0]"),
    (with_spec(suspend="yes"), "spec.suspend: Invalid value: \"string\""),
    (with_spec(dryrun=True), 'unknown field "spec.dryrun"'),  # it is dryRun
    (with_spec(dryRun=True, retryFailed=True),
     "spec.retryFailed: Invalid value: cannot be true together with spec.dryRun"),
]


def apply(k8s: Cluster, body: dict[str, Any], dry_run: bool = True) -> Any:
    import json

    args = ["apply", "-f", "-"] + (["--dry-run=server"] if dry_run else [])
    return k8s.kubectl(*args, input=json.dumps(body), check=False)


def test_a_valid_spec_is_accepted_and_defaulted(k8s: Cluster) -> None:
    result = apply(k8s, VALID, dry_run=False)
    assert result.returncode == 0, result.stderr
    body = k8s.api("GET", "/apis/chunkwise.dev/v1alpha1/namespaces/default/datamigrations/valid")
    spec = body["spec"]
    assert spec["batch"]["size"] == 1000 and spec["timeouts"]["lock"] == "2s"
    assert spec["haltOn"]["failureRate"] == "0.01" and spec["direction"] == "forward"
    assert spec["command"] == ["python", "manage.py", "chunkwise_run"]
    k8s.kubectl("delete", "dmig", "valid", "-n", "default")


@pytest.mark.parametrize(("body", "message"), CASES, ids=[m for _, m in CASES])
def test_invalid_spec_is_rejected_with_a_clear_message(k8s: Cluster, body: dict[str, Any],
                                                       message: str) -> None:
    result = apply(k8s, body)
    assert result.returncode != 0, f"accepted: {body['spec']}"
    assert message in result.stderr, result.stderr


def test_running_migration_cannot_change_what_it_runs(k8s: Cluster, operator: Any) -> None:
    body = copy.deepcopy(VALID)
    body["metadata"]["name"] = "immutable"
    body["spec"]["suspend"] = True  # the operator makes a suspended Job: no pod runs
    assert apply(k8s, body, dry_run=False).returncode == 0
    path = "/apis/chunkwise.dev/v1alpha1/namespaces/default/datamigrations/immutable"
    k8s.wait_for("the operator to settle", lambda: (k8s.api("GET", path).get("status") or {})
                 .get("phase") == "Suspended", timeout=60)
    changed = copy.deepcopy(body)
    changed["spec"]["migration"]["name"] = "0003"
    # the operator owns the status and may write its own phase back between the test's
    # status patch and its apply (then the change is allowed, and undone): try again
    for _ in range(5):
        k8s.api("PATCH", path + "/status", {"status": {"phase": "Running"}},
                "application/merge-patch+json")
        result = apply(k8s, changed)
        if result.returncode != 0:
            break
        assert apply(k8s, body).returncode == 0  # not Running then: the change undone
    assert result.returncode != 0, "a Running migration's spec.migration was changed"
    assert "spec.migration: Forbidden: cannot change while the migration is Running; set " \
        "spec.suspend=true first" in result.stderr
    tuned = copy.deepcopy(body)
    tuned["spec"]["batch"] = {"size": 500}
    assert apply(k8s, tuned).returncode == 0  # tuning may change at any time
    k8s.kubectl("delete", "dmig", "immutable", "-n", "default")


def test_a_sidecar_and_a_volume_reach_the_job(k8s: Cluster, operator: Any) -> None:
    """A database proxy as a native sidecar and a CA certificate volume, as a user writes
    them in the template, end up in the Job the real API server accepted."""
    proxy = {"name": "db-proxy", "image": "proxy:2", "restartPolicy": "Always",
             "args": ["--port=5432"]}
    body = copy.deepcopy(VALID)
    body["metadata"]["name"] = "with-proxy"
    body["spec"]["suspend"] = True  # a suspended Job: no pod has to run
    body["spec"]["template"] = {"spec": {
        "initContainers": [proxy],
        "volumes": [{"name": "db-ca", "secret": {"secretName": "shop-db-ca"}}],
        "containers": [{"name": "worker",
                        "volumeMounts": [{"name": "db-ca", "mountPath": "/etc/db-ca",
                                          "readOnly": True}],
                        "env": [{"name": "PGSSLROOTCERT", "value": "/etc/db-ca/ca.crt"}]}]}}
    assert apply(k8s, body, dry_run=False).returncode == 0
    path = "/apis/batch/v1/namespaces/default/jobs/with-proxy-run1"
    job = k8s.wait_for("the operator to create the Job", lambda: k8s.api("GET", path),
                       timeout=60)
    pod = job["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["db-proxy"]
    assert pod["initContainers"][0]["restartPolicy"] == "Always"
    assert {"name": "db-ca", "secret": {"secretName": "shop-db-ca", "defaultMode": 420}} in \
        pod["volumes"]
    (worker,) = pod["containers"]
    assert worker["image"] == "shop:1"
    assert {"name": "db-ca", "mountPath": "/etc/db-ca", "readOnly": True} in \
        worker["volumeMounts"]
    assert {"name": "PGSSLROOTCERT", "value": "/etc/db-ca/ca.crt"} in worker["env"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert worker["securityContext"]["readOnlyRootFilesystem"] is True
    k8s.kubectl("delete", "dmig", "with-proxy", "-n", "default")


def test_kubectl_explain_teaches_what_each_field_does(k8s: Cluster) -> None:
    """The CRD's descriptions reach `kubectl explain` (OpenAPI v3 from the API server)."""
    # a CRD just Established may not be in the API server's published OpenAPI yet
    k8s.wait_for("kubectl explain to know the DataMigration", lambda: k8s.kubectl(
        "explain", "datamigration.spec", check=False).returncode == 0, timeout=60)
    explained = k8s.kubectl("explain", "datamigration.spec.throttle").stdout
    text = " ".join(explained.split())  # kubectl wraps descriptions at its own width
    assert "Database health, read before a batch at most every checkInterval" in text, \
        explained
    assert "replicationLag <string>" in text and "Wait while the worst replica's replay lag" \
        in text, explained
    batch = " ".join(k8s.kubectl("explain", "datamigration.spec.batch").stdout.split())
    assert "Batch sizing and pacing." in batch and "Smallest batch the tuner may choose." \
        in batch, batch
