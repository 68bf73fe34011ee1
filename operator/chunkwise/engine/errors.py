"""What a failed batch means: retry it, isolate its bad rows, or stop.

Classification is by SQLSTATE (PostgreSQL) found anywhere in the exception's
cause chain, so it works for psycopg errors and for the Django wrappers around
them. SQLite has no SQLSTATE; its "database is locked" is treated as a lock
timeout.
"""

from __future__ import annotations

import enum
from typing import Final

from chunkwise.contract import ExitCode

__all__ = [
    "AnotherRunnerActive",
    "DatabaseUnreachable",
    "ErrorKind",
    "ExitCode",
    "Halted",
    "LockWaitsExhausted",
    "RetriesExhausted",
    "classify",
    "sqlstate_of",
]


class ErrorKind(enum.Enum):
    LOCK_TIMEOUT = "lock_timeout"  # 55P03, SQLite busy
    STATEMENT_TIMEOUT = "statement_timeout"  # 57014
    DEADLOCK = "deadlock"  # 40P01
    SERIALIZATION = "serialization"  # 40001
    SHUTDOWN = "shutdown"  # 57P01-57P03: admin/crash shutdown, cannot connect now
    CONNECTION = "connection"  # class 08 or a dropped socket
    ROW_ERROR = "row_error"  # data, integrity, syntax classes, exceptions in user code

    @property
    def retryable(self) -> bool:
        return self is not ErrorKind.ROW_ERROR

    @property
    def is_timeout(self) -> bool:
        return self in (ErrorKind.LOCK_TIMEOUT, ErrorKind.STATEMENT_TIMEOUT)


_BY_SQLSTATE: Final = {
    "55P03": ErrorKind.LOCK_TIMEOUT,
    "57014": ErrorKind.STATEMENT_TIMEOUT,
    "40P01": ErrorKind.DEADLOCK,
    "40001": ErrorKind.SERIALIZATION,
    "57P01": ErrorKind.SHUTDOWN,
    "57P02": ErrorKind.SHUTDOWN,
    "57P03": ErrorKind.SHUTDOWN,
}


def sqlstate_of(exc: BaseException) -> str | None:
    """The first SQLSTATE found along ``__cause__``/``__context__``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        state = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(state, str) and state:
            return state
        current = current.__cause__ or current.__context__
    return None


def _is_connection_loss(exc: BaseException) -> bool:
    names: set[str] = set()
    current: BaseException | None = exc
    while current is not None and len(names) < 10:
        names.add(type(current).__name__)
        current = current.__cause__ or current.__context__
    text = str(exc).lower()
    return bool(
        names & {"InterfaceError", "ConnectionFailure", "ConnectionException"}
        or "connection" in text and ("closed" in text or "lost" in text or "terminat" in text
                                     or "refused" in text or "failed" in text)
        or "server closed the connection" in text
        or "consuming input failed" in text
    )


def classify(exc: BaseException) -> ErrorKind:
    state = sqlstate_of(exc)
    if state is not None:
        if state in _BY_SQLSTATE:
            return _BY_SQLSTATE[state]
        if state.startswith("08"):
            return ErrorKind.CONNECTION
        return ErrorKind.ROW_ERROR
    if "database is locked" in str(exc) or "database table is locked" in str(exc):
        return ErrorKind.LOCK_TIMEOUT
    if type(exc).__name__ in {"OperationalError", "InterfaceError"} and _is_connection_loss(exc):
        return ErrorKind.CONNECTION
    return ErrorKind.ROW_ERROR


class Halted(Exception):
    """The error budget was exceeded. Orderly: the checkpoint is committed."""

    exit_code = ExitCode.HALTED

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # CamelCase, for conditions and events
        self.message = message


class RetriesExhausted(Exception):
    """A batch kept failing for a retryable reason; the run stops, resumable."""

    exit_code = ExitCode.ERROR


class DatabaseUnreachable(RetriesExhausted):
    """Every attempt of a batch lost or could not open its connection."""


class LockWaitsExhausted(RetriesExhausted):
    """Every attempt of a batch timed out waiting for row locks that others hold."""


class AnotherRunnerActive(Exception):
    """Another runner holds this migration's lock."""

    exit_code = ExitCode.BUSY
