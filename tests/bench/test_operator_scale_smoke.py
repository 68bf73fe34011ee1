"""The operator-at-scale script, tiny, so it cannot rot. Its figures are judged by
reading them (bench/operator_scale.py), not here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def test_operator_scale_script_prints_its_figures() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "operator_scale.py"), "--total", "12",
         "--running", "2", "--probe", "3", "--watch-seconds", "5"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for figure in ("operator RSS: peak", "apply to Job created: p50",
                   "status writes per Running migration per 2 s", "targets"):
        assert figure in result.stdout, figure
