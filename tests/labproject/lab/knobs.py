"""Behaviour the tests switch on through the environment of the runner process."""

import os
import time


def row_sleep() -> None:
    seconds = float(os.environ.get("LAB_ROW_SLEEP", "0") or 0)
    if seconds:
        time.sleep(seconds)


def note_frozen_objects() -> None:
    """Say, once per process, how many objects the garbage collector leaves alone."""
    global _noted
    if os.environ.get("LAB_NOTE_FROZEN") and not _noted:
        import gc
        import sys

        _noted = True
        sys.stderr.write(f"objects frozen from the collector: {gc.get_freeze_count()}\n")


_noted = False


def code_error() -> None:
    """LAB_CODE_ERROR=1: the code is wrong for every row, the same way."""
    if os.environ.get("LAB_CODE_ERROR"):
        raise KeyError("price")


def pause_at(key: object) -> None:
    """LAB_PAUSE_AT=<key>[,<key>...]: on each of those rows, write the thread's name to
    LAB_PAUSE_MARK.<key> and wait until LAB_PAUSE_MARK.<key>.go exists (or a test kills
    the runner; at most two minutes)."""
    if str(key) not in os.environ.get("LAB_PAUSE_AT", "").split(","):
        return
    import threading
    from pathlib import Path

    mark = Path(f"{os.environ['LAB_PAUSE_MARK']}.{key}")
    mark.write_text(threading.current_thread().name)
    go = Path(f"{mark}.go")
    deadline = time.monotonic() + 120
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
