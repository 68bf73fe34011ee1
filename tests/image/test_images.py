"""The two Dockerfiles, built for real (scripts/build-image: buildah on a debootstrapped
Debian base) and run as their images' non-root user. The e2e tests run the operator from
its image against the control plane; here the application image runs a batched
migration, as a DataMigration's worker pod would."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.images import BUILDAH, build_image

pytestmark = pytest.mark.image
REPO = Path(__file__).resolve().parents[2]


class Container:
    def __init__(self, image: str) -> None:
        self.image = image
        self.name = subprocess.run([*BUILDAH, "from", image], capture_output=True, text=True,
                                   check=True, timeout=600).stdout.strip()

    def run(self, *command: str, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        flags = [arg for key, value in (env or {}).items() for arg in ("--env", f"{key}={value}")]
        return subprocess.run([*BUILDAH, "run", "--isolation", "chroot", *flags, self.name,
                               "--", *command], capture_output=True, text=True, timeout=600)

    def remove(self) -> None:
        subprocess.run([*BUILDAH, "rm", self.name], capture_output=True)


@pytest.fixture(scope="module")
def operator_image() -> Iterator[Container]:
    container = Container(build_image())
    yield container
    container.remove()


@pytest.fixture(scope="module")
def shop_image() -> Iterator[Container]:
    container = Container(build_image("examples/shop/Dockerfile", "shop"))
    yield container
    container.remove()


def test_operator_image_runs_as_non_root_without_django(operator_image: Container) -> None:
    assert operator_image.run("id", "-u").stdout.strip() == "65532"
    usage = operator_image.run("python3", "-m", "chunkwise.operator", "--help")
    assert usage.returncode == 0 and "--liveness" in usage.stdout
    django = operator_image.run("python3", "-c", "import django")
    assert django.returncode != 0, "the operator image carries only the operator's dependencies"
    assert operator_image.run("sh", "-c", "command -v pip gcc").stdout.strip() == ""


def test_operator_image_carries_the_licence_and_its_version_labels(
        operator_image: Container) -> None:
    import json

    import chunkwise

    for name in ("LICENSE", "NOTICE"):
        shipped = operator_image.run("cat", f"/licenses/{name}").stdout
        assert shipped == (REPO / name).read_text(), name
    inspected = subprocess.run([*BUILDAH, "inspect", "--type", "image", operator_image.image],
                               capture_output=True, text=True, check=True).stdout
    labels = json.loads(inspected)["OCIv1"]["config"]["Labels"]
    head = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%H %cI"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert labels["org.opencontainers.image.version"] == chunkwise.__version__
    assert [labels["org.opencontainers.image.revision"],
            labels["org.opencontainers.image.created"]] == head
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"


def test_application_image_runs_a_batched_migration(shop_image: Container) -> None:
    env = {"SHOP_SQLITE_PATH": "/tmp/shop.sqlite3"}
    assert shop_image.run("id", "-u").stdout.strip() == "65532"
    for command in (["migrate", "chunkwise"], ["migrate", "shop", "0001"],
                    ["seed_customers", "3000"]):
        result = shop_image.run("python", "manage.py", *command, env=env)
        assert result.returncode == 0, result.stderr
    run = shop_image.run("python", "manage.py", "chunkwise_run", "shop", "0002", env=env)
    assert run.returncode == 0, run.stderr
    assert "done (Completed)" in run.stderr
    count = shop_image.run("python", "manage.py", "shell", "-v0", "-c",
                           "from shop.models import Customer; "
                           "print(Customer.objects.filter(status__isnull=True).count())", env=env)
    assert count.stdout.strip() == "0", count.stderr
