"""The release, as users get it: scripts/release against the node's registry, the chart
installed from there with `helm install oci://...` (the session's install), and a
`helm upgrade` to a newer release, then a `helm rollback`, in the middle of a run."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import (
    OPERATOR_NAMESPACE,
    RELEASE,
    REPO,
    SEEDED,
    OperatorDeployment,
    Release,
    Shop,
    make_release,
)
from tests.e2e.test_user_path import count_visit, visits, wait_rows
from tests.e2e.testenv.cluster import Cluster

pytestmark = pytest.mark.e2e
CRD = "customresourcedefinition/datamigrations.chunkwise.dev"
NEXT = "0.1.1"  # the newer release's version, made from a copy of this checkout


def test_the_release_ships_the_licence_and_is_installed_from_the_registry(
        k8s: Cluster, release: Release, operator: OperatorDeployment) -> None:
    [wheel] = release.dist.glob("*.whl")
    [sdist] = release.dist.glob("*.tar.gz")
    assert f"  image   {release.image_repository}:{release.version}" in release.output
    names = zipfile.ZipFile(wheel).namelist()
    info = f"chunkwise-{release.version}.dist-info"
    assert {f"{info}/licenses/LICENSE", f"{info}/licenses/NOTICE", "chunkwise/py.typed",
            "chunkwise/django/__init__.py", "chunkwise/operator/__init__.py"} <= set(names)
    assert not any(name.startswith("tests/") for name in names)
    with tarfile.open(sdist) as archive:
        inside = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"LICENSE", "NOTICE", "pyproject.toml", "README.md"} <= inside
    shown = yaml.safe_load(k8s.helm("show", "chart", release.chart, "--version",
                                     release.version, "--plain-http").stdout)
    assert (shown["version"], shown["appVersion"]) == (release.version, release.version)
    assert shown["annotations"]["artifacthub.io/license"] == "Apache-2.0"
    readme = k8s.helm("show", "readme", release.chart, "--version", release.version,
                      "--plain-http").stdout
    assert readme.strip() == (REPO / "charts" / "chunkwise" / "README.md").read_text().strip()
    [installed] = json.loads(k8s.helm("list", "-n", OPERATOR_NAMESPACE, "-o", "json").stdout)
    assert installed["chart"] == f"chunkwise-{release.version}"
    pod = operator.pod()
    assert pod["spec"]["containers"][0]["image"] == \
        f"{release.image_repository}:{release.version}"
    [status] = pod["status"]["containerStatuses"]
    assert status["imageID"].startswith(f"{release.image_repository}@sha256:")  # pulled


def newer_release(registry: str, tmp: Path) -> Release:
    """A copy of this checkout as release NEXT: its version, a changelog entry, and a CRD
    schema with one more optional field (a compatible change)."""
    checkout = tmp / "next"
    subprocess.run(["git", "clone", "--quiet", "--shared", str(REPO), str(checkout)],
                   check=True)
    os.symlink(REPO / ".venv", checkout / ".venv")
    init = checkout / "operator" / "chunkwise" / "__init__.py"
    version = init.read_text().split('__version__ = "')[1].split('"')[0]
    init.write_text(init.read_text().replace(f'"{version}"', f'"{NEXT}"'))
    chart = checkout / "charts" / "chunkwise" / "Chart.yaml"
    chart.write_text(chart.read_text().replace(f"version: {version}", f"version: {NEXT}")
                     .replace(f'appVersion: "{version}"', f'appVersion: "{NEXT}"'))
    changelog = checkout / "CHANGELOG.md"
    changelog.write_text(changelog.read_text().replace(
        "## [Unreleased]\n", f"## [Unreleased]\n\n## [{NEXT}] - 2026-12-04\n\n- e2e\n"))
    crd_path = checkout / "charts" / "chunkwise" / "files" / "datamigration.yaml"
    crd = yaml.safe_load(crd_path.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["upgradeNote"] = {"type": "string",
                                         "description": "added by the newer release"}
    crd_path.write_text(yaml.safe_dump(crd, sort_keys=False))
    subprocess.run(["git", "-C", str(checkout), "-c", "user.name=e2e", "-c",
                    "user.email=e2e@example.com", "commit", "-qam", f"release {NEXT}"],
                   check=True)
    return make_release(registry, checkout, {"CHUNKWISE_KEEP_IMAGES": "1"})


def crd_fields(k8s: Cluster) -> set[str]:
    crd = json.loads(k8s.kubectl("get", CRD, "-o", "json").stdout)
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return set(schema["properties"]["spec"]["properties"])


def operator_at(k8s: Cluster, operator: OperatorDeployment, version: str,
                before: str) -> str:
    """Wait for the Deployment's pod to be a new one running ``version``; its uid."""
    def replaced() -> str | None:
        live = operator.live_pods()
        if len(live) == 1 and live[0]["metadata"]["uid"] != before and \
                live[0]["spec"]["containers"][0]["image"].endswith(f":{version}"):
            return str(live[0]["metadata"]["uid"])
        return None

    uid = str(k8s.wait_for(f"the operator's pod at {version}", replaced, timeout=240))
    operator.wait_ready()
    return uid


def test_helm_upgrade_then_rollback_in_the_middle_of_a_run(
        shop: Shop, release: Release, operator: OperatorDeployment, tmp_path: Path) -> None:
    k8s = shop.k8s
    newer = newer_release(release.registry, tmp_path)
    shop.apply(count_visit(rate=400))  # 20,000 rows at 400 rows/s: the run outlasts both
    wait_rows(shop, "count-visit", 1000)
    assert "upgradeNote" not in crd_fields(k8s)
    first = operator.pod()["metadata"]["uid"]
    k8s.helm("upgrade", RELEASE, newer.chart, "--version", NEXT, "--plain-http",
             "--namespace", OPERATOR_NAMESPACE, "--reuse-values",
             "--set", f"image.repository={newer.image_repository}")
    try:
        upgraded = operator_at(k8s, operator, NEXT, first)
        assert "upgradeNote" in crd_fields(k8s)  # the new schema is in place
        assert shop.dmig("count-visit")["status"]["phase"] == "Running"
        rows_at_upgrade = shop.dmig("count-visit")["status"]["progress"]["rowsProcessed"]
        wait_rows(shop, "count-visit", rows_at_upgrade + 1000)  # and the run goes on
    finally:  # the later tests run on the session's release, whatever happened here
        k8s.helm("rollback", RELEASE, "1", "--namespace", OPERATOR_NAMESPACE, "--wait=false")
    operator_at(k8s, operator, release.version, upgraded)
    assert "upgradeNote" not in crd_fields(k8s)
    shop.patch_spec("count-visit", {"batch": {"maxRowsPerSecond": 0}})  # finish now
    body = shop.wait_phase("count-visit", "Succeeded", timeout=240)
    assert [j["metadata"]["name"] for j in shop.jobs()] == ["count-visit-run1"]
    assert body["status"]["run"] == 1
    assert visits(shop) == {1: SEEDED}  # every row once, across both operator changes
