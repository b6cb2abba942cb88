"""The one bounded poll: wait for a condition, never a bare sleep.

    wait_until(lambda: prometheus.alerts(), timeout=60, what="an alert")

Every wait in the simulator, the demo, the benchmarks and the tests goes through `wait_until`:
it polls at a fixed interval, returns the first truthy value, and after `timeout` raises a
TimeoutError that names what it waited for and quotes the last error seen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# What a condition may raise while the thing it watches is still starting: a refused
# connection, a half-written file, a service answering 503 (ServiceError is a RuntimeError).
RETRYABLE: tuple[type[BaseException], ...] = (OSError, ValueError, RuntimeError)


class StopWaiting(Exception):
    """Raised by a condition when waiting longer cannot help (e.g. the process died)."""


def wait_until(
    condition: Callable[[], T],
    *,
    timeout: float,
    what: str,
    interval: float = 0.25,
    retry_on: tuple[type[BaseException], ...] = RETRYABLE,
) -> T:
    """Poll `condition` until it returns something truthy and return that; fail after `timeout`.

    Exceptions of the `retry_on` types count as "not yet" (the last one is quoted in the
    failure, so a timeout explains itself); `StopWaiting` and anything else propagate at once.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = condition()
        except StopWaiting:
            raise
        except retry_on as error:
            last_error = error
        else:
            if result:
                return result
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}{detail}")
        time.sleep(interval)
