"""The Helm chart: lint, what each value changes in the rendered manifests, and the
schema refusing bad values with a message that names them. Real helm (built by
tests/e2e/testenv/build.sh); the install itself is exercised by every e2e test."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import chunkwise
from tests.e2e.testenv.cluster import build_binaries

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "chunkwise"


@pytest.fixture(scope="module")
def helm() -> Path:
    return build_binaries() / "helm"


def render(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), "template", "chunkwise", str(CHART), "--namespace",
                           "chunkwise-system", "--kube-version", "v1.36.3", *args],
                          capture_output=True, text=True,
                          timeout=60)


def manifests(helm: Path, *args: str) -> list[dict[str, Any]]:
    result = render(helm, *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def kinds(docs: list[dict[str, Any]], kind: str) -> Iterator[dict[str, Any]]:
    return (d for d in docs if d["kind"] == kind)


def deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = kinds(docs, "Deployment")
    return found


def test_lint_strict(helm: Path) -> None:
    result = subprocess.run([str(helm), "lint", "--strict", str(CHART)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_charts_crd_is_the_repositorys() -> None:
    copy = (CHART / "files" / "datamigration.yaml").read_text()
    assert copy == (REPO / "crds" / "datamigration.yaml").read_text(), (
        "cp crds/datamigration.yaml charts/chunkwise/files/ (the chart carries a copy)")


def test_defaults_are_secure_and_cluster_wide(helm: Path) -> None:
    docs = manifests(helm)
    pod = deployment(docs)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["securityContext"] == {"allowPrivilegeEscalation": False,
                                            "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["image"] == f"ghcr.io/chunkwise/chunkwise:{chunkwise.__version__}"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert deployment(docs)["spec"]["strategy"] == {"type": "Recreate"}
    assert [r["metadata"]["name"] for r in kinds(docs, "ClusterRole")] == [
        "chunkwise-crds", "chunkwise"]
    assert list(kinds(docs, "Role")) == []
    rules = next(r for r in kinds(docs, "ClusterRole") if r["metadata"]["name"] == "chunkwise")
    assert all("secrets" not in rule["resources"] for rule in rules["rules"])
    labels = deployment(docs)["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "chunkwise"
    assert labels["app.kubernetes.io/instance"] == "chunkwise"


def test_a_namespace_list_gives_roles_there_and_watches_only_them(helm: Path) -> None:
    docs = manifests(helm, "--set", "rbac.namespaces={shop,billing}")
    assert sorted(r["metadata"]["namespace"] for r in kinds(docs, "Role")) == ["billing",
                                                                               "shop"]
    assert sorted(b["metadata"]["namespace"] for b in kinds(docs, "RoleBinding")) == [
        "billing", "shop"]
    assert [r["metadata"]["name"] for r in kinds(docs, "ClusterRole")] == ["chunkwise-crds"]
    args = deployment(docs)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=shop" in args and "--namespace=billing" in args


def test_image_digest_wins_over_tag_and_overrides_apply(helm: Path) -> None:
    digest = "sha256:" + "a" * 64
    docs = manifests(helm, "--set", "image.repository=registry.local/chunkwise",
                     "--set", "image.tag=1.2.3", "--set", f"image.digest={digest}",
                     "--set", "extraEnv[0].name=HTTPS_PROXY",
                     "--set", "extraEnv[0].value=http://proxy:3128",
                     "--set", "securityContext.readOnlyRootFilesystem=false",
                     "--set", "podLabels.team=data", "--set", "priorityClassName=critical")
    pod = deployment(docs)["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["image"] == f"registry.local/chunkwise@{digest}"
    assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in container["env"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is False
    assert pod["metadata"]["labels"]["team"] == "data"
    assert pod["spec"]["priorityClassName"] == "critical"
    tagged = manifests(helm, "--set", "image.tag=1.2.3")
    assert deployment(tagged)["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "ghcr.io/chunkwise/chunkwise:1.2.3")


def test_crd_switches(helm: Path) -> None:
    (crd,) = kinds(manifests(helm), "CustomResourceDefinition")
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert crd["spec"] == yaml.safe_load((REPO / "crds" / "datamigration.yaml").read_text())[
        "spec"]
    (unkept,) = kinds(manifests(helm, "--set", "crds.keep=false"), "CustomResourceDefinition")
    assert "annotations" not in unkept["metadata"]
    assert list(kinds(manifests(helm, "--set", "crds.enabled=false"),
                      "CustomResourceDefinition")) == []


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "image.tga=1"], "at '/image': additional properties 'tga' not allowed"),
    (["--set", "replicaCount=2"], "at '/replicaCount': maximum: got 2, want 1"),
    (["--set", "crds.enabled=maybe"], "at '/crds/enabled'"),
    (["--set", "operator.stallCheckInterval=soon"], "at '/operator/stallCheckInterval'"),
])
def test_schema_rejects_bad_values_naming_them(helm: Path, args: list[str],
                                               message: str) -> None:
    result = render(helm, *args)
    assert result.returncode != 0
    assert message in result.stderr


def leaf_keys(values: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        is_group = isinstance(value, dict) and value and path not in _OPAQUE
        keys |= leaf_keys(value, path + ".") if is_group else {path}
    return keys


_OPAQUE = {"resources", "podSecurityContext", "securityContext"}  # passed through whole


def test_the_install_guide_shows_a_values_table_naming_every_value() -> None:
    """docs/how-to/install-chart.md includes the chart README's values table (generated
    from values.yaml, checked fresh below), and that table names every value."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    guide = (REPO / "docs" / "how-to" / "install-chart.md").read_text()
    assert '--8<-- "charts/chunkwise/README.md:' in guide
    readme = (CHART / "README.md").read_text()
    table = readme[readme.index("| Key | Type | Default | Description |"):]
    table = table[:table.index("\n\n")] if "\n\n" in table else table
    named = {row.split("|")[1].strip(" `") for row in table.splitlines()[2:]}
    # a leaf is named itself, or by its group's row, which shows the group's defaults
    # (each alert's for/severity/threshold)
    unnamed = {leaf for leaf in leaf_keys(values)
               if not any(leaf == row or leaf.startswith(row + ".") for row in named)}
    assert not unnamed, unnamed


def test_the_admission_policy_is_on_by_default_and_can_be_turned_off(helm: Path) -> None:
    docs = manifests(helm)
    (policy,) = kinds(docs, "ValidatingAdmissionPolicy")
    (binding,) = kinds(docs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    (check,) = policy["spec"]["validations"]
    assert "resource('jobs')" in check["expression"] and "check('create')" in check["expression"]
    off = manifests(helm, "--set", "admissionPolicy.enabled=false")
    assert list(kinds(off, "ValidatingAdmissionPolicy")) == []


def test_the_chart_readme_is_generated_from_values_yaml_and_fresh() -> None:
    """`helm show readme` is charts/chunkwise/README.md: written by scripts/chart-readme.py
    from values.yaml's `# --` comments, so a value added, renamed or described anew
    without rerunning it fails here."""
    import sys

    script = REPO / "scripts" / "chart-readme.py"
    fresh = subprocess.run([sys.executable, str(script), "--check"], capture_output=True,
                           text=True, timeout=60)
    assert fresh.returncode == 0, fresh.stderr
    readme = (REPO / "charts" / "chunkwise" / "README.md").read_text()
    values = yaml.safe_load((REPO / "charts" / "chunkwise" / "values.yaml").read_text())
    for key in values:
        assert f"| `{key}" in readme, key
    assert "| `crds.keep` | bool | `true` | keep the CRD (and so every DataMigration) on " \
        "`helm uninstall` |" in readme
