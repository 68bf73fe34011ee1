"""Throttling on database health: what a reading of the database says the run should do.

Before a batch (at most every ``throttle.checkInterval``) the runner asks a
:class:`HealthProbe` for a :class:`HealthReading` and :func:`judge` compares it with the
thresholds: above a ``haltOn`` (critical) one the run halts, above a ``throttle`` one it
waits and reads again. The probe is the database's (the Django layer reads PostgreSQL's
statistics views); this module only compares numbers, so it is tested without one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

from .settings import Caller, RunSettings, critical_pairs

__all__ = ["HEALTH_REASONS", "HealthProbe", "HealthReading", "Throttle", "judge",
           "wanted_figures", "watched"]


@dataclass(frozen=True)
class HealthReading:
    """What the database said; None where it was not asked (no threshold) or cannot tell."""

    #: active client backends, this session excluded
    active_backends: int | None = None
    #: seconds, the worst replica's replay lag (0 when none lags or there is none)
    replication_lag: float | None = None
    #: seconds, the oldest open transaction of another session
    transaction_age: float | None = None
    #: undo log entries InnoDB has yet to purge (MariaDB/MySQL)
    history_list_length: int | None = None
    #: how autovacuum is working on the table ("autovacuum on shop_customer for 12s
    #: (scanning heap)"), None when it is not
    autovacuum: str | None = None
    #: the throttle query's first value, as a number
    query_value: float | None = None


class HealthProbe(Protocol):
    def read(self, settings: RunSettings) -> HealthReading:
        """Read what ``settings`` has thresholds for, outside any batch transaction."""
        ...


@dataclass(frozen=True)
class Throttle:
    """Why the run waits (or, ``critical``, halts)."""

    reason: str  #: snake_case: the ``reason`` label of chunkwise_throttled_seconds_total
    message: str  #: the measured value against its threshold: "replication lag 12.3s > 5s"
    critical: bool = False

    @property
    def condition_reason(self) -> str:
        """CamelCase, for the Throttled condition (or, critical, the halt's reason)."""
        camel = "".join(word.title() for word in self.reason.split("_"))
        return f"Critical{camel}" if self.critical else camel


#: the figures compared with a number: the field of HealthReading, ThrottleSettings and
#: HaltThresholds alike (and the metric's reason), as people read it, whether in seconds.
#: Checked in this order; their spec names come from the tunables table.
_GAUGES: Final = (("replication_lag", "replication lag", True),
                  ("transaction_age", "oldest transaction", True),
                  ("active_backends", "active backends", False),
                  ("history_list_length", "InnoDB history list length", False))
#: (figure, critical) -> the tunable that sets its level, for the messages
_LEVELS: Final = {(halt.field, critical): tunable for halt, throttle in critical_pairs()
                  for tunable, critical in ((halt, True), (throttle, False))}
#: every reason a health check can give, for the metric's label values
HEALTH_REASONS: Final = (*(name for name, _, _ in _GAUGES), "autovacuum", "throttle_query")


def wanted_figures(settings: RunSettings) -> list[str]:
    """The HealthReading fields that have a threshold, so the probe reads only those."""
    throttle, halt = settings.throttle, settings.halt_on
    wanted = [name for name, _, _ in _GAUGES
              if getattr(throttle, name) or getattr(halt, name)]
    return wanted + ["autovacuum"] if throttle.autovacuum else wanted


def watched(settings: RunSettings) -> bool:
    """Whether any health threshold is set (else nothing is read, at no cost)."""
    return bool(wanted_figures(settings) or settings.throttle.query.strip())


def _show(value: float, limit: float, seconds: bool) -> tuple[str, str]:
    """The reading and its limit as people read them: "12.3s > 5s"; more digits when one
    would round down onto the limit ("5.004s > 5s", not "5.0s > 5s")."""
    if not seconds:
        return f"{value:g}", f"{limit:g}"
    shown = f"{value:.1f}"
    if float(shown) <= limit:
        shown = f"{value:.3f}"
    return f"{shown}s", f"{limit:g}s"


def judge(reading: HealthReading, settings: RunSettings,
          caller: Caller | None = None) -> Throttle | None:
    """The first critical threshold passed, else the first throttle threshold passed,
    else None (healthy). Critical first: a halt must not wait behind a throttle. A
    throttle names its spec field, as the Throttled condition shows it; a critical level,
    which halts the run, the knob ``caller``'s user turns (the spec field without one)."""
    for critical, limits in ((True, settings.halt_on), (False, settings.throttle)):
        for name, label, seconds in _GAUGES:
            limit = getattr(limits, name)
            value = getattr(reading, name)
            if limit and value is not None and value > limit:
                shown, bound = _show(value, limit, seconds)
                level = _LEVELS[name, critical]
                knob = caller.knob(level) if critical and caller else level.spec
                return Throttle(name, f"{label} {shown} > {bound} ({knob})", critical)
    if settings.throttle.autovacuum and reading.autovacuum:
        return Throttle("autovacuum", f"{reading.autovacuum} (throttle.autovacuum)")
    if settings.throttle.query.strip() and (reading.query_value or 0) > 0:
        return Throttle("throttle_query",
                        f"throttle.query returned {reading.query_value:g} (> 0 waits)")
    return None
