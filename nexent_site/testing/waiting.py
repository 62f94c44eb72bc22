"""Waiting in tests for something another thread or process does."""

import time
from collections.abc import Callable


def wait_for(condition: Callable[[], bool], timeout_s: float = 5) -> bool:
    """Whether `condition()` became true within `timeout_s` (checked every 10 ms)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
