"""The operator is no way around RBAC: the chart's ValidatingAdmissionPolicy admits a
DataMigration, or a change to its spec, only from someone who may create Jobs in its
namespace. Checked by the real API server with real ServiceAccounts' tokens."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_validation import VALID
from tests.e2e.testenv.cluster import Cluster

pytestmark = pytest.mark.e2e
NAMESPACE = "admission"


def role(name: str, rules: list[dict[str, Any]]) -> str:
    return json.dumps({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                       "metadata": {"name": name, "namespace": NAMESPACE}, "rules": rules})


DATAMIGRATIONS = {"apiGroups": ["chunkwise.dev"], "resources": ["datamigrations"],
                  "verbs": ["get", "list", "create", "update", "patch"]}
JOBS = {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}


@pytest.fixture(scope="module")
def authors(k8s: Cluster) -> dict[str, Path]:
    """Two people who may write DataMigrations: one of them may also create Jobs."""
    k8s.kubectl("create", "namespace", NAMESPACE)
    kubeconfigs = {}
    for author, rules in (("may-not-create-jobs", [DATAMIGRATIONS]),
                          ("may-create-jobs", [DATAMIGRATIONS, JOBS])):
        k8s.kubectl("create", "serviceaccount", author, "-n", NAMESPACE)
        k8s.kubectl("apply", "-f", "-", input=role(author, rules))
        k8s.kubectl("create", "rolebinding", author, "-n", NAMESPACE, f"--role={author}",
                    f"--serviceaccount={NAMESPACE}:{author}")
        kubeconfigs[author] = k8s.kubeconfig_for(NAMESPACE, author)
    return kubeconfigs


def migration(name: str, **spec: Any) -> dict[str, Any]:
    body = copy.deepcopy(VALID)
    body["metadata"] = {"name": name, "namespace": NAMESPACE}
    body["spec"].update(spec)
    return body


def apply_as(k8s: Cluster, kubeconfig: Path | None, body: dict[str, Any],
             dry_run: bool = True) -> Any:
    args = ["apply", "-f", "-"] + (["--dry-run=server"] if dry_run else [])
    return k8s.kubectl(*args, input=json.dumps(body), check=False, kubeconfig=kubeconfig)


def test_an_author_who_may_not_create_jobs_is_refused(k8s: Cluster,
                                                       authors: dict[str, Path]) -> None:
    refused = apply_as(k8s, authors["may-not-create-jobs"], migration("sneaky"))
    assert refused.returncode != 0
    assert ("its author must be allowed to create Jobs in namespace admission, and "
            "system:serviceaccount:admission:may-not-create-jobs is not") in refused.stderr
    allowed = apply_as(k8s, authors["may-create-jobs"], migration("honest"))
    assert allowed.returncode == 0, allowed.stderr


def test_changing_the_spec_is_checked_too_but_not_metadata(k8s: Cluster,
                                                            authors: dict[str, Path]) -> None:
    created = apply_as(k8s, None, migration("existing", suspend=True), dry_run=False)
    assert created.returncode == 0, created.stderr  # by the cluster admin
    path = f"/apis/chunkwise.dev/v1alpha1/namespaces/{NAMESPACE}/datamigrations/existing"
    current = k8s.api("GET", path)
    swapped = migration("existing", suspend=True, image="attacker/tool:latest")
    swapped["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    refused = apply_as(k8s, authors["may-not-create-jobs"], swapped)
    assert refused.returncode != 0 and "must be allowed to create Jobs" in refused.stderr
    labelled = k8s.kubectl("label", "dmig", "existing", "-n", NAMESPACE, "team=data",
                           check=False, kubeconfig=authors["may-not-create-jobs"])
    assert labelled.returncode == 0, labelled.stderr  # metadata only: no new pod can follow
    k8s.kubectl("delete", "dmig", "existing", "-n", NAMESPACE)
