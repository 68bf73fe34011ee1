"""PostgreSQL's own log of every statement a server ran: what each cost, and which
statements made up each transaction (a batch's round trips). Read by bench/server_time.py
and by the test that keeps a batch's statement count from creeping up."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

__all__ = ["SETTINGS", "statement_times", "transactions"]

#: server settings under which every statement's duration is logged, with its database and
#: its backend's pid
SETTINGS = {"log_min_duration_statement": "0", "log_line_prefix": "%d %p "}
#: "run_3 4242 LOG:  duration: 0.081 ms  bind <unnamed>: SELECT ..." (SETTINGS' prefix)
_LINE = re.compile(r"^(\S+) (\d+) LOG:  duration: ([0-9.]+) ms  (?:statement|(?:parse|bind|"
                   r"execute) [^:]*): (.*)$")


def statement_times(log: Path, database: str) -> dict[str, list[float]]:
    """Milliseconds per statement (by its first 60 characters), phases summed in order."""
    times: dict[str, list[float]] = defaultdict(list)
    pending: dict[str, float] = defaultdict(float)
    for line in log.read_text(errors="replace").splitlines():
        found = _LINE.match(line)
        if not found or found[1] != database:
            continue
        text = " ".join(found[4].split())[:60]
        if " execute " in line or " statement: " in line:
            times[text].append(pending.pop(text, 0.0) + float(found[3]))
        else:  # parse and bind come before the execute they belong to
            pending[text] += float(found[3])
    return times


def transactions(log: Path, database: str, writing: str) -> list[list[str]]:
    """The statements of each transaction in ``database`` that updated the table
    ``writing``, BEGIN to COMMIT, in the order the server ran them: one round trip each."""
    open_tx: dict[str, list[str]] = defaultdict(list)
    found_tx: list[list[str]] = []
    for line in log.read_text(errors="replace").splitlines():
        found = _LINE.match(line)
        if not found or found[1] != database or not (" execute " in line
                                                     or " statement: " in line):
            continue
        pid, text = found[2], " ".join(found[4].split())
        if text == "BEGIN":
            open_tx[pid] = []
        open_tx[pid].append(text)
        if text in ("COMMIT", "ROLLBACK"):
            statements = open_tx.pop(pid)
            if any(s.startswith((f"UPDATE {writing} ", f'UPDATE "{writing}" '))
                   for s in statements):
                found_tx.append(statements)
    return found_tx
