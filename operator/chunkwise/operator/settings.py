"""The controller's own settings, from ``CHUNKWISE_OPERATOR_*`` environment variables
(the chart sets them). Named apart from ``kopf.OperatorSettings``, which is kopf's."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from chunkwise.contract import Env
from chunkwise.engine import parse_duration

__all__ = ["ControllerSettings"]


@dataclass(frozen=True)
class ControllerSettings:
    #: seconds between stall checks of each running migration; a stall is noticed at most
    #: this long after ``spec.stallAfter`` has passed.
    stall_check_interval: float = 30.0
    #: attempts of one API call on 429 and 5xx answers and dropped or refused connections
    #: (with backoff, honouring Retry-After), within ``api_timeout``, before the handler
    #: gives up and kopf retries it later.
    api_attempts: int = 5
    #: seconds one API call may take, its retries included (an attempt waits at most 5 s
    #: to connect): a call on a connection that went silent fails and the handler is
    #: retried 5 s later, rather than holding one of kopf's few handler threads, and with
    #: it every other DataMigration, for minutes.
    api_timeout: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ControllerSettings:
        env = os.environ if env is None else env
        name = f"{Env.OPERATOR_PREFIX}STALL_CHECK_INTERVAL"
        raw = env.get(name)
        if raw is None:
            return cls()
        return cls(stall_check_interval=parse_duration(raw, field_name=name))
