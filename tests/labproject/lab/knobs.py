"""Behaviour the tests switch on through the environment of the runner process."""

import os
import time


def row_sleep() -> None:
    seconds = float(os.environ.get("LAB_ROW_SLEEP", "0") or 0)
    if seconds:
        time.sleep(seconds)
