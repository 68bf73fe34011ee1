"""Operator settings, from ``CHUNKWISE_OPERATOR_*`` environment variables (the chart sets them)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from chunkwise.engine import parse_duration

__all__ = ["OperatorSettings"]


@dataclass(frozen=True)
class OperatorSettings:
    #: seconds between stall checks of each running migration; a stall is noticed at most
    #: this long after ``spec.stallAfter`` has passed.
    stall_check_interval: float = 30.0
    #: the group/version/plural the operator serves; one place, so tests and chart agree.
    group: str = "chunkwise.dev"
    version: str = "v1alpha1"
    plural: str = "datamigrations"

    @classmethod
    def from_env(cls) -> OperatorSettings:
        raw = os.environ.get("CHUNKWISE_OPERATOR_STALL_CHECK_INTERVAL")
        if raw is None:
            return cls()
        return cls(stall_check_interval=parse_duration(
            raw, field_name="CHUNKWISE_OPERATOR_STALL_CHECK_INTERVAL"))
