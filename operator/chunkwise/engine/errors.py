"""What a failed batch means: retry it, isolate its bad rows, or stop.

Classification is by SQLSTATE (PostgreSQL) or server error number (MariaDB and
MySQL) found anywhere in the exception's cause chain, so it works for the drivers'
errors and for the Django wrappers around them. SQLite has neither; its "database
is locked" is treated as a lock timeout.
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
    "mysql_errno_of",
    "sqlstate_of",
]


class ErrorKind(enum.Enum):
    LOCK_TIMEOUT = "lock_timeout"  # 55P03, MySQL 1205, SQLite busy
    STATEMENT_TIMEOUT = "statement_timeout"  # 57014, MariaDB 1969, MySQL 3024
    DEADLOCK = "deadlock"  # 40P01, MySQL 1213
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


#: MariaDB's and MySQL's server and client error numbers (their drivers' exceptions,
#: and Django's wrappers of them, carry the number as args[0])
_BY_MYSQL_ERRNO: Final = {
    1205: ErrorKind.LOCK_TIMEOUT,  # innodb_lock_wait_timeout exceeded
    1213: ErrorKind.DEADLOCK,
    1969: ErrorKind.STATEMENT_TIMEOUT,  # MariaDB's max_statement_time exceeded
    3024: ErrorKind.STATEMENT_TIMEOUT,  # MySQL's max_execution_time exceeded
    1317: ErrorKind.STATEMENT_TIMEOUT,  # interrupted (KILL QUERY)
    1053: ErrorKind.SHUTDOWN,  # server shutdown in progress
    1927: ErrorKind.CONNECTION,  # MariaDB: connection was killed
    2002: ErrorKind.CONNECTION,  # cannot connect (socket)
    2003: ErrorKind.CONNECTION,  # cannot connect (TCP)
    2006: ErrorKind.CONNECTION,  # server has gone away
    2013: ErrorKind.CONNECTION,  # lost connection during a query
    2055: ErrorKind.CONNECTION,  # lost connection at handshake
    4031: ErrorKind.CONNECTION,  # MySQL: disconnected by the server (idle)
}
_MYSQL_DRIVERS: Final = ("MySQLdb", "pymysql")


def mysql_errno_of(exc: BaseException) -> int | None:
    """The first MariaDB/MySQL error number found along ``__cause__``/``__context__``:
    args[0] of a driver's exception (mysqlclient's or PyMySQL's)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__module__.split(".")[0] in _MYSQL_DRIVERS and current.args \
                and isinstance(current.args[0], int):
            return current.args[0]
        current = current.__cause__ or current.__context__
    return None


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
    errno = mysql_errno_of(exc)
    if errno in _BY_MYSQL_ERRNO:
        return _BY_MYSQL_ERRNO[errno]
    # a server's error is the row's; the client's own (0: PyMySQL's "the connection is
    # closed", 2000-2999: the client library's) are judged as any driver's below
    if errno is not None and errno != 0 and not 2000 <= errno < 3000:
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
