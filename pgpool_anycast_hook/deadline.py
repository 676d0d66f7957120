"""A hard deadline for the whole run, enforced by a thread rather than a signal.

pgpool freezes while failover_command and failback_command run and blocks the
signals the hook inherits, and it has no timeout of its own. A daemon thread that
wakes at the deadline, writes the log line and calls os._exit() cannot be blocked
by a signal mask and does not depend on the main thread reaching a check point.
"""

import os
import threading
from collections.abc import Callable

from pgpool_anycast_hook.errors import ExitCode


def arm_deadline(seconds: float, on_expiry: Callable[[], object]) -> threading.Timer:
    def expire() -> None:
        try:
            on_expiry()
        finally:
            os._exit(ExitCode.TEMPFAIL)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    return timer
