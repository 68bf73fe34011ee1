"""Container images for the tests: scripts/build-image (buildah, cached by a hash of what
goes into an image), and buildah itself with the storage that script uses."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILDAH = ["buildah", "--storage-driver", "vfs"]  # works in any container or VM

__all__ = ["BUILDAH", "build_image"]


def build_image(*args: str) -> str:
    """scripts/build-image ARGS; the image's local name. Its errors go into the report."""
    built = subprocess.run([str(REPO / "scripts" / "build-image"), *args],
                           capture_output=True, text=True, timeout=1800)
    assert built.returncode == 0, built.stderr[-4000:]
    return built.stdout.strip().splitlines()[-1]
