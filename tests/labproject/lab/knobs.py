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
